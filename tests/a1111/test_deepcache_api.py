"""The DeepCache extension's options through `/sdapi/v1` (`a1111/deepcache.py`): 422s naming the key,
the member's options as defaults, the batch key, and jobs run in-process as a worker runs them,
with the extension's infotext key."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from a1111.deepcache import DeepCachePass
from a1111.generation import GenerationRequest
from inference.models import Job
from inference.sdapi.generate import member_settings, parse_generation_body, submit_generation
from tenants.workdirs import user_model_dir
from tests.security.conftest import run_on_a_worker

TINY = {"prompt": "a portrait", "steps": 4, "width": 64, "height": 64}


@pytest.mark.django_db
def test_bad_values_are_422s_naming_the_option(api, personas, tiny_checkpoint_path, tmp_path) -> None:
    for settings, needle in (
        ({"deepcache_cache_resnet_level": 11}, "at most 10"),
        ({"deepcache_cache_resnet_level": "deep"}, "an integer"),
        ({"deepcache_enable_pass": "always"}, "disable, second pass, both passes"),
        ({"deepcache_full_run_step_rate": -1}, "at least 0"),
        ({"deepcache_cache_enable_step_percentage": 1.5}, "between 0.0 and 1.0"),
        ({"deepcache_enable": "yes"}, "true or false"),
    ):
        (key,) = settings
        response = api("alice").post("/sdapi/v1/txt2img", {**TINY, "override_settings": settings})
        assert response.status_code == 422 and f"override_settings.{key}:" in response.json()["detail"], response.content
        assert needle in response.json()["detail"]
        refused = api("alice").post("/sdapi/v1/options", settings)
        assert refused.status_code == 422 and refused.json()["body"] == key, refused.content
    # SDXL's UNet has 9 input blocks: a level past its last is refused at submit, naming the checkpoint
    from runtime.tiny.families import write_tiny_sdxl_checkpoint

    folder = user_model_dir("alice", "Stable-diffusion")
    folder.mkdir(parents=True, exist_ok=True)
    xl = Path(shutil.copy(write_tiny_sdxl_checkpoint(tmp_path / "tiny-xl.safetensors"), folder / "tiny-xl.safetensors"))
    try:
        body = {**TINY, "override_settings": {"sd_model_checkpoint": "tiny-xl", "deepcache_enable": True,
                                              "deepcache_cache_resnet_level": 9}}
        response = api("alice").post("/sdapi/v1/txt2img", body)
        assert response.status_code == 422, response.content
        assert "override_settings.deepcache_cache_resnet_level: tiny-xl" in response.json()["detail"]
        assert "SDXL, whose UNet has 9 input blocks: the DeepCache level must be from 0 to 8" in response.json()["detail"]
        assert Job.objects.count() == 0
        body["override_settings"]["deepcache_cache_resnet_level"] = 8
        request = parse_generation_body(body, "txt2img", {}, member_settings(personas["alice"]))[0]
        assert submit_generation(personas["alice"], request, None).status == "queued"
    finally:
        xl.unlink(missing_ok=True)


@pytest.mark.django_db(transaction=True)
def test_deepcache_options_reach_the_batch_key_the_worker_and_the_infotext(api, personas, tiny_checkpoint_path, one_torch_thread) -> None:
    alice, bob = personas["alice"], personas["bob"]
    assert api("alice").post("/sdapi/v1/options", {
        "deepcache_enable": True, "deepcache_cache_resnet_level": 2, "deepcache_cache_enable_step_percentage": 0.0,
    }).status_code == 200
    options = api("alice").get("/sdapi/v1/options").json()
    assert (options["deepcache_enable_pass"], options["deepcache_full_run_step_rate"]) == ("disable", 5)  # the extension's defaults

    def parsed(user, body: dict) -> GenerationRequest:
        return parse_generation_body(body, "txt2img", {}, member_settings(user))[0]

    mine = parsed(alice, {**TINY, "seed": 1})
    assert mine.deepcache_first_pass == DeepCachePass(level=2, enable_after=0, full_run_step_rate=5)
    assert parsed(bob, {**TINY, "seed": 1}).deepcache_first_pass is None  # alice's options are hers
    hires = parsed(alice, {**TINY, "enable_hr": True, "hr_scale": 1.5, "hr_second_pass_steps": 4, "denoising_strength": 0.5,
                           "override_settings": {"deepcache_enable_pass": "second pass"}})
    assert hires.deepcache_first_pass is None and hires.deepcache_hires_pass == DeepCachePass(2, 0, 5)
    off = parsed(alice, {**TINY, "override_settings": {"deepcache_full_run_step_rate": 1}})  # every call in full
    assert off.deepcache_first_pass is None

    # jobs caching alike share a pipeline call, the others never; each image is its job's image run alone
    jobs = [submit_generation(alice, parsed(alice, {**TINY, "seed": seed}), None) for seed in (1, 2)]
    plain = submit_generation(bob, parsed(bob, {**TINY, "seed": 1}), None)
    other = submit_generation(alice, parsed(alice, {**TINY, "seed": 1, "override_settings": {"deepcache_cache_resnet_level": 5}}), None)
    assert jobs[0].batch_key == jobs[1].batch_key and len({jobs[0].batch_key, plain.batch_key, other.batch_key}) == 3
    disabled = parsed(bob, {**TINY, "seed": 1, "override_settings": {"deepcache_enable_pass": "second pass"}})  # no hires fix
    assert submit_generation(bob, disabled, None).batch_key == plain.batch_key
    run_on_a_worker(jobs, name="deepcache-batch")
    alone = submit_generation(alice, parsed(alice, {**TINY, "seed": 1}), None)
    run_on_a_worker([alone], name="deepcache-alone")
    run_on_a_worker([plain], name="deepcache-plain")
    for job in (*jobs, alone, plain):
        assert job.status == "succeeded", job.error
    assert np.abs(_pixels(jobs[0]).astype(int) - _pixels(alone).astype(int)).max() <= 2  # batching: floating-point noise only
    # the same seed, cached: another image (the tiny model's random weights change it little, but not nothing)
    assert not np.array_equal(_pixels(alone), _pixels(plain))
    assert "DeepCache pass: both passes" in jobs[0].infotexts[0]
    assert "DeepCache" not in plain.infotexts[0]
    # the infotext's key, pasted back (A1111 1.8+'s `infotext` field), sets the extension's option
    pasted = parsed(bob, {"infotext": jobs[0].infotexts[0], "override_settings": {"deepcache_cache_enable_step_percentage": 0}})
    assert pasted.deepcache_first_pass == DeepCachePass(0, 0, 5) and pasted.seed == 1


def _pixels(job: Job) -> np.ndarray:
    from django.conf import settings

    return np.asarray(Image.open(settings.DATA_DIR / job.outputs[0]).convert("RGB"))
