"""img2img's `script_name: "sd upscale"` through `/sdapi/v1`: A1111's `script_args` layout, the 422s
naming the argument at fault, and one job run in-process on the tiny model (the batch runner as a
worker runs it: `tests/security/conftest.py` `run_on_a_worker`)."""

from __future__ import annotations

import base64
import io
import json

import pytest
from django.conf import settings
from PIL import Image

from a1111.sd_upscale import SdUpscale, parse_sd_upscale_args
from inference.models import Job
from inference.sdapi.generate import _notes, parse_generation_body, submit_generation
from tests.security.conftest import run_on_a_worker


def _png_b64(size: tuple[int, int] = (64, 64)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _body(script_args, **extra) -> dict:
    return {
        "init_images": [_png_b64()], "prompt": "a harbour", "width": 64, "height": 64, "steps": 4, "seed": 9,
        "script_name": "SD upscale", "script_args": script_args, **extra,
    }


def test_the_script_args_parser_reads_a1111s_layout_with_its_defaults() -> None:
    assert parse_sd_upscale_args(["", 32, 1, 3], width=64, height=64) == SdUpscale(overlap=32, upscaler_index=1, scale_factor=3.0)
    assert parse_sd_upscale_args([None], width=512, height=512) == SdUpscale(overlap=64, upscaler_index=0, scale_factor=2.0)
    assert parse_sd_upscale_args(None, width=512, height=512) == SdUpscale()
    assert parse_sd_upscale_args(["info", "16", "2", "1.5"], width=64, height=64).scale_factor == 1.5  # pydantic coerces


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field", "needle"),
    [
        (_body("2x"), "script_args", "must be a list"),
        (_body(["", 0, 1, 2, 5]), "script_args", "takes 4 arguments"),
        (_body(["", 64, 1, 2]), "script_args[1]", "smaller than the tile"),
        (_body(["", -16, 1, 2]), "script_args[1]", "at least 0"),
        (_body(["", 0, "lanczos", 2]), "script_args[2]", "must be an integer"),
        (_body(["", 0, 99, 2]), "script_args[2]", "not in GET /sdapi/v1/upscalers"),
        (_body(["", 0, 1, 0]), "script_args[3]", "between 1.0 and 4.0"),
        (_body(["", 0, 1, 4], init_images=[_png_b64((1024, 1024))]), "script_args[3]", "pixel limit"),
        ({**_body(["", 0, 1, 2]), "init_images": None, "prompt": "x"}, "script_name", "img2img script"),
    ],
)
def test_bad_sd_upscale_arguments_are_422s_naming_the_argument(api, settings, tiny_checkpoint_path, body, field, needle) -> None:
    settings.ATELIER_MAX_INPUT_PIXELS = 2048 * 2048  # the 1024x1024 image x 4 is over it
    route = "/sdapi/v1/txt2img" if field == "script_name" else "/sdapi/v1/img2img"
    response = api("alice").post(route, body)
    assert response.status_code == 422, response.content
    assert f"{field}:" in response.json()["detail"] and needle in response.json()["detail"], response.json()["detail"]
    assert not Job.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_sd_upscale_job_doubles_the_image_with_every_tile_counted(personas, tiny_checkpoint_path, one_torch_thread) -> None:
    body = _body(["", 0, 1, 2], n_iter=2, batch_size=3, subseed_strength=0.3, subseed=4, seed_resize_from_w=32,
                 seed_resize_from_h=48)
    generation, inputs = parse_generation_body(body, "img2img")
    job = submit_generation(personas["alice"], generation, inputs)
    spec = job.params["sd_upscale"]
    assert (spec["upscaler"], spec["tiles"], spec["scale_factor"]) == ("Lanczos", 4, 2.0)
    assert job.batch_key == f"sd-upscale:{job.public_id}"  # never batched with another job
    assert job.seeds == [9, 10]  # one image per batch-count iteration, each starting one seed on
    assert job.total_steps == 2 * 2 * 3  # per image: 2 tile calls (3 + 1 tiles) of int(4 x 0.75) steps
    run_on_a_worker([job], name="sd-upscale")
    assert job.status == "succeeded", job.error
    assert len(job.outputs) == 2
    for key, infotext in zip(job.outputs, job.infotexts, strict=True):
        assert Image.open(settings.DATA_DIR / key).size == (128, 128)
        assert "SD upscale overlap: 0" in infotext and "SD upscale upscaler: Lanczos" in infotext
        assert "Variation seed: 4, Variation seed strength: 0.3, Seed resize from: 32x48" in infotext
    assert job.step == job.total_steps
    assert _notes(body, generation) == []  # all applied: no "not available yet" note, nor one about the variation
    assert json.loads(json.dumps(job.params))["sd_upscale"]["overlap"] == 0
