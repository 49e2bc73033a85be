"""`/sdapi/v1/options` as A1111 1.10's whole options object, per member, and what the options and
missing models do to a member's jobs (through Django's stack and the real database; no worker:
the jobs are inspected as submitted, and the answer `info` is built from the stored job)."""

from __future__ import annotations

import json

import pytest

from a1111.generation import GenerationRequest
from a1111.options import A1111_OPTIONS
from inference.models import Job
from inference.sdapi.generate import finished_job_response, member_settings, parse_generation_body, submit_generation

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
