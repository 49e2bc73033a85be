"""`/sdapi/v1/options` as A1111 1.10's whole options object, per member, and what the options and
missing models do to a member's jobs (through Django's stack and the real database; no worker:
the jobs are inspected as submitted, and the answer `info` is built from the stored job)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from a1111.generation import GenerationRequest
from a1111.options import A1111_OPTIONS
from inference.models import Job
from inference.sdapi.generate import finished_job_response, member_settings, parse_generation_body, submit_generation
from tests.security.conftest import run_on_a_worker

pytestmark = pytest.mark.django_db

TINY = {"prompt": "a portrait", "steps": 2, "width": 64, "height": 64}


def test_every_key_with_defaults_per_member_refusing_unknown_keys_and_wrong_types(api, personas, tiny_checkpoint_path) -> None:
    options = api("alice").get("/sdapi/v1/options").json()
    assert set(options) == set(A1111_OPTIONS) and len(options) > 300
    assert options["send_seed"] is True and options["samples_format"] == "png" and options["sd_lora"] == "None"
    assert options["sd_model_checkpoint"].startswith("atelier-tiny") and len(options["sd_checkpoint_hash"]) == 64

    assert api("alice").post("/sdapi/v1/options", {"send_seed": False, "samples_format": "jpg"}).status_code == 200
    mine = api("alice").get("/sdapi/v1/options").json()
    assert mine["send_seed"] is False and mine["samples_format"] == "jpg"
    assert api("bob").get("/sdapi/v1/options").json()["send_seed"] is True  # alice's options are hers

    # what A1111 clients do: read the whole object, change a key, write it all back
    assert api("alice").post("/sdapi/v1/options", {**mine, "n_rows": 3.0}).status_code == 200
    assert api("alice").get("/sdapi/v1/options").json()["n_rows"] == 3

    unknown = api("alice").post("/sdapi/v1/options", {"send_seed": True, "not_an_option": 1, "nor_this": 2})
    assert unknown.status_code == 422 and "'not_an_option', 'nor_this'" in unknown.json()["detail"]
    wrong = api("alice").post("/sdapi/v1/options", {"send_seed": "no"})
    assert wrong.status_code == 422 and wrong.json()["body"] == "send_seed" and "a boolean" in wrong.json()["detail"]
    wrong = api("alice").post("/sdapi/v1/options", {"eta_noise_seed_delta": True})
    assert wrong.status_code == 422 and "an integer" in wrong.json()["detail"]
    wrong = api("alice").post("/sdapi/v1/options", {"hidden_tabs": ["Extras\x00"]})  # no store keeps a NUL
    assert wrong.status_code == 422 and wrong.json()["body"] == "hidden_tabs"
    assert api("alice").get("/sdapi/v1/options").json()["send_seed"] is False  # a refused write changes nothing


def test_options_that_change_generation_reach_the_job_and_the_request_wins(api, personas, tiny_checkpoint_path) -> None:
    alice = personas["alice"]
    assert api("alice").post("/sdapi/v1/options", {
        "CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337, "tiling": True,
    }).status_code == 200
    generation, _ = parse_generation_body(dict(TINY), "txt2img", {}, member_settings(alice))
    request = GenerationRequest.from_json(submit_generation(alice, generation, None).params)
    assert (request.clip_skip, request.eta_noise_seed_delta, request.tiling) == (2, 31337, True)
    assert request.checkpoint.startswith("atelier-tiny")  # the member's checkpoint, as before

    body = {**TINY, "tiling": False, "override_settings": {"CLIP_stop_at_last_layers": 3}}
    generation, _ = parse_generation_body(body, "txt2img", {}, member_settings(alice))
    request = GenerationRequest.from_json(submit_generation(alice, generation, None).params)
    assert (request.clip_skip, request.eta_noise_seed_delta, request.tiling) == (3, 31337, False)

    generation, _ = parse_generation_body(dict(TINY), "txt2img", {}, member_settings(personas["bob"]))
    assert (generation.clip_skip, generation.eta_noise_seed_delta, generation.tiling) == (1, 0, False)


def test_restore_faces_without_weights_runs_unrestored_with_a_note_unless_strict(api, personas, settings, tiny_checkpoint_path) -> None:
    body = {**TINY, "restore_faces": True}
    response = api("charlie").post("/api/v1/jobs", body)  # no face restorer anywhere charlie can see
    assert response.status_code == 201, response.content
    job = Job.objects.get(public_id=response.json()["id"])
    request = GenerationRequest.from_json(job.params)
    assert request.restore_faces and request.face_restorer is None
    Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED)
    job.refresh_from_db()
    status, answer = finished_job_response(job, body, "txt2img", absolute=lambda path: path, elapsed=0.0)
    notes = json.loads(answer["info"])["notes"]
    assert status == 200 and any("faces were not restored" in note and "models/Codeformer" in note for note in notes)

    # the option restores faces when a request leaves restore_faces out (A1111's face_restoration)
    assert api("charlie").post("/sdapi/v1/options", {"face_restoration": True}).status_code == 200
    generation, _ = parse_generation_body(dict(TINY), "txt2img", {}, member_settings(personas["charlie"]))
    assert generation.restore_faces

    settings.ATELIER_STRICT_MISSING_MODELS = True
    strict = api("charlie").post("/sdapi/v1/txt2img", body)
    assert strict.status_code == 404 and "face restoration is not installed" in strict.json()["detail"]
    assert Job.objects.count() == 1


def _png_base64(size: int = 64) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), "teal").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.django_db(transaction=True)
def test_token_merging_options_reach_the_batch_key_the_runtime_and_the_infotext(
    api, personas, tiny_checkpoint_path, one_torch_thread
) -> None:
    alice = personas["alice"]
    refused = api("alice").post("/sdapi/v1/options", {"token_merging_ratio": 0.95})
    assert refused.status_code == 422 and refused.json()["body"] == "token_merging_ratio", refused.content
    assert "between 0.0 and 0.9" in refused.json()["detail"]
    response = api("alice").post("/sdapi/v1/txt2img", {**TINY, "override_settings": {"token_merging_ratio_hr": -0.1}})
    assert response.status_code == 422 and "override_settings.token_merging_ratio_hr:" in response.json()["detail"]
    assert api("alice").post("/sdapi/v1/options", {
        "token_merging_ratio": 0.5, "token_merging_ratio_hr": 0.3, "token_merging_ratio_img2img": 0.4,
    }).status_code == 200

    def parsed(body: dict, kind: str = "txt2img") -> GenerationRequest:
        return parse_generation_body(body, kind, {}, member_settings(alice))[0]

    hires = {**TINY, "enable_hr": True, "hr_scale": 1.5, "hr_second_pass_steps": 2, "denoising_strength": 0.5}
    assert (parsed(dict(TINY)).token_merging_first_pass, parsed(dict(TINY)).token_merging_hires_pass) == (0.5, 0.0)
    assert (parsed(hires).token_merging_first_pass, parsed(hires).token_merging_hires_pass) == (0.5, 0.3)
    own = parsed({**TINY, "override_settings": {"token_merging_ratio": 0.2}})  # the request's own wins
    assert own.token_merging_first_pass == 0.2
    image = {**TINY, "init_images": [_png_base64()]}
    assert parsed(image, "img2img").token_merging_first_pass == 0.4  # img2img's option
    # A1111: a request's own token_merging_ratio wins over the member's img2img option too
    assert parsed({**image, "override_settings": {"token_merging_ratio": 0.2}}, "img2img").token_merging_first_pass == 0.2
    bobs = parse_generation_body({**TINY, "seed": 1}, "txt2img", {}, member_settings(personas["bob"]))[0]
    assert bobs.token_merging_first_pass == 0.0  # alice's options are hers

    # jobs merging differently never share a pipeline call; with the same ratio they do, and each
    # image is the image of its job run alone
    jobs = [submit_generation(alice, parsed({**TINY, "seed": seed}), None) for seed in (1, 2)]
    other = submit_generation(alice, own, None)
    plain = submit_generation(personas["bob"], bobs, None)
    assert jobs[0].batch_key == jobs[1].batch_key != other.batch_key != plain.batch_key
    untouched = parse_generation_body({**TINY, "override_settings": {"token_merging_ratio": 0}}, "txt2img")[0]
    assert submit_generation(personas["bob"], untouched, None).batch_key == plain.batch_key  # 0 is no option
    run_on_a_worker(jobs, name="tome-batch")
    alone = [submit_generation(alice, parsed({**TINY, "seed": seed}), None) for seed in (1, 2)]
    for index, job in enumerate(alone):
        run_on_a_worker([job], name=f"tome-alone-{index}")
    for together, single in zip(jobs, alone, strict=True):
        assert together.status == single.status == "succeeded", together.error or single.error
        difference = np.abs(_pixels(together).astype(int) - _pixels(single).astype(int)).max()
        assert difference <= 2, difference  # floating-point noise only, as batching without merging
    assert "Token merging ratio: 0.5" in jobs[0].infotexts[0] and "Token merging ratio hr" not in jobs[0].infotexts[0]

    hires_job = submit_generation(alice, parsed({**hires, "seed": 1}), None)
    run_on_a_worker([hires_job], name="tome-hires")
    run_on_a_worker([plain], name="tome-plain")
    assert hires_job.status == plain.status == "succeeded", hires_job.error or plain.error
    assert "Token merging ratio: 0.5, Token merging ratio hr: 0.3" in hires_job.infotexts[0]
    assert "Token merging" not in plain.infotexts[0]
    assert np.abs(_pixels(plain).astype(int) - _pixels(jobs[0]).astype(int)).max() > 10  # the same seed, merged: another image


def _pixels(job: Job) -> np.ndarray:
    from django.conf import settings

    return np.asarray(Image.open(settings.DATA_DIR / job.outputs[0]).convert("RGB"))
