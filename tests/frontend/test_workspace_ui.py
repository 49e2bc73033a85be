"""The workspace's Gradio callbacks, called as Gradio calls them (no browser, no worker).

Each test builds alice's (or charlie's) Blocks with `build_workspace` and drives the callbacks
wired to its buttons: submission creates her Job through `job_submit`, the gallery is hers
only, defaults, extensions and language are stored per member.
"""

from __future__ import annotations

import io

import gradio as gr
import pytest
from PIL import Image, PngImagePlugin

from frontend.member_selectors import generation_defaults_for_user, language_for_user
from frontend.preferences import Extension, ExtensionChoice
from frontend.workspace.ui import COMMON_FIELDS, TXT2IMG_FIELDS, Workspace, build_workspace
from inference.models import Job
from inference.services import job_claim, job_succeed

pytestmark = pytest.mark.django_db


def form(**overrides) -> dict:
    values = {
        "checkpoint": None, "vae": "Automatic", "prompt": "a lighthouse at dawn", "negative_prompt": "fog",
        "styles": [], "sampler_name": "Euler a", "scheduler": "Automatic", "steps": 8, "cfg_scale": 6.5,
        "width": 64, "height": 96, "seed": 1234, "n_iter": 1, "batch_size": 2, "tiling": False,
        "enable_hr": False, "hr_upscaler": "Latent", "hr_scale": 2, "hr_second_pass_steps": 0,
        "hr_denoising_strength": 0.7,
    }
    values.update(overrides)
    return values


def args(values: dict, extra: tuple | None = None) -> tuple:
    """The form as the callbacks receive it: txt2img's own fields, or img2img's `extra`."""
    own = tuple(values[name] for name in TXT2IMG_FIELDS) if extra is None else extra
    return (values["checkpoint"], values["vae"], *(values[name] for name in COMMON_FIELDS), *own)


def workspace_for(user) -> Workspace:
    return build_workspace(user).atelier_workspace


def finish(job: Job, color=(200, 40, 40)) -> Job:
    """Play the worker's part: claim the job and store one PNG per image, as a worker does."""
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
    assert job_succeed(job=claimed, attempt=1, outputs=keys, infotexts=infotexts, gpu_seconds=0.5)
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
    job = workspace.submit("txt2img", *args(form()))
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
    job = workspace.submit("txt2img", *args(form(enable_hr=True, hr_scale=2, hr_upscaler="Lanczos", tiling=True)))
    p = job.params
    assert (p["hr_width"], p["hr_height"], p["hr_upscaler"], p["tiling"]) == (128, 192, "Lanczos", True)
    assert p["denoising_strength"] == 0.7
    plain = workspace.submit("txt2img", *args(form()))
    assert (plain.params["hr_width"], plain.params["tiling"]) == (0, False)
    with pytest.raises(gr.Error, match="not installed"):
        next(workspace.generate_txt2img(*args(form(enable_hr=True, hr_upscaler="R-ESRGAN 4x+"))))


def test_generate_streams_progress_and_ends_with_the_images(personas, tiny_checkpoint_path) -> None:
    workspace = workspace_for(personas["alice"])
    stream = workspace.generate_txt2img(*args(form()))
    progress, _gallery, _refs, _info, job_id, _selected = next(stream)
    assert 'data-status="queued"' in progress and job_id.startswith("j_")
    finish(Job.objects.get(public_id=job_id))
    progress, gallery, refs, info, job_id_after, selected = list(stream)[-1]
    assert 'data-status="succeeded"' in progress and 'aria-valuenow="100"' in progress
    assert len(gallery) == 2 and all(isinstance(image, Image.Image) for image, _caption in gallery)
    assert refs == [(job_id, 0), (job_id, 1)] and "Seed: 1234" in info and job_id_after == "" and selected is None
    sent = workspace.send_to_img2img(None, refs)  # nothing picked: the first image goes
    assert isinstance(sent[0], Image.Image) and sent[9] == 1234


def test_errors_are_messages_not_tracebacks(personas, tiny_checkpoint_path) -> None:
    workspace = workspace_for(personas["alice"])
    with pytest.raises(gr.Error, match="unknown checkpoint"):
        next(workspace.generate_txt2img(*args(form(checkpoint="nope.safetensors"))))
    with pytest.raises(gr.Error, match="steps: must be at most"):
        next(workspace.generate_txt2img(*args(form(steps=100_000))))
    with pytest.raises(gr.Error, match="Upload an image"):
        next(workspace.generate_img2img(*args(form(), (0.6, 4, 1, False, None))))
    assert not Job.objects.exists()
    operator = workspace_for(personas["admin"])  # staff without a team: refused, with the reason
    with pytest.raises(gr.Error, match="not a member"):
        next(operator.generate_txt2img(*args(form())))


@pytest.mark.filterwarnings("ignore:Cancelled:UserWarning")  # gr.Warning outside a Gradio event
def test_cancel_stops_the_members_own_job_only(personas, tiny_checkpoint_path) -> None:
    alice, charlie = workspace_for(personas["alice"]), workspace_for(personas["charlie"])
    stream = alice.generate_txt2img(*args(form()))
    job_id = next(stream)[4]
    charlie.cancel(job_id)  # charlie cannot cancel alice's job, even with its id
    assert Job.objects.get(public_id=job_id).status == Job.Status.QUEUED
    assert 'data-status="cancelled"' in alice.cancel(job_id)
    assert Job.objects.get(public_id=job_id).status == Job.Status.CANCELLED
    assert 'data-status="cancelled"' in list(stream)[-1][0]


def test_img2img_with_a_painted_mask_submits_image_and_mask(personas, tiny_checkpoint_path) -> None:
    workspace = workspace_for(personas["alice"])
    background = Image.new("RGBA", (64, 96), (10, 120, 200, 255))
    layer = Image.new("RGBA", (64, 96), (0, 0, 0, 0))
    layer.paste((255, 255, 255, 255), (10, 10, 30, 30))
    editor = {"background": background, "layers": [layer], "composite": background}
    job = workspace.submit("img2img", *args(form(batch_size=1), (0.55, 4, 1, True, editor)))
    p = job.params
    assert job.kind == "img2img" and p["denoising_strength"] == 0.55 and p["inpaint_full_res"] is True
    assert len(p["init_images"]) == 1 and p["mask"] and p["init_images"][0].startswith("users/alice/inputs/")


def test_charlies_gallery_never_holds_alices_images(personas, tiny_checkpoint_path) -> None:
    alice, charlie = workspace_for(personas["alice"]), workspace_for(personas["charlie"])
    job = finish(alice.submit("txt2img", *args(form())))
    items, refs = alice.refresh_gallery()
    assert len(items) == 2 and refs == [[job.public_id, 0], [job.public_id, 1]]
    assert charlie.refresh_gallery() == ([], [])
    # Nor can charlie's workspace fetch it by sending alice's ids from a doctored browser.
    with pytest.raises(gr.Error, match="not in your gallery"):
        charlie.send_to_img2img([job.public_id, 0])
    # Picking an image in her gallery shows its parameters.
    selected, info = alice.select_image(refs, gr.SelectData(None, {"index": 1, "value": None, "selected": True}))
    assert selected == [job.public_id, 1] and "Seed: 1235" in info
    sent = alice.send_to_img2img([job.public_id, 1])
    assert isinstance(sent[0], Image.Image) and sent[1] == "a lighthouse at dawn" and sent[9] == 1235


def test_png_info_reads_the_parameters_and_sends_them_to_txt2img(personas, tmp_path) -> None:
    workspace = workspace_for(personas["alice"])
    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", "a red fox\nNegative prompt: blurry\nSteps: 12, Sampler: DPM++ 2M, CFG scale: 5, Seed: 7, Size: 64x128")
    path = tmp_path / "fox.png"
    Image.new("RGB", (64, 128)).save(path, pnginfo=meta)
    infotext, fields = workspace.read_pnginfo(str(path))
    assert infotext.startswith("a red fox") and fields["Steps"] == "12"
    sent = workspace.send_pnginfo_to_txt2img(fields)
    assert sent[:9] == ("a red fox", "blurry", "DPM++ 2M", "Automatic", 12, 5.0, 64, 128, 7)
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    assert workspace.read_pnginfo(str(tmp_path / "plain.png")) == ("This image has no generation parameters.", {})


def test_defaults_persist_per_member(personas, tiny_checkpoint_path) -> None:
    alice = workspace_for(personas["alice"])
    alice.save_defaults(*args(form(prompt="my usual", steps=33, sampler_name="DDIM", width=768)))
    assert generation_defaults_for_user(personas["alice"])["steps"] == 33
    reopened = workspace_for(personas["alice"])
    assert (reopened.txt2img["prompt"].value, reopened.txt2img["steps"].value) == ("my usual", 33)
    assert (reopened.txt2img["sampler_name"].value, reopened.txt2img["width"].value) == ("DDIM", 768)
    assert workspace_for(personas["bob"]).txt2img["steps"].value == 20  # bob keeps the built-in defaults


def test_the_prompt_styles_extension_shows_its_panel_and_merges_styles_only_when_enabled(personas, tiny_checkpoint_path) -> None:
    assert Extension.objects.filter(name="prompt-styles", enabled_by_default=False).exists()  # the migration installed it
    alice = workspace_for(personas["alice"])
    assert alice.txt2img["styles"].visible is False
    job = alice.submit("txt2img", *args(form(styles=["Watercolor"])))
    assert job.params["prompt"] == "a lighthouse at dawn"  # off: ignored

    table, *pickers = alice.apply_extensions(["prompt-styles"])
    assert "✅" in table and all(picker.visible is True for picker in pickers)
    assert ExtensionChoice.objects.get(user=personas["alice"]).enabled is True
    assert workspace_for(personas["alice"]).txt2img["styles"].visible is True
    job = alice.submit("txt2img", *args(form(styles=["Watercolor"])))
    assert job.params["prompt"] == "watercolor painting of a lighthouse at dawn, soft edges, paper texture"
    assert job.params["negative_prompt"] == "fog, photo, 3d render"

    assert workspace_for(personas["bob"]).txt2img["styles"].visible is False  # bob's choice is his own
    alice.apply_extensions([])
    assert workspace_for(personas["alice"]).txt2img["styles"].visible is False


def test_language_switch_relabels_the_workspace_and_is_remembered(personas, tiny_checkpoint_path) -> None:
    alice = workspace_for(personas["alice"])
    updates = alice.set_language("ja")
    assert language_for_user(personas["alice"]) == "ja"
    labels = [update.get("label") or update.get("value") for update in updates[:-1]]
    assert "プロンプト" in labels and "生成" in labels and "ワークスペース" in updates[-1]
    reopened = workspace_for(personas["alice"])
    assert reopened.txt2img["prompt"].label == "プロンプト" and reopened.txt2img["generate"].value == "生成"
    assert workspace_for(personas["charlie"]).txt2img["prompt"].label == "Prompt"
    with pytest.raises(gr.Error):
        alice.set_language("xx")


def test_the_network_browser_lists_the_members_own_and_shared_models_only(personas, tiny_checkpoint_path) -> None:
    from django.conf import settings

    from tenants.workdirs import tenant_model_dir, user_model_dir

    files = [user_model_dir("alice", "Lora") / "alice-style.safetensors",
             tenant_model_dir("studio-a", "embeddings") / "team-neg.safetensors",
             settings.ATELIER_PUBLIC_MODEL_DIRS["Lora"] / "public-detail.safetensors"]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not loaded here, only listed")
    try:
        alice, charlie = workspace_for(personas["alice"]), workspace_for(personas["charlie"])
        inserts = [insert for _label, insert in alice.network_choices()]
        assert {"<lora:alice-style:1>", "team-neg", "<lora:public-detail:1>"} <= set(inserts)
        assert "<lora:alice-style:1>" not in [insert for _label, insert in charlie.network_choices()]
        assert "team-neg" not in [insert for _label, insert in charlie.network_choices()]
    finally:
        for path in files:
            path.unlink()
    assert alice.insert_network("a fox", "<lora:alice-style:1>") == "a fox, <lora:alice-style:1>"
    assert alice.insert_network("", "team-neg") == "team-neg"


def test_an_unexpected_failure_shows_a_plain_message_and_is_logged(personas, tiny_checkpoint_path, caplog) -> None:
    from django.core.files.storage import default_storage

    alice = workspace_for(personas["alice"])
    job = finish(alice.submit("txt2img", *args(form())))
    default_storage.delete(job.outputs[0])  # e.g. an operator cleaned up the disk
    items, refs = alice.refresh_gallery()
    assert refs == [[job.public_id, 1]]  # the gallery skips the missing file
    with pytest.raises(gr.Error) as raised:
        alice.send_to_img2img([job.public_id, 0])
    assert raised.value.message == "Something went wrong on our side; the operators have the details."
    assert "workspace callback failed" in caplog.text and "FileNotFoundError" in caplog.text


def test_a_running_job_shows_the_workers_live_preview(personas, tiny_checkpoint_path) -> None:
    import base64

    from django.utils import timezone

    from inference.models import Worker
    from inference.services import job_progress

    workspace = workspace_for(personas["alice"])
    stream = workspace.generate_txt2img(*args(form()))
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
