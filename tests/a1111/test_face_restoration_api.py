"""Face restoration ("Restore faces") through Django's stack: which restorer a member has, what a
request runs with, and the clear refusals. Generation itself is exercised end to end in
`tests/e2e/test_nsfw_censor_and_extras.py` and in `tests/worker/test_face_restoration.py`.

bob keeps a tiny GFPGAN and facexlib's detector in his own folders; studio-a (alice's and bob's
team) shares a tiny CodeFormer; charlie (studio-b) has none.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from inference.jobspec import JobSpec
from inference.models import Job
from inference.storage import model_file_path
from runtime.faces.codeformer import write_tiny_codeformer
from runtime.faces.detection import write_tiny_face_detector
from runtime.faces.gfpgan import write_tiny_gfpgan


@pytest.fixture
def face_models(personas, tiny_checkpoint_path) -> Iterator[dict[str, Path]]:
    users, teams = settings.DATA_DIR / "users", settings.DATA_DIR / "tenants"
    paths = {
        "bob_gfpgan": write_tiny_gfpgan(users / "bob" / "models" / "GFPGAN" / "GFPGANv1.4.pth"),
        "bob_old_gfpgan": write_tiny_gfpgan(users / "bob" / "models" / "GFPGAN" / "GFPGANv1.3.pth", seed=1),
        "bob_detector": write_tiny_face_detector(users / "bob" / "models" / "GFPGAN" / "detection_Resnet50_Final.pth"),
        "team_codeformer": write_tiny_codeformer(teams / "studio-a" / "models" / "Codeformer" / "codeformer-v0.1.0.pth"),
    }
    yield paths
    for path in paths.values():
        path.unlink()


def _body(**extra) -> dict:
    return {"prompt": "a portrait", "steps": 2, "width": 64, "height": 64, "restore_faces": True, **extra}


@pytest.mark.django_db
def test_face_restorers_lists_what_each_member_has(api, face_models) -> None:
    bob = api("bob").get("/sdapi/v1/face-restorers").json()
    assert bob == [
        {"name": "CodeFormer", "cmd_dir": "models/Codeformer/codeformer-v0.1.0.pth"},
        {"name": "GFPGAN", "cmd_dir": "models/GFPGAN/GFPGANv1.4.pth"},  # the newer of bob's two
    ]
    assert [r["name"] for r in api("alice").get("/sdapi/v1/face-restorers").json()] == ["CodeFormer"]
    assert api("charlie").get("/sdapi/v1/face-restorers").json() == []


@pytest.mark.django_db
def test_a_request_runs_with_the_named_restorer_or_the_members_option(api, face_models) -> None:
    job = _submit_native(api, "bob", _body(override_settings={"face_restoration_model": "gfpgan"}))
    restorer = JobSpec.from_json(job.params).face_restorer
    assert restorer.name == "GFPGAN" and model_file_path(restorer.model.key) == face_models["bob_gfpgan"].resolve()
    assert restorer.model.key.startswith("users/bob/models/GFPGAN/")  # a storage key, not this machine's path
    assert model_file_path(restorer.detector.key) == face_models["bob_detector"].resolve()
    assert restorer.weight == 0.5
    shown = api("bob").get(f"/api/v1/jobs/{job.public_id}").json()["params"]
    assert shown["face_restorer"] == {"name": "GFPGAN", "weight": 0.5}  # no server paths
    assert str(settings.DATA_DIR) not in str(shown)

    # no name: the member's option (CodeFormer by default, as A1111), with its weight
    assert api("bob").post("/sdapi/v1/options", {"code_former_weight": 0.8}).status_code == 200
    job = _submit_native(api, "bob", _body())
    restorer = JobSpec.from_json(job.params).face_restorer
    assert restorer.name == "CodeFormer" and restorer.weight == 0.8
    other = _submit_native(api, "bob", _body(override_settings={"face_restoration_model": "GFPGAN"}))
    assert other.batch_key != job.batch_key  # different restorers never share a pipeline call
    plain = _submit_native(api, "bob", {**_body(), "restore_faces": False})
    assert JobSpec.from_json(plain.params).face_restorer is None and plain.batch_key != job.batch_key


def _submit_native(api, user: str, body: dict) -> Job:
    response = api(user).post("/api/v1/jobs", body)
    assert response.status_code == 201, response.content
    return Job.objects.get(public_id=response.json()["id"])


@pytest.mark.django_db
def test_strict_mode_refuses_what_is_not_installed_and_bad_settings_are_clear_refusals(api, face_models, settings) -> None:
    # By default a missing restorer degrades (tests/a1111/test_options_api.py); the operator's strict mode refuses.
    settings.ATELIER_STRICT_MISSING_MODELS = True
    charlie = api("charlie").post("/sdapi/v1/txt2img", _body())
    assert charlie.status_code == 404
    assert "face restoration is not installed" in charlie.json()["detail"] and "restore_faces: false" in charlie.json()["detail"]

    # alice's team has CodeFormer, but the detector is bob's own
    alice = api("alice").post("/sdapi/v1/txt2img", _body())
    assert alice.status_code == 404 and "detection_Resnet50_Final.pth" in alice.json()["detail"]
    alice_gfpgan = api("alice").post("/sdapi/v1/txt2img", _body(override_settings={"face_restoration_model": "GFPGAN"}))
    assert alice_gfpgan.status_code == 404
    assert "GFPGAN is not installed" in alice_gfpgan.json()["detail"] and "installed: CodeFormer" in alice_gfpgan.json()["detail"]

    unknown = api("bob").post("/sdapi/v1/txt2img", _body(override_settings={"face_restoration_model": "RestoreFormer"}))
    assert unknown.status_code == 422 and "override_settings.face_restoration_model" in unknown.json()["detail"]
    weight = api("bob").post("/sdapi/v1/txt2img", _body(override_settings={"code_former_weight": 1.5}))
    assert weight.status_code == 422 and "override_settings.code_former_weight" in weight.json()["detail"]
    native = api("charlie").post("/api/v1/jobs", _body())
    assert native.status_code in (400, 404) and "not installed" in native.content.decode()
    assert not Job.objects.exists()

    option = api("bob").post("/sdapi/v1/options", {"face_restoration_model": "Nope"})
    assert option.status_code == 422 and "face_restoration_model" in option.json()["detail"]
