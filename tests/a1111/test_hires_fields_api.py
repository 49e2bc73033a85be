"""A1111 1.10's hires-fix second-pass fields (`hr_prompt`, `hr_negative_prompt`, `hr_sampler_name`,
`hr_scheduler`, `hr_checkpoint_name`) and `disable_extra_networks` through `/sdapi/v1`: the 422s naming
the field, styles merged into the hires prompts, batch keys, the pair of checkpoints as the job's model
key, and jobs run in-process on the tiny models (as a worker runs them) with A1111's infotext."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference.models import Job, Worker
from inference.sdapi.generate import _notes, parse_generation_body, styles_for_body, submit_generation
from inference.storage import member_file_read
from tenants.services import prompt_style_save
from tenants.workdirs import user_model_dir
from tests.security.conftest import run_on_a_worker

TINY = {"override_settings": {"sd_model_checkpoint": "atelier-tiny"}}  # not alice's own other checkpoints
HIRES = {"prompt": "a red cat", "width": 64, "height": 64, "steps": 2, "seed": 9, "sampler_name": "Euler",
         "enable_hr": True, "hr_scale": 1.5, "denoising_strength": 0.75, **TINY}


@pytest.fixture(scope="session")
def model_files(tmp_path_factory) -> list[tuple[str, Path]]:
    """A second tiny SD 1.x checkpoint, a tiny SDXL and two LoRAs, written once: (folder kind, file)."""
    from runtime.tiny.families import write_tiny_sdxl_checkpoint
    from runtime.tiny.lora import write_tiny_lora
    from runtime.tiny.model import write_tiny_checkpoint

    folder = tmp_path_factory.mktemp("hires-models")
    return [
        ("Stable-diffusion", write_tiny_checkpoint(folder / "tiny-other.safetensors", seed=7)),
        ("Stable-diffusion", write_tiny_sdxl_checkpoint(folder / "tiny-xl.safetensors")),
        ("Lora", write_tiny_lora(folder / "ink.safetensors", seed=3)),
        ("Lora", write_tiny_lora(folder / "wash.safetensors", seed=4)),
    ]


@pytest.fixture
def alice_models(personas, tiny_checkpoint_path, model_files):
    """`model_files` in alice's own folders (removed afterwards)."""
    copies = []
    for kind, path in model_files:
        folder = user_model_dir("alice", kind)
        folder.mkdir(parents=True, exist_ok=True)
        copies.append(Path(shutil.copy(path, folder / path.name)))
    yield copies
    for path in copies:
        path.unlink(missing_ok=True)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field", "needle"),
    [
        ({"hr_sampler_name": "Warp drive"}, "hr_sampler_name", "unknown sampler 'Warp drive'"),
        ({"hr_scheduler": "sometimes"}, "hr_scheduler", "unknown scheduler 'sometimes'"),
        ({"hr_sampler_name": 3}, "hr_sampler_name", "must be a string"),
        ({"hr_prompt": ["a"]}, "hr_prompt", "must be a string"),
        ({"hr_checkpoint_name": "no-such-model"}, "hr_checkpoint_name", "unknown checkpoint 'no-such-model'"),
        ({"hr_checkpoint_name": "tiny-xl"}, "hr_checkpoint_name", "same family"),
        ({"prompt": "a cat <lora:ink:1>", "hr_prompt": "a dog <lora:wash:1>"}, "hr_prompt", "first pass's LoRAs"),
        ({"prompt": "a cat <lora:ink:1>", "hr_prompt": "a dog <lora:ink:0.5>"}, "hr_prompt", "first pass's LoRAs"),
        ({"prompt": "a cat <lora:ink:1>", "hr_prompt": "a dog"}, "hr_prompt", "repeat the prompt's"),
        ({"prompt": "a cat", "hr_negative_prompt": "ugly <lora:ink:1>"}, "hr_negative_prompt", "first pass's LoRAs"),
        ({"hr_prompt": "a dog <lora:ink:x>"}, "hr_prompt", "ink"),
    ],
)
def test_bad_hires_fields_are_422s_naming_the_field(api, alice_models, body, field, needle) -> None:
    response = api("alice").post("/sdapi/v1/txt2img", {**HIRES, **body})
    assert response.status_code == 422, response.content
    detail = response.json()["detail"]
    assert f"{field}:" in detail and needle in detail, detail
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_same_as_the_first_pass_and_the_batch_keys(personas, alice_models) -> None:
    same = {"hr_sampler_name": "Use same sampler", "hr_scheduler": "Use same scheduler",
            "hr_checkpoint_name": "Use same checkpoint", "hr_prompt": "", "hr_negative_prompt": ""}
    generation, _ = parse_generation_body({**HIRES, **same}, "txt2img")
    assert (generation.hr_sampler_name, generation.hr_scheduler, generation.hr_checkpoint_name) == (None, None, None)
    assert _notes({**HIRES, **same}, generation) == []  # nothing "not applied"
    # a legacy "<sampler> <schedule>" name names both; off without enable_hr (but still checked)
    legacy, _ = parse_generation_body({**HIRES, "hr_sampler_name": "DPM++ 2M Karras"}, "txt2img")
    assert (legacy.hr_sampler_name, legacy.hires_sampler.effective_schedule_label) == ("DPM++ 2M", "Karras")
    off, _ = parse_generation_body({**HIRES, "enable_hr": False, "hr_prompt": "x", "hr_sampler_name": "DDIM"}, "txt2img")
    assert (off.hr_prompt, off.hr_sampler_name) == ("", None)

    def job(**fields) -> Job:
        return submit_generation(personas["alice"], parse_generation_body({**HIRES, **fields}, "txt2img")[0], None)

    plain, prompted, sampled = job(), job(hr_prompt="a dog", seed=10), job(hr_sampler_name="DDIM")
    explicit_same = job(hr_sampler_name="Euler", hr_scheduler="Automatic")
    assert plain.batch_key == prompted.batch_key == explicit_same.batch_key  # hires prompts are per row
    assert sampled.batch_key != plain.batch_key  # one scheduler per pipeline call
    other = job(hr_checkpoint_name="tiny-other")
    assert other.model_key == f"{plain.checkpoint_sha256}+{other.params['models']['hires_checkpoint']['sha256']}"
    assert other.batch_key != plain.batch_key and other.params["hr_checkpoint_name"].startswith("tiny-other [")
    # naming the first pass's own checkpoint needs no second model
    assert job(hr_checkpoint_name=plain.checkpoint_title).model_key == plain.model_key


@pytest.mark.django_db
def test_styles_are_merged_into_the_hires_prompts(personas, tiny_checkpoint_path) -> None:
    prompt_style_save(user=personas["alice"], name="Ink", prompt="{prompt}, ink wash", negative_prompt="blur")
    body = {**HIRES, "styles": ["Ink"], "hr_prompt": "a dog", "hr_negative_prompt": "noise"}
    generation, _ = parse_generation_body(body, "txt2img", styles_for_body(personas["alice"], body))
    assert (generation.prompt, generation.hr_prompt) == ("a red cat, ink wash", "a dog, ink wash")
    assert generation.hr_negative_prompt == "noise, blur"
    # an empty hires prompt stays empty: it is the (styled) prompt
    body = {**HIRES, "styles": ["Ink"]}
    generation, _ = parse_generation_body(body, "txt2img", styles_for_body(personas["alice"], body))
    assert (generation.hr_prompt, generation.hires_prompt) == ("", "a red cat, ink wash")


def pixels(job: Job, index: int = 0) -> np.ndarray:
    from io import BytesIO

    return np.asarray(Image.open(BytesIO(member_file_read(job.outputs[index]))), dtype=np.int16)


@pytest.mark.django_db(transaction=True)
def test_hires_jobs_run_with_their_own_prompt_sampler_and_checkpoint(personas, alice_models, one_torch_thread) -> None:
    """A batch of two jobs with different hires prompts, then a job on a hires checkpoint of its own:
    the infotext names what differs from the first pass, the worker holds the pair."""
    from django.conf import settings

    from runtime.engine import WorkerRuntime

    alice = personas["alice"]

    def job(**fields) -> Job:
        return submit_generation(alice, parse_generation_body({**HIRES, **fields}, "txt2img")[0], None)

    runtime = WorkerRuntime(device="cpu", cache_size=2, config_cache_dir=settings.ATELIER_MODEL_CACHE_DIR)
    own = job(hr_prompt="a blue dog, sitting", hr_negative_prompt="blurry", hr_sampler_name="DPM++ 2M")
    same_batch = job(seed=9, hr_sampler_name="DPM++ 2M")
    assert own.batch_key == same_batch.batch_key
    run_on_a_worker([own, same_batch], name="hires-fields", runtime=runtime)
    assert own.status == same_batch.status == "succeeded", (own.error, same_batch.error)
    text = own.infotexts[0]
    assert 'Hires sampler: DPM++ 2M, Hires prompt: "a blue dog, sitting", Hires negative prompt: blurry, ' \
        "Hires schedule type: Karras" in text, text
    assert "Hires prompt" not in same_batch.infotexts[0] and "Hires sampler: DPM++ 2M" in same_batch.infotexts[0]
    assert not np.array_equal(pixels(own), pixels(same_batch))  # same seed: only the hires prompts differ

    switched = job(hr_checkpoint_name="tiny-other")
    run_on_a_worker([switched], name="hires-checkpoint", runtime=runtime)
    assert switched.status == "succeeded", switched.error
    hires_sha = switched.params["models"]["hires_checkpoint"]["sha256"]
    assert f"Hires checkpoint: tiny-other [{hires_sha[:10]}]" in switched.infotexts[0]
    assert switched.model_key in Worker.objects.get(name="w@hires-checkpoint").loaded_models  # the pair, for affinity
    assert np.abs(pixels(switched) - pixels(same_batch)).max() > 10


@pytest.mark.django_db(transaction=True)
def test_disable_extra_networks_strips_the_tags_without_applying_them(personas, alice_models, one_torch_thread) -> None:
    alice = personas["alice"]
    tiny = {"width": 64, "height": 64, "steps": 2, "seed": 5, **TINY}
    tagged = submit_generation(alice, parse_generation_body(
        {**tiny, "prompt": "a boat <lora:ink:1>", "disable_extra_networks": True}, "txt2img")[0], None)
    applied = submit_generation(alice, parse_generation_body({**tiny, "prompt": "a boat <lora:ink:1>"}, "txt2img")[0], None)
    plain = submit_generation(alice, parse_generation_body({**tiny, "prompt": "a boat"}, "txt2img")[0], None)
    assert tagged.network_key == plain.network_key == "" != applied.network_key
    assert tagged.params["models"]["networks"] == [] and tagged.params["disable_extra_networks"] is True
    # img2img takes it too; a different LoRA in hr_prompt is fine when none is applied
    img2img, _ = parse_generation_body(
        {**tiny, "prompt": "<lora:ink:1>", "disable_extra_networks": True, "init_images": [_png()]}, "img2img"
    )
    assert img2img.disable_extra_networks
    off_hires = submit_generation(alice, parse_generation_body(
        {**HIRES, "prompt": "a <lora:ink:1>", "hr_prompt": "b <lora:wash:1>", "disable_extra_networks": True}, "txt2img"
    )[0], None)
    assert off_hires.network_key == ""
    Job.objects.filter(pk=off_hires.pk).delete()
    assert tagged.batch_key == plain.batch_key != applied.batch_key
    run_on_a_worker([tagged, plain], name="no-networks")
    run_on_a_worker([applied], name="networks")
    assert {tagged.status, applied.status, plain.status} == {"succeeded"}
    assert np.array_equal(pixels(tagged), pixels(plain))
    assert not np.array_equal(pixels(applied), pixels(plain))


def _png() -> str:
    import base64
    from io import BytesIO

    buffer = BytesIO()
    Image.new("RGB", (64, 64), (90, 120, 200)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()
