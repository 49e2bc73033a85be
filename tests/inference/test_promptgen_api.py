"""Prompt expansion's control plane through Django's full request stack on the real database:
`POST /api/v1/promptgen`, `GET /api/v1/promptgen/models`, and what the job row stores.

Jobs stay queued here (no worker is registered); tests/e2e/test_promptgen.py runs them.
"""

from __future__ import annotations

import json
import shutil

import pytest
from django.conf import settings

from inference.models import Job
from tenants.workdirs import tenant_model_dir, user_model_dir

pytestmark = pytest.mark.django_db

BODY = {"prompt": "a cat", "model": "atelier-tiny-gpt2", "seed": 7, "wait": False}


@pytest.fixture(autouse=True)
def _models(tiny_promptgen_models):
    return tiny_promptgen_models


def submit(api, who: str = "alice", **fields):
    return api(who).post("/api/v1/promptgen", {**BODY, **fields})


def test_models_lists_the_public_tiny_models_with_titles_and_scope(api) -> None:
    models = api("alice").get("/api/v1/promptgen/models").json()["models"]
    by_name = {m["name"]: m for m in models}
    assert {"atelier-tiny-gpt2", "atelier-tiny-bloom"} <= set(by_name)
    gpt2 = by_name["atelier-tiny-gpt2"]
    assert gpt2["scope"] == "public" and gpt2["model_type"] == "gpt2"
    assert gpt2["title"] == f"atelier-tiny-gpt2 [{gpt2['sha256'][:10]}]" and len(gpt2["sha256"]) == 64
    assert "path" not in gpt2


def test_submit_without_waiting_queues_a_promptgen_job_with_the_models_key_not_its_path(api, personas) -> None:
    response = submit(api, temperature=0.8, top_k=20, num_results=3, max_length=40)
    assert response.status_code == 201, response.content
    job = Job.objects.get(public_id=response.json()["id"])
    assert (job.kind, job.status, job.owner) == ("promptgen", "queued", personas["alice"])
    assert job.params["resolved_model"]["key"] == "public/models/promptgen/atelier-tiny-gpt2"
    sha = job.params["resolved_model"]["sha256"]
    assert job.model_key == f"promptgen:{sha}" and job.batch_key == f"promptgen:{sha[:48]}"
    assert job.total_steps == 40 and job.seeds == [7]
    detail = api("alice").get(f"/api/v1/jobs/{job.public_id}").json()
    assert detail["kind"] == "promptgen" and detail["texts"] == []
    assert detail["params"]["prompt"] == "a cat" and detail["params"]["num_results"] == 3
    assert detail["params"]["model_title"].startswith("atelier-tiny-gpt2 [")
    assert str(settings.DATA_DIR) not in json.dumps(detail) and "resolved_model" not in detail["params"]


def test_a_random_seed_is_drawn_at_submit_so_the_job_can_be_repeated(api) -> None:
    job = Job.objects.get(public_id=submit(api, seed=-1).json()["id"])
    assert 0 <= job.params["seed"] < 2**32 and job.seeds == [job.params["seed"]]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 1001}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"model": ""}, "model"),
        ({"temperature": 0}, "temperature"),
        ({"temperature": 100}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"repetition_penalty": 0.5}, "repetition_penalty"),
        ({"max_length": 0}, "max_length"),
        ({"max_length": 5000}, "max_length"),
        ({"num_results": 0}, "num_results"),
        ({"num_results": 17}, "num_results"),
        ({"seed": -2}, "seed"),
        ({"seed": "lucky"}, "seed"),
        ({"wait": "yes"}, "wait"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, fields, field) -> None:
    response = submit(api, **fields)
    assert response.status_code == 400, response.content
    assert response.json()["field"] == field and field in response.json()["error"]
    assert not Job.objects.exists()


def test_a_body_that_is_not_an_object_is_a_400(api) -> None:
    response = api("alice").post("/api/v1/promptgen", [1, 2])
    assert response.status_code == 400 and response.json()["field"] == "body"


def test_an_unknown_model_is_a_404_naming_the_model_field(api) -> None:
    response = submit(api, model="nope")
    assert response.status_code == 404 and response.json()["field"] == "model"
    assert "/api/v1/promptgen/models" in response.json()["error"]


def test_another_tenants_model_is_a_404_and_never_listed(api, personas, tiny_promptgen_models) -> None:
    own = user_model_dir("charlie", "promptgen") / "charlies-gpt2"
    team = tenant_model_dir("studio-b", "promptgen") / "studio-b-bloom"
    shutil.copytree(tiny_promptgen_models["gpt2"], own)
    shutil.copytree(tiny_promptgen_models["bloom"], team)
    try:
        charlie = {m["name"]: m["scope"] for m in api("charlie").get("/api/v1/promptgen/models").json()["models"]}
        assert charlie["charlies-gpt2"] == "user" and charlie["studio-b-bloom"] == "tenant"
        alice = {m["name"] for m in api("alice").get("/api/v1/promptgen/models").json()["models"]}
        assert not alice & {"charlies-gpt2", "studio-b-bloom"}
        for name in ("charlies-gpt2", "studio-b-bloom"):
            response = submit(api, "alice", model=name)
            assert response.status_code == 404 and response.json()["field"] == "model"
            assert submit(api, "charlie", model=name).status_code == 201
    finally:
        shutil.rmtree(own)
        shutil.rmtree(team)


def test_a_folder_that_is_not_a_causal_lm_is_a_400_saying_so(api, tiny_promptgen_models) -> None:
    folder = user_model_dir("alice", "promptgen") / "a-bert"
    shutil.copytree(tiny_promptgen_models["gpt2"], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["BertForMaskedLM"], "model_type": "bert"}))
    try:
        assert "a-bert" not in {m["name"] for m in api("alice").get("/api/v1/promptgen/models").json()["models"]}
        response = submit(api, model="a-bert")
        assert response.status_code == 400 and response.json()["field"] == "model"
        assert "not a causal language model" in response.json()["error"] and "BertForMaskedLM" in response.json()["error"]
    finally:
        shutil.rmtree(folder)


def test_pickled_weights_are_refused_unless_the_operator_allows_them(api, tiny_promptgen_models, settings) -> None:
    folder = user_model_dir("alice", "promptgen") / "pickled-gpt2"
    shutil.copytree(tiny_promptgen_models["gpt2"], folder)
    # the same tensors, pickled as transformers used to save them (the registry reads a pickle's opcodes)
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    try:
        response = submit(api, model="pickled-gpt2")
        assert response.status_code == 400 and response.json()["field"] == "model"
        assert "pickled" in response.json()["error"] and "ATELIER_ALLOW_PICKLED_MODELS" in response.json()["error"]
        settings.ATELIER_ALLOW_PICKLED_MODELS = True
        assert "pickled-gpt2" in {m["name"] for m in api("alice").get("/api/v1/promptgen/models").json()["models"]}
        response = submit(api, model="pickled-gpt2")
        assert response.status_code == 201
        assert Job.objects.get(public_id=response.json()["id"]).params["resolved_model"]["pickled"] is True
    finally:
        shutil.rmtree(folder)


def test_outsiders_get_404_on_alices_promptgen_job(api) -> None:
    public_id = submit(api).json()["id"]
    for who in ("bob", "charlie"):
        assert api(who).get(f"/api/v1/jobs/{public_id}").status_code == 404
        assert api(who).post(f"/api/v1/jobs/{public_id}/cancel").status_code == 404
    assert api("alice").get(f"/api/v1/jobs/{public_id}").status_code == 200


def test_anonymous_callers_are_401(client) -> None:
    assert client.get("/api/v1/promptgen/models").status_code == 401
    assert client.post("/api/v1/promptgen", data="{}", content_type="application/json").status_code == 401
    assert client.get("/api/v1/promptgen").status_code in (401, 405)  # a POST-only route


def test_a_non_member_cannot_expand(api) -> None:
    response = submit(api, "admin")
    assert response.status_code == 403


def test_waiting_past_the_timeout_answers_202_with_the_job_to_poll(api, settings) -> None:
    settings.ATELIER_PROMPTGEN_WAIT_SECONDS = 0.2  # no worker here: the job stays queued
    response = submit(api, wait=True)
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued" and body["poll"] == f"/api/v1/jobs/{body['id']}" and body["texts"] == []
