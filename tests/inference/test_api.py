"""The native jobs API through Django's full request stack on the real database.

Jobs stay queued here (no worker is registered); the end-to-end tests run them.
"""

from __future__ import annotations

from tests.safetensors_files import write_placeholder_model
import base64

import pytest

from inference.jobspec import JobSpec
from inference.models import Job

pytestmark = pytest.mark.django_db

BODY = {"prompt": "a red bicycle", "steps": 10, "width": 128, "height": 128, "seed": 42}


@pytest.fixture(autouse=True)
def _model(tiny_checkpoint_path):
    return tiny_checkpoint_path


def submit(api, who: str = "alice", **fields) -> str:
    response = api(who).post("/api/v1/jobs", {**BODY, **fields})
    assert response.status_code == 201, response.content
    return response.json()["id"]


def test_submit_returns_201_with_a_random_id_and_stores_a_queued_job(api, personas) -> None:
    first, second = submit(api), submit(api)
    assert first != second and first.startswith("j_") and len(first) > 12
    job = Job.objects.get(public_id=first)
    assert (job.status, job.owner, job.tenant.slug) == ("queued", personas["alice"], "studio-a")
    assert job.checkpoint_title.startswith("atelier-tiny.safetensors [")
    assert job.params["seed"] == 42 and job.seeds == [42]

    detail = api("alice").get(f"/api/v1/jobs/{first}").json()
    assert detail["id"] == first and detail["status"] == "queued"
    assert detail["progress"] == 0 and detail["images"] == [] and detail["error"] is None
    assert "worker" not in detail  # operators only


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": 151}, "steps"),
        ({"width": 32}, "width"),
        ({"height": 4096}, "height"),
        ({"batch_size": 64}, "batch_size"),
        ({"cfg_scale": "lots"}, "cfg_scale"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, fields, field) -> None:
    response = api("alice").post("/api/v1/jobs", {**BODY, **fields})
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert field.split(".")[-1] in response.json()["error"]
    assert not Job.objects.exists()


def test_an_unknown_checkpoint_is_a_404_naming_the_field(api) -> None:
    response = api("alice").post("/api/v1/jobs", {**BODY, "override_settings": {"sd_model_checkpoint": "nope.safetensors"}})
    assert response.status_code == 404  # as on /sdapi/v1: a model the member may not use is not found
    assert response.json()["field"] == "override_settings.sd_model_checkpoint"
    assert response.json()["error"].startswith("override_settings.sd_model_checkpoint: unknown checkpoint 'nope")
    assert not Job.objects.exists()


@pytest.mark.parametrize("body", ["", "{not json", "[1, 2]", '"text"'])
def test_a_body_that_is_not_a_json_object_is_a_400(api, body) -> None:
    response = api("alice").post("/api/v1/jobs", body)
    assert response.status_code == 400
    assert response.json()["field"] == "body"


def test_no_token_or_a_wrong_or_revoked_token_is_401(api, client, personas, tokens) -> None:
    assert client.post("/api/v1/jobs", BODY, content_type="application/json").status_code == 401
    wrong = client.post("/api/v1/jobs", BODY, content_type="application/json", HTTP_AUTHORIZATION="Bearer atl_wrong")
    assert wrong.status_code == 401
    assert wrong["WWW-Authenticate"].startswith("Bearer")

    from tenants.models import ApiToken
    from tenants.services import token_revoke

    for token in ApiToken.objects.filter(user=personas["bob"]):
        token_revoke(token=token)
    assert api("bob").get("/api/v1/jobs").status_code == 401


def test_the_three_authorization_forms_a1111_and_eas_clients_send(client, tokens) -> None:
    token = tokens["alice"]
    basic = base64.b64encode(f"alice:{token}".encode()).decode()
    for header in (f"Bearer {token}", token, f"Basic {basic}"):
        assert client.get("/api/v1/jobs", HTTP_AUTHORIZATION=header).status_code == 200, header
    wrong_user = base64.b64encode(f"bob:{token}".encode()).decode()
    assert client.get("/api/v1/jobs", HTTP_AUTHORIZATION=f"Basic {wrong_user}").status_code == 401


def test_a_session_cookie_may_read_but_not_write(client, personas) -> None:
    client.force_login(personas["alice"])
    assert client.get("/api/v1/jobs").status_code == 200
    assert client.post("/api/v1/jobs", BODY, content_type="application/json").status_code == 401


@pytest.mark.parametrize("outsider", ["charlie", "bob"])
def test_alices_job_is_404_to_other_members_on_every_endpoint(api, outsider) -> None:
    job_id = submit(api, "alice")
    for path in (f"/api/v1/jobs/{job_id}", f"/api/v1/jobs/{job_id}/images/0"):
        response = api(outsider).get(path)
        assert response.status_code == 404 and response.json() == {"error": "job not found"}
    assert api(outsider).post(f"/api/v1/jobs/{job_id}/cancel").status_code == 404
    assert job_id not in [j["id"] for j in api(outsider).get("/api/v1/jobs").json()["jobs"]]
    assert Job.objects.get(public_id=job_id).status == "queued"


def test_tenant_admins_and_operators_may_see_their_members_jobs(api) -> None:
    bobs = submit(api, "bob")
    assert api("alice").get(f"/api/v1/jobs/{bobs}").status_code == 200  # alice administers studio-a
    assert api("admin").get(f"/api/v1/jobs/{bobs}").json()["worker"] is None
    charlies = submit(api, "charlie")
    assert api("alice").get(f"/api/v1/jobs/{charlies}").status_code == 404


def test_cancel_of_a_queued_job_means_it_never_starts(api) -> None:
    job_id = submit(api)
    response = api("alice").post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert api("alice").post(f"/api/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"  # idempotent


def test_wrong_methods_and_missing_images(api) -> None:
    job_id = submit(api)
    assert api("alice").post(f"/api/v1/jobs/{job_id}").status_code == 405
    assert api("alice").get(f"/api/v1/jobs/{job_id}/cancel").status_code == 405
    assert api("alice").get(f"/api/v1/jobs/{job_id}/images/0").status_code == 404
    assert api("alice").get("/api/v1/jobs/j_doesnotexist").status_code == 404


def test_operators_without_a_tenant_cannot_submit_but_may_list_workers(api) -> None:
    response = api("admin").post("/api/v1/jobs", BODY)
    assert response.status_code == 403 and "tenant" in response.json()["error"]
    assert api("admin").get("/api/v1/workers").status_code == 200
    assert api("alice").get("/api/v1/workers").status_code == 403


def test_models_lists_what_the_caller_may_use(api) -> None:
    models = api("charlie").get("/api/v1/models").json()["models"]
    assert [m["title"].split(" [")[0] for m in models] == ["atelier-tiny.safetensors"]
    assert models[0]["scope"] == "public" and "path" not in models[0]


def test_prompt_loras_must_be_ones_the_user_has(api, personas) -> None:
    from django.conf import settings

    lora = settings.DATA_DIR / "tenants" / "studio-a" / "models" / "Lora" / "inkwash.safetensors"
    write_placeholder_model(lora)
    try:
        response = api("alice").post("/api/v1/jobs", {**BODY, "prompt": "a boat <lora:inkwash:0.7>"})
        assert response.status_code == 201
        job = Job.objects.get(public_id=response.json()["id"])
        import hashlib

        sha = hashlib.sha256(lora.read_bytes()).hexdigest()
        assert job.network_key == f"{sha}@te=0.7,unet=0.7"  # by content: two files named alike never batch
        (network,) = JobSpec.from_json(job.params).networks
        assert (network.name, network.model.key) == ("inkwash", "tenants/studio-a/models/Lora/inkwash.safetensors")
        shown = api("alice").get(f"/api/v1/jobs/{job.public_id}").json()["params"]
        assert "networks" not in shown and str(settings.DATA_DIR) not in str(shown) and sha not in str(shown)
        response = api("charlie").post("/api/v1/jobs", {**BODY, "prompt": "a boat <lora:inkwash:0.7>"})
        assert response.status_code == 400 and "unknown lora 'inkwash'" in response.json()["error"]
        response = api("alice").post("/api/v1/jobs", {**BODY, "negative_prompt": "<lora:inkwash:abc>"})
        assert response.status_code == 400 and response.json()["field"] == "negative_prompt"
        assert "is not a number" in response.json()["error"]
    finally:
        lora.unlink()


def _png_b64(color=(10, 200, 30)) -> str:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_img2img_inputs_are_stored_once_in_the_members_own_folder(api, settings) -> None:
    image = _png_b64()
    first = submit(api, kind="img2img", init_images=[image], mask=_png_b64((255, 255, 255)), denoising_strength=0.5)
    second = submit(api, kind="img2img", init_images=["data:image/png;base64," + image], steps=10)
    a, b = Job.objects.get(public_id=first), Job.objects.get(public_id=second)
    assert a.params["init_images"] == b.params["init_images"]  # same picture, one file
    key = a.params["init_images"][0]
    assert key.startswith("users/alice/inputs/") and (settings.DATA_DIR / key).is_file()
    assert a.params["mask"].startswith("users/alice/inputs/") and b.params["mask"] is None
    assert (a.total_steps, b.total_steps) == (5, 7)  # int(steps × denoising strength), as A1111 runs
    assert a.batch_key != b.batch_key  # a mask and another strength: not one pipeline call


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({}, "init_images"),
        ({"init_images": ["http://example.com/x.png"]}, "URLs are not accepted here"),
        ({"init_images": ["!!"]}, "init_images[0]"),
        ({"init_images": [_png_b64()], "alwayson_scripts": {"save_dir": "../x"}}, "save_dir"),
    ],
)
def test_bad_img2img_input_is_a_400(api, fields, needle) -> None:
    response = api("alice").post("/api/v1/jobs", {**BODY, "kind": "img2img", **fields})
    assert response.status_code == 400 and needle in response.json()["error"], response.content
    assert not Job.objects.exists()
