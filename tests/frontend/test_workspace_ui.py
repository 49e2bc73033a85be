"""The workspace's Gradio callbacks, called as Gradio calls them (no browser, no worker).

Each test builds alice's (or charlie's) Blocks with `build_workspace` and drives the callbacks
wired to its buttons: submission creates her Job through `job_submit`, the gallery is hers
only, defaults, extensions and language are stored per member. ControlNet units go to the Job
as the APIs' `alwayson_scripts.controlnet.args`, with models from the member's own folders.
"""

from __future__ import annotations

from tests.safetensors_files import write_placeholder_model
import io

import gradio as gr
import pytest
from django.conf import settings
from PIL import Image, PngImagePlugin

from frontend.member_selectors import generation_defaults_for_user, language_for_user
from frontend.preferences import Extension, ExtensionChoice
from frontend.workspace.controlnet import UNIT_COUNT, UNIT_FIELDS
from frontend.workspace.tabs.generation import COMMON_FIELDS
from frontend.workspace.tabs.txt2img import TXT2IMG_FIELDS
from frontend.workspace.ui import Workspace, build_workspace
from inference.jobspec import JobSpec
from inference.models import Job
from inference.transitions import job_claim, job_succeed

pytestmark = pytest.mark.django_db


def form(**overrides) -> dict:
    values = {
        "checkpoint": None, "vae": "Automatic", "prompt": "a lighthouse at dawn", "negative_prompt": "fog",
        "styles": [], "sampler_name": "Euler a", "scheduler": "Automatic", "steps": 8, "cfg_scale": 6.5,
        "width": 64, "height": 96, "seed": 1234, "n_iter": 1, "batch_size": 2, "tiling": False, "restore_faces": False,
        "enable_hr": False, "hr_upscaler": "Latent", "hr_scale": 2, "hr_second_pass_steps": 0,
        "hr_denoising_strength": 0.7,
    }
    values.update(overrides)
    return values


def unit(**overrides) -> dict:
    """One ControlNet unit's panel values (the panel's defaults: off, no image, no model)."""
    values = {
        "enabled": False, "image": None, "module": "none", "model": None, "weight": 1.0, "guidance_start": 0.0,
        "guidance_end": 1.0, "control_mode": 0, "resize_mode": 1, "pixel_perfect": False, "processor_res": 512,
        "threshold_a": 100, "threshold_b": 200,
    }
    values.update(overrides)
    return values


def args(values: dict, extra: tuple | None = None, units: list[dict] | None = ()) -> tuple:
    """The form as the callbacks receive it: txt2img's own fields, or img2img's `extra`, then the
    ControlNet units (`units` first, the rest off; None: no unit values, as "save defaults" gets)."""
    own = tuple(values[name] for name in TXT2IMG_FIELDS) if extra is None else extra
    form_values = (values["checkpoint"], values["vae"], *(values[name] for name in COMMON_FIELDS), *own)
    if units is None:
        return form_values
    units = [*units, *(unit() for _ in range(UNIT_COUNT - len(units)))]
    return (*form_values, *(u[name] for u in units for name in UNIT_FIELDS))


def workspace_for(user) -> Workspace:
    return build_workspace(user).atelier_workspace


def finish(job: Job, color=(200, 40, 40), control_maps: int = 0) -> Job:
    """Play the worker's part: claim the job and store one PNG per image (and `control_maps`
    ControlNet detect maps), as a worker does."""
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from inference.models import Worker
    from django.utils import timezone

    worker, _ = Worker.objects.get_or_create(name="w@test", defaults={"queue": "q.test", "last_heartbeat": timezone.now()})
    Job.objects.filter(pk=job.pk).update(status=Job.Status.DISPATCHED, worker=worker, attempts=1)
    claimed = job_claim(public_id=job.public_id, attempt=1, worker_name=worker.name, total_steps=job.total_steps)
    keys, infotexts = [], []
    for index in range(job.params["batch_size"] * job.params["n_iter"]):
        info = f"{job.params['prompt']}\nSteps: {job.params['steps']}, Seed: {job.seeds[index]}, Size: 64x96"
        meta = PngImagePlugin.PngInfo()
        meta.add_text("parameters", info)
        buffer = io.BytesIO()
        Image.new("RGB", (64, 96), color).save(buffer, format="PNG", pnginfo=meta)
        keys.append(default_storage.save(f"users/{job.owner.username}/outputs/{job.public_id}-{index}.png",
                                         ContentFile(buffer.getvalue())))
        infotexts.append(info)
    maps = []
    for index in range(control_maps):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 96), "white").save(buffer, format="PNG")
        maps.append(default_storage.save(f"users/{job.owner.username}/outputs/{job.public_id}-map-{index}.png",
                                         ContentFile(buffer.getvalue())))
    assert job_succeed(job=claimed, attempt=1, outputs=keys, infotexts=infotexts, gpu_seconds=0.5, control_maps=maps)
    job.refresh_from_db()
    return job


def test_the_blocks_build_for_a_member(personas, tiny_checkpoint_path) -> None:
    demo = build_workspace(personas["alice"])
    assert isinstance(demo, gr.Blocks)
    workspace = demo.atelier_workspace
    assert workspace.checkpoint.value.startswith("atelier-tiny.safetensors [")
    labels = {tab.label for tab in demo.blocks.values() if isinstance(tab, gr.Tab)}
    assert {"txt2img", "img2img", "Gallery", "PNG Info", "Extensions", "Settings"} <= labels


def test_submit_creates_alices_job_with_the_form_parameters(personas, tiny_checkpoint_path) -> None:
    workspace = workspace_for(personas["alice"])
    job = workspace.txt2img.submit(*args(form()))
    job.refresh_from_db()
    assert job.owner == personas["alice"] and job.status == Job.Status.QUEUED and job.kind == "txt2img"
    p = job.params
    assert (p["prompt"], p["negative_prompt"], p["steps"], p["cfg_scale"]) == ("a lighthouse at dawn", "fog", 8, 6.5)
    assert (p["width"], p["height"], p["seed"], p["batch_size"], p["sampler_name"]) == (64, 96, 1234, 2, "Euler a")
    assert job.checkpoint_title.startswith("atelier-tiny.safetensors")
    assert job.seeds == [1234, 1235]


def test_hires_fix_and_tiling_reach_the_job(personas, tiny_checkpoint_path) -> None:
    workspace = workspace_for(personas["alice"])
    assert workspace.hires_upscaler_choices()[:2] == ["Latent", "Latent (antialiased)"]
    job = workspace.txt2img.submit(*args(form(enable_hr=True, hr_scale=2, hr_upscaler="Lanczos", tiling=True)))
    p = job.params
    assert (p["hr_width"], p["hr_height"], p["hr_upscaler"], p["tiling"]) == (128, 192, "Lanczos", True)
    assert p["denoising_strength"] == 0.7
    plain = workspace.txt2img.submit(*args(form()))
    assert (plain.params["hr_width"], plain.params["tiling"]) == (0, False)
    with pytest.raises(gr.Error, match="not installed"):
        list(workspace.txt2img.generate_txt2img(*args(form(enable_hr=True, hr_upscaler="R-ESRGAN 4x+"))))


def test_generate_streams_progress_and_ends_with_the_images(personas, tiny_checkpoint_path) -> None:
    workspace = workspace_for(personas["alice"])
    stream = workspace.txt2img.generate_txt2img(*args(form()))
    progress, _gallery, _refs, _info, job_id, _selected = next(stream)
    assert 'data-status="queued"' in progress and job_id.startswith("j_")
    finish(Job.objects.get(public_id=job_id))
    progress, gallery, refs, info, job_id_after, selected = list(stream)[-1]
    assert 'data-status="succeeded"' in progress and 'aria-valuenow="100"' in progress
    assert len(gallery) == 2 and all(isinstance(image, Image.Image) for image, _caption in gallery)
    assert refs == [(job_id, 0), (job_id, 1)] and "Seed: 1234" in info and job_id_after == "" and selected is None
    sent = workspace.gallery.send_to_img2img(None, refs)  # nothing picked: the first image goes
    assert isinstance(sent[0], Image.Image) and sent[9] == 1234


def test_errors_are_messages_not_tracebacks(personas, tiny_checkpoint_path) -> None:
    workspace = workspace_for(personas["alice"])
    with pytest.raises(gr.Error, match="unknown checkpoint"):
        list(workspace.txt2img.generate_txt2img(*args(form(checkpoint="nope.safetensors"))))
    with pytest.raises(gr.Error, match="steps: must be at most"):
        list(workspace.txt2img.generate_txt2img(*args(form(steps=100_000))))
    with pytest.raises(gr.Error, match="Upload an image"):
        list(workspace.img2img.generate_img2img(*args(form(), (0.6, 4, 1, False, None))))
    assert not Job.objects.exists()
    operator = workspace_for(personas["admin"])  # staff without a team: refused, with the reason
    with pytest.raises(gr.Error, match="not a member"):
        list(operator.txt2img.generate_txt2img(*args(form())))


@pytest.mark.filterwarnings("ignore:Cancelled:UserWarning")  # gr.Warning outside a Gradio event
def test_cancel_stops_the_members_own_job_only(personas, tiny_checkpoint_path) -> None:
    alice, charlie = workspace_for(personas["alice"]), workspace_for(personas["charlie"])
    stream = alice.txt2img.generate_txt2img(*args(form()))
    job_id = next(stream)[4]
    charlie.txt2img.cancel(job_id)  # charlie cannot cancel alice's job, even with its id
    assert Job.objects.get(public_id=job_id).status == Job.Status.QUEUED
    assert 'data-status="cancelled"' in alice.txt2img.cancel(job_id)
    assert Job.objects.get(public_id=job_id).status == Job.Status.CANCELLED
    assert 'data-status="cancelled"' in list(stream)[-1][0]


def test_img2img_with_a_painted_mask_submits_image_and_mask(personas, tiny_checkpoint_path) -> None:
    workspace = workspace_for(personas["alice"])
    background = Image.new("RGBA", (64, 96), (10, 120, 200, 255))
    layer = Image.new("RGBA", (64, 96), (0, 0, 0, 0))
    layer.paste((255, 255, 255, 255), (10, 10, 30, 30))
    editor = {"background": background, "layers": [layer], "composite": background}
    job = workspace.img2img.submit(*args(form(batch_size=1), (0.55, 4, 1, True, editor)))
    p = job.params
    assert job.kind == "img2img" and p["denoising_strength"] == 0.55 and p["inpaint_full_res"] is True
    assert len(p["init_images"]) == 1 and p["mask"] and p["init_images"][0].startswith("users/alice/inputs/")


def test_charlies_gallery_never_holds_alices_images(personas, tiny_checkpoint_path) -> None:
    alice, charlie = workspace_for(personas["alice"]), workspace_for(personas["charlie"])
    job = finish(alice.txt2img.submit(*args(form())))
    items, refs = alice.gallery.refresh_gallery()
    assert len(items) == 2 and refs == [[job.public_id, 0], [job.public_id, 1]]
    assert charlie.gallery.refresh_gallery() == ([], [])
    # Nor can charlie's workspace fetch it by sending alice's ids from a doctored browser.
    with pytest.raises(gr.Error, match="not in your gallery"):
        charlie.gallery.send_to_img2img([job.public_id, 0])
    # Picking an image in her gallery shows its parameters.
    selected, info = alice.gallery.select_image(refs, gr.SelectData(None, {"index": 1, "value": None, "selected": True}))
    assert selected == [job.public_id, 1] and "Seed: 1235" in info
    sent = alice.gallery.send_to_img2img([job.public_id, 1])
    assert isinstance(sent[0], Image.Image) and sent[1] == "a lighthouse at dawn" and sent[9] == 1235


def test_png_info_reads_the_parameters_and_sends_them_to_txt2img(personas, tmp_path) -> None:
    workspace = workspace_for(personas["alice"])
    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", "a red fox\nNegative prompt: blurry\nSteps: 12, Sampler: DPM++ 2M, CFG scale: 5, Seed: 7, Size: 64x128")
    path = tmp_path / "fox.png"
    Image.new("RGB", (64, 128)).save(path, pnginfo=meta)
    infotext, fields = workspace.pnginfo.read_pnginfo(str(path))
    assert infotext.startswith("a red fox") and fields["Steps"] == "12"
    sent = workspace.pnginfo.send_pnginfo_to_txt2img(fields)
    assert sent[:9] == ("a red fox", "blurry", "DPM++ 2M", "Automatic", 12, 5.0, 64, 128, 7)
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    assert workspace.pnginfo.read_pnginfo(str(tmp_path / "plain.png")) == ("This image has no generation parameters.", {})


def test_defaults_persist_per_member(personas, tiny_checkpoint_path) -> None:
    alice = workspace_for(personas["alice"])
    alice.txt2img.save_defaults(*args(form(prompt="my usual", steps=33, sampler_name="DDIM", width=768, restore_faces=True),
                              units=None))
    assert generation_defaults_for_user(personas["alice"])["steps"] == 33
    reopened = workspace_for(personas["alice"])
    assert (reopened.txt2img["prompt"].value, reopened.txt2img["steps"].value) == ("my usual", 33)
    assert reopened.txt2img["restore_faces"].value is True and reopened.img2img["restore_faces"].value is True
    assert (reopened.txt2img["sampler_name"].value, reopened.txt2img["width"].value) == ("DDIM", 768)
    assert workspace_for(personas["bob"]).txt2img["steps"].value == 20  # bob keeps the built-in defaults


def test_each_page_load_shows_the_stored_settings_not_those_of_the_process_start(personas, tiny_checkpoint_path) -> None:
    """The Blocks are built once per process: what the member saves afterwards (defaults,
    language, face options; here or from another page) reaches the controls on the next load."""
    from frontend.member_services import language_set
    from inference.services import user_options_update

    alice = workspace_for(personas["alice"])
    assert alice.settings.language_radio.value == "en" and alice.txt2img["steps"].value == 20
    alice.txt2img.save_defaults(*args(form(prompt="my usual", steps=33, width=768), units=None))
    language_set(user=personas["alice"], language="ja")  # as the home page does
    user_options_update(user=personas["alice"], values={"face_restoration_model": "GFPGAN"})

    *_, header = loaded = alice.on_load()
    updates = dict(zip((id(component) for component, *_rest in alice.i18n), loaded[-len(alice.i18n) - 1:-1]))
    for component, value in ((alice.txt2img["prompt"], "my usual"), (alice.txt2img["steps"], 33),
                             (alice.img2img["width"], 768), (alice.settings.language_radio, "ja"),
                             (alice.settings.face_model, "GFPGAN"), (alice.vae, "Automatic")):
        assert updates[id(component)]["value"] == value
    assert updates[id(alice.txt2img["prompt"])]["label"] == "プロンプト" and "ワークスペース" in header
    # Choosing English again is a change the stored language sees (the radio showed "ja").
    alice.settings.set_language("en")
    assert language_for_user(personas["alice"]) == "en"
    updates = dict(zip((id(component) for component, *_rest in alice.i18n), alice.on_load()[-len(alice.i18n) - 1:-1]))
    assert updates[id(alice.settings.language_radio)]["value"] == "en"


def test_the_prompt_styles_extension_shows_its_panel_and_merges_styles_only_when_enabled(personas, tiny_checkpoint_path) -> None:
    assert Extension.objects.filter(name="prompt-styles", enabled_by_default=False).exists()  # the migration installed it
    alice = workspace_for(personas["alice"])
    assert alice.txt2img.styles_panel.row.visible is False
    job = alice.txt2img.submit(*args(form(styles=["Watercolor"])))
    assert job.params["prompt"] == "a lighthouse at dawn"  # off: ignored

    table, *pickers = alice.extensions.apply_extensions(["prompt-styles"])[:3]  # then the extensions' tabs
    assert "✅" in table and all(picker.visible is True for picker in pickers)
    assert ExtensionChoice.objects.get(user=personas["alice"], extension__name="prompt-styles").enabled is True
    assert workspace_for(personas["alice"]).txt2img.styles_panel.row.visible is True
    job = alice.txt2img.submit(*args(form(styles=["Watercolor"])))
    assert job.params["prompt"] == "watercolor painting of a lighthouse at dawn, soft edges, paper texture"
    assert job.params["negative_prompt"] == "fog, photo, 3d render"

    assert workspace_for(personas["bob"]).txt2img.styles_panel.row.visible is False  # bob's choice is his own
    alice.extensions.apply_extensions([])
    assert workspace_for(personas["alice"]).txt2img.styles_panel.row.visible is False


def test_language_switch_relabels_the_workspace_and_is_remembered(personas, tiny_checkpoint_path) -> None:
    alice = workspace_for(personas["alice"])
    updates = alice.settings.set_language("ja")
    assert language_for_user(personas["alice"]) == "ja"
    labels = [update.get("label") or update.get("value") for update in updates[:-1]]
    assert "プロンプト" in labels and "生成" in labels and "ワークスペース" in updates[-1]
    reopened = workspace_for(personas["alice"])
    assert reopened.txt2img["prompt"].label == "プロンプト" and reopened.txt2img["generate"].value == "生成"
    assert workspace_for(personas["charlie"]).txt2img["prompt"].label == "Prompt"
    with pytest.raises(gr.Error):
        alice.settings.set_language("xx")


def test_the_network_browser_lists_the_members_own_and_shared_models_only(personas, tiny_checkpoint_path) -> None:
    from django.conf import settings

    from tenants.workdirs import tenant_model_dir, user_model_dir

    files = [user_model_dir("alice", "Lora") / "alice-style.safetensors",
             tenant_model_dir("studio-a", "embeddings") / "team-neg.safetensors",
             settings.ATELIER_PUBLIC_MODEL_DIRS["Lora"] / "public-detail.safetensors"]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_placeholder_model(path, "not loaded here, only listed")
    try:
        alice, charlie = workspace_for(personas["alice"]), workspace_for(personas["charlie"])
        inserts = [insert for _label, insert in alice.network_choices()]
        assert {"<lora:alice-style:1>", "team-neg", "<lora:public-detail:1>"} <= set(inserts)
        assert "<lora:alice-style:1>" not in [insert for _label, insert in charlie.network_choices()]
        assert "team-neg" not in [insert for _label, insert in charlie.network_choices()]
    finally:
        for path in files:
            path.unlink()
    assert alice.txt2img.insert_network("a fox", "<lora:alice-style:1>") == "a fox, <lora:alice-style:1>"
    assert alice.txt2img.insert_network("", "team-neg") == "team-neg"


def test_an_unexpected_failure_shows_a_plain_message_and_is_logged(personas, tiny_checkpoint_path, caplog) -> None:
    from django.core.files.storage import default_storage

    alice = workspace_for(personas["alice"])
    job = finish(alice.txt2img.submit(*args(form())))
    default_storage.delete(job.outputs[0])  # e.g. an operator cleaned up the disk
    items, refs = alice.gallery.refresh_gallery()
    assert refs == [[job.public_id, 1]]  # the gallery skips the missing file
    with pytest.raises(gr.Error) as raised:
        alice.gallery.send_to_img2img([job.public_id, 0])
    assert raised.value.message == "Something went wrong on our side; the operators have the details."
    assert "workspace callback failed" in caplog.text and "FileNotFoundError" in caplog.text


def test_a_running_job_shows_the_workers_live_preview(personas, tiny_checkpoint_path) -> None:
    import base64

    from django.utils import timezone

    from inference.models import Worker
    from inference.transitions import job_progress

    workspace = workspace_for(personas["alice"])
    stream = workspace.txt2img.generate_txt2img(*args(form()))
    _progress, gallery, *_rest = next(stream)  # queued: nothing to show yet
    job = Job.objects.get(owner=personas["alice"])
    worker, _ = Worker.objects.get_or_create(name="w@test", defaults={"queue": "q.test", "last_heartbeat": timezone.now()})
    Job.objects.filter(pk=job.pk).update(status=Job.Status.DISPATCHED, worker=worker, attempts=1)
    job = job_claim(public_id=job.public_id, attempt=1, worker_name=worker.name, total_steps=8)
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(buffer, format="JPEG")
    assert job_progress(job=job, attempt=1, step=4, preview=base64.b64encode(buffer.getvalue()).decode())
    progress, gallery, refs, *_rest = next(stream)
    assert 'data-status="running"' in progress
    (preview, caption), = gallery
    assert preview.size == (32, 32) and caption == "preview"
    assert refs == gr.skip()  # a preview cannot be picked or sent anywhere
    stream.close()


# --- ControlNet and restore faces ---------------------------------------------------------------


def control_image(box=(16, 20, 47, 43)) -> Image.Image:
    from PIL import ImageDraw

    image = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(image).rectangle(box, fill="white")
    return image


@pytest.fixture
def controlnets(personas, tiny_checkpoint_path):
    """A tiny ControlNet of alice's own, one of her team's, and a public one (as the API tests)."""
    from django.conf import settings

    from runtime.tiny.controlnet import write_tiny_controlnet
    from tenants.workdirs import tenant_model_dir, user_model_dir

    public = settings.ATELIER_PUBLIC_MODEL_DIRS["ControlNet"] / "tiny-canny.safetensors"
    if not public.exists():
        write_tiny_controlnet(public, seed=0)
    own = write_tiny_controlnet(user_model_dir("alice", "ControlNet") / "alice-lines.safetensors", seed=5)
    team = tenant_model_dir("studio-a", "ControlNet") / "team-depth.safetensors"
    team.write_bytes(own.read_bytes())  # listed and resolvable; never loaded here
    yield {"own": own, "team": team, "public": public}
    own.unlink()
    team.unlink()


def test_the_controlnet_panel_has_three_closed_units_and_lists_the_members_models_only(personas, controlnets) -> None:
    alice, bob, charlie = (workspace_for(personas[name]) for name in ("alice", "bob", "charlie"))
    for c in (alice.txt2img, alice.img2img):
        assert len(c["controlnet"]) == 3
        assert c["controlnet"][0]["module"].choices[0][0] == "none"
        assert {"canny", "scribble", "lineart_standard"} <= {value for value, _ in c["controlnet"][0]["module"].choices}
    accordions = [b for b in alice.blocks.blocks.values() if isinstance(b, gr.Accordion) and b.label == "ControlNet"]
    assert len(accordions) == 2 and not any(a.open for a in accordions)
    tabs = {b.label for b in alice.blocks.blocks.values() if isinstance(b, gr.Tab)}
    assert {"ControlNet Unit 0", "ControlNet Unit 1", "ControlNet Unit 2"} <= tabs

    def names(workspace: Workspace) -> list[str]:
        return [choice.split(" [")[0] for choice in workspace.controlnet_model_choices()]

    assert names(alice) == ["alice-lines", "team-depth", "tiny-canny"]  # own, team, public
    assert names(bob) == ["team-depth", "tiny-canny"]
    assert names(charlie) == ["tiny-canny"]
    shown = [value for value, _ in alice.txt2img["controlnet"][1]["model"].choices]
    assert shown == alice.controlnet_model_choices() and all(len(v.split(" [")[1]) == 9 for v in shown)

    # A model added later appears on refresh (a unit's own button, or "Refresh models"); picks are kept.
    from tenants.workdirs import user_model_dir

    later = user_model_dir("charlie", "ControlNet") / "charlie-new.safetensors"
    later.write_bytes(controlnets["public"].read_bytes())
    try:
        public_pick = charlie.controlnet_model_choices()[0]
        refreshed = charlie.txt2img.refresh_controlnet_models(public_pick)
        assert refreshed.choices[0][0].startswith("charlie-new [") and refreshed.value == public_pick
        updates = charlie.refresh_model_lists(*[None] * 6)
        assert len(updates) == 4 + 6 and updates[-1].choices[0][0].startswith("charlie-new [")
        assert not any(v.startswith("alice-lines") for v, _ in updates[-1].choices)
    finally:
        later.unlink()


def test_an_enabled_unit_becomes_the_api_unit_and_reaches_alices_job(personas, controlnets) -> None:
    from frontend.workspace.jobs import request_body

    alice = workspace_for(personas["alice"])
    own_model = next(choice for choice in alice.controlnet_model_choices() if choice.startswith("alice-lines"))
    first = unit(image=control_image())  # present but off: not sent
    second = unit(enabled=True, image=control_image(), module="canny", model=own_model, weight=0.6,
                  guidance_start=0.1, guidance_end=0.8, control_mode=2, resize_mode=0, pixel_perfect=True,
                  processor_res=256, threshold_a=50, threshold_b=150)
    values, _editor = alice.txt2img._values(args(form(batch_size=1), units=[first, second]))
    (sent,) = request_body("txt2img", values)["alwayson_scripts"]["controlnet"]["args"]
    image = sent.pop("image")
    assert image.startswith("data:image/png;base64,")
    assert sent == {
        "enabled": True, "module": "canny", "model": own_model, "weight": 0.6, "guidance_start": 0.1,
        "guidance_end": 0.8, "control_mode": 2, "resize_mode": 0, "pixel_perfect": True, "processor_res": 256,
        "threshold_a": 50, "threshold_b": 150,
    }

    job = alice.txt2img.submit(*args(form(batch_size=1), units=[first, second]))
    (stored,) = job.params["controlnet_units"]
    (model,) = JobSpec.from_json(job.params).controlnet_models
    assert (stored["model"], model.key) == ("alice-lines", "users/alice/models/ControlNet/" + controlnets["own"].name)
    assert (stored["module"], stored["weight"], stored["guidance_start"], stored["guidance_end"]) == ("canny", 0.6, 0.1, 0.8)
    assert (stored["control_mode"], stored["resize_mode"], stored["threshold_a"], stored["threshold_b"]) == (2, 0, 50, 150)
    assert stored["field"] == "alwayson_scripts.controlnet.args[0]" and stored["image"].startswith("users/alice/inputs/")

    # A preprocessor without sliders sends the API's "-1: its defaults"; "none" no resolution either.
    values, _editor = alice.txt2img._values(args(form(), units=[unit(enabled=True, image=control_image(), model=own_model,
                                                             module="invert", threshold_a=3)]))
    (sent,) = request_body("txt2img", values)["alwayson_scripts"]["controlnet"]["args"]
    assert (sent["threshold_a"], sent["threshold_b"], sent["processor_res"]) == (-1, -1, 512)
    values, _editor = alice.txt2img._values(args(form(), units=[unit(enabled=True, image=control_image(), model=own_model)]))
    assert request_body("txt2img", values)["alwayson_scripts"]["controlnet"]["args"][0]["processor_res"] == -1


def test_disabled_units_send_nothing(personas, controlnets) -> None:
    from frontend.workspace.jobs import request_body

    alice = workspace_for(personas["alice"])
    model = alice.controlnet_model_choices()[0]
    off = [unit(image=control_image(), model=model, module="canny") for _ in range(UNIT_COUNT)]
    values, _editor = alice.txt2img._values(args(form(), units=off))
    assert "alwayson_scripts" not in request_body("txt2img", values)
    job = alice.txt2img.submit(*args(form(), units=off))
    assert job.params["controlnet_units"] == []


def test_a_unit_without_image_or_model_is_a_clear_error_and_img2img_falls_back_to_its_image(personas, controlnets) -> None:
    alice = workspace_for(personas["alice"])
    model = alice.controlnet_model_choices()[0]
    with pytest.raises(gr.Error) as raised:
        list(alice.txt2img.generate_txt2img(*args(form(), units=[unit(), unit(enabled=True, model=model)])))
    assert raised.value.message == (
        "ControlNet Unit 1 is enabled but has no control image: upload one, or turn the unit off."
    )
    with pytest.raises(gr.Error, match="ControlNet Unit 0 is enabled but has no model"):
        list(alice.txt2img.generate_txt2img(*args(form(), units=[unit(enabled=True, image=control_image())])))
    # A model gone since the list was shown: the API's refusal, naming the unit as the tabs do.
    gone = unit(enabled=True, image=control_image(), model="deleted-since [0123abcd]")
    with pytest.raises(gr.Error) as raised:
        list(alice.txt2img.generate_txt2img(*args(form(), units=[unit(), unit(), gone])))
    assert raised.value.message.startswith("ControlNet Unit 2.model: unknown ControlNet model 'deleted-since'")
    alice.settings.set_language("ja")
    with pytest.raises(gr.Error, match="ControlNet ユニット 0 が有効ですが、コントロール画像がありません"):
        list(alice.txt2img.generate_txt2img(*args(form(), units=[unit(enabled=True, model=model)])))
    assert not Job.objects.exists()

    # img2img: an enabled unit without an image uses the init image, as the extension does.
    editor = {"background": Image.new("RGBA", (64, 96), (10, 120, 200, 255)), "layers": [], "composite": None}
    job = alice.img2img.submit(*args(form(batch_size=1), (0.5, 4, 1, False, editor),
                                        units=[unit(enabled=True, model=model, module="canny")]))
    (stored,) = job.params["controlnet_units"]
    assert stored["image"] == job.params["init_images"][0] and stored["module"] == "canny"


def test_the_detect_maps_follow_the_images_of_the_members_own_job(personas, controlnets) -> None:
    alice, charlie = workspace_for(personas["alice"]), workspace_for(personas["charlie"])
    model = alice.controlnet_model_choices()[0]
    stream = alice.txt2img.generate_txt2img(*args(form(batch_size=1), units=[unit(enabled=True, image=control_image(),
                                                                          model=model, module="canny")]))
    job_id = next(stream)[4]
    job = finish(Job.objects.get(public_id=job_id), control_maps=1)
    _progress, gallery, refs, *_rest = list(stream)[-1]
    assert [caption for _image, caption in gallery] == ["seed 1234", "ControlNet detected map"]
    assert refs == [(job_id, 0)]  # the map is shown, not pickable (as the extension's)
    assert gallery[1][0].getpixel((0, 0)) == (255, 255, 255)
    from frontend.workspace.jobs import WorkspaceError

    with pytest.raises(WorkspaceError, match="This job is gone"):  # charlie cannot follow alice's job
        next(charlie.txt2img.follow(job))


def test_restore_faces_is_sent_and_a_missing_restorer_is_the_members_message(personas, tiny_checkpoint_path) -> None:
    from frontend.workspace.jobs import request_body

    alice = workspace_for(personas["alice"])
    assert alice.txt2img["restore_faces"].value is False and alice.img2img["restore_faces"].label == "Restore faces"
    values, _editor = alice.txt2img._values(args(form(restore_faces=True)))
    assert request_body("txt2img", values)["restore_faces"] is True
    assert request_body("txt2img", alice.txt2img._values(args(form()))[0])["restore_faces"] is False
    # With no face restorer installed, the refusal that says what to install is the member's message.
    with pytest.raises(gr.Error, match="face restoration is not installed: put codeformer-v0.1.0.pth"):
        list(alice.txt2img.generate_txt2img(*args(form(restore_faces=True))))
    assert not Job.objects.exists()

    # With one in her own folder, her job runs with it.
    from runtime.faces.detection import write_tiny_face_detector
    from runtime.faces.gfpgan import write_tiny_gfpgan

    folder = settings.DATA_DIR / "users" / "alice" / "models" / "GFPGAN"
    written = [write_tiny_gfpgan(folder / "GFPGANv1.4.pth"), write_tiny_face_detector(folder / "detection_Resnet50_Final.pth")]
    try:
        next(alice.txt2img.generate_txt2img(*args(form(restore_faces=True))))
        job = Job.objects.get()
        assert job.params["restore_faces"] is True and JobSpec.from_json(job.params).face_restorer.name == "GFPGAN"
    finally:
        for path in written:
            path.unlink()


def test_every_string_has_both_languages_and_the_controlnet_panel_relabels(personas, tiny_checkpoint_path) -> None:
    from frontend.workspace.i18n import LANGUAGES, STRINGS

    assert [key for key, entry in STRINGS.items() if set(entry) != set(LANGUAGES) or not all(entry.values())] == []
    alice = workspace_for(personas["alice"])
    updates = alice.settings.set_language("ja")
    labels = [update.get("label") for update in updates[:-1]]
    assert {"ControlNet ユニット 2", "コントロールの重み", "プリプロセッサ", "顔の修復"} <= set(labels)
    modes = next(u for u in updates[:-1] if u.get("label") == "コントロールモード")
    assert modes["choices"] == [("バランス", 0), ("プロンプトを優先", 1), ("ControlNet を優先", 2)]
    reopened = workspace_for(personas["alice"])
    assert reopened.txt2img["controlnet"][0]["weight"].label == "コントロールの重み"
    assert [label for label, _value in reopened.img2img["controlnet"][0]["resize_mode"].choices][1] == "切り抜いてリサイズ"


def test_the_preprocessor_picks_its_sliders_and_an_upload_enables_the_unit(personas, tiny_checkpoint_path) -> None:
    alice = workspace_for(personas["alice"])
    resolution, low, high = alice.txt2img.controlnet_module_changed("canny")
    assert resolution.visible is True and (low.label, low.value, low.maximum) == ("Canny Low Threshold", 100, 255)
    assert (high.label, high.value, high.visible) == ("Canny High Threshold", 200, True)
    resolution, sigma, second = alice.txt2img.controlnet_module_changed("blur_gaussian")
    assert (sigma.label, sigma.value, sigma.step) == ("Sigma", 9, 0.01) and second.visible is False
    resolution, first, second = alice.txt2img.controlnet_module_changed("none")
    assert (resolution.visible, first.visible, second.visible) == (False, False, False)
    assert alice.txt2img.controlnet_image_uploaded() is True


def test_face_restoration_settings_are_the_members_own_options(personas, tiny_checkpoint_path) -> None:
    from inference.selectors import user_options_get

    bob = workspace_for(personas["bob"])
    assert bob.settings.face_model.value == "CodeFormer" and bob.settings.code_former_weight.value == 0.5  # A1111's defaults
    bob.settings.save_face_settings("GFPGAN", 0.7)
    assert {k: user_options_get(personas["bob"])[k] for k in ("face_restoration_model", "code_former_weight")} == {
        "face_restoration_model": "GFPGAN", "code_former_weight": 0.7,
    }
    assert user_options_get(personas["alice"])["face_restoration_model"] == "CodeFormer"  # not alice's
    reopened = workspace_for(personas["bob"])
    assert reopened.settings.face_model.value == "GFPGAN" and reopened.settings.code_former_weight.value == 0.7
    with pytest.raises(gr.Error, match="code_former_weight"):
        bob.settings.save_face_settings("GFPGAN", 1.5)
    assert {"顔の修復モデル", "顔の修復設定を保存"} <= {u.get("label") or u.get("value") for u in bob.settings.set_language("ja")[:-1]}


def test_a_reloaded_page_reattaches_to_the_members_own_running_job_only(personas, tiny_checkpoint_path) -> None:
    """A reload (a fresh page load: `reattach`) follows the member's running job of the tab's kind
    read from the Job rows, and Cancel stops it without the page knowing its id; bob, alice's
    teammate (she is the team's admin), never reattaches to or cancels hers, nor she his."""
    alice, bob = workspace_for(personas["alice"]), workspace_for(personas["bob"])
    bobs = bob.txt2img.submit(*args(form(prompt="bob's own")))
    job = alice.txt2img.submit(*args(form()))
    first = next(workspace_for(personas["alice"]).txt2img.reattach())  # the page reloaded
    assert first[4] == job.public_id and f'data-job="{job.public_id}"' in first[0] and 'data-status="queued"' in first[0]
    assert next(bob.txt2img.reattach())[4] == bobs.public_id
    assert next(alice.img2img.reattach())[0] == '<div class="atelier-progress" data-status="idle"></div>'
    charlie = workspace_for(personas["charlie"])  # another team: nothing to reattach to, nothing to cancel
    assert next(charlie.txt2img.reattach())[4] == "" and "data-job" not in str(charlie.txt2img.cancel(""))
    # Cancel with no job id on the page (it was lost with the reload): alice's own running job.
    assert f'data-job="{job.public_id}"' in alice.txt2img.cancel("")
    assert Job.objects.get(public_id=job.public_id).status == Job.Status.CANCELLED
    assert Job.objects.get(public_id=bobs.public_id).status == Job.Status.QUEUED
    # The cancelled job is the tab's last result after a reload: its bar, no image of an earlier job.
    progress, items, refs, info, job_id, _selected = next(workspace_for(personas["alice"]).txt2img.reattach())
    assert 'data-status="cancelled"' in progress and (items, refs, info, job_id) == ([], [], "", "")


def test_a_reloaded_page_shows_the_last_finished_result_of_each_tab(personas, tiny_checkpoint_path) -> None:
    alice = workspace_for(personas["alice"])
    done = finish(alice.txt2img.submit(*args(form())))
    progress, items, refs, info, job_id, _selected = next(workspace_for(personas["alice"]).txt2img.reattach())
    assert 'data-status="succeeded"' in progress and len(items) == 2 and job_id == ""
    assert refs == [(done.public_id, 0), (done.public_id, 1)] and "Seed: 1234" in info
    # A job then refused at submission replaces the bar with its reason, not the earlier "Done".
    stream = alice.txt2img.generate_txt2img(*args(form(), units=[unit(enabled=True)]))
    refused = next(stream)
    assert 'data-status="error"' in refused[0] and done.public_id not in refused[0] and refused[4] == ""
    with pytest.raises(gr.Error, match="ControlNet"):
        next(stream)


def test_every_function_gradio_calls_is_a_workspace_callback(personas) -> None:
    """Each function wired to the Blocks goes through `callback` (refusals, error toasts, and the
    database connection handed back after each call; see the next test)."""
    alice = workspace_for(personas["alice"])
    functions = [block_fn.fn for block_fn in alice.blocks.fns.values() if block_fn.fn is not None]
    assert functions
    assert [fn for fn in functions if not getattr(fn, "atelier_callback", False)] == []


@pytest.mark.django_db(transaction=True)
def test_a_callback_and_each_step_of_a_generator_hand_their_connection_back(personas) -> None:
    """Gradio runs a callback, and each step of a generator callback, on any of its long-lived
    threads. A connection left with an idle thread is a PostgreSQL pool checkout nobody else can
    use: a busy workspace once ran its pool dry and its page load waited for a connection. Each
    step below runs on a thread of its own, as Gradio may run it, and leaves it holding none."""
    from concurrent.futures import ThreadPoolExecutor

    from django.contrib.auth import get_user_model
    from django.db import connection

    from frontend.workspace.tabs.base import callback

    members = get_user_model().objects

    @callback
    def count() -> int:
        return members.count()

    @callback
    def counts():
        for _ in range(3):
            yield members.count()

    def on_a_thread_of_its_own(step):
        def run():
            value = step()
            return value, connection.connection  # this thread's connection, after the step
        with ThreadPoolExecutor(1) as thread:
            return thread.submit(run).result()

    assert on_a_thread_of_its_own(count) == (members.count(), None)
    steps = counts()
    for _ in range(3):
        assert on_a_thread_of_its_own(lambda: next(steps)) == (members.count(), None)
    assert on_a_thread_of_its_own(lambda: next(steps, "done")) == ("done", None)
