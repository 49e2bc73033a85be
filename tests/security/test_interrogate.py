"""`/sdapi/v1/interrogate` reaches its caller's own things only.

Anonymous callers (no token, a wrong one) get A1111's 401 before anything is read; an operator
outside every tenant may not queue work (403). Alice's interrogate job, run by an in-process
worker on the tiny models, is hers: bob (her tenant) and charlie (another) get 404 for it on
every job endpoint and never see its caption or her stored image.
"""

from __future__ import annotations

import base64
import io
import json

import pytest
from django.conf import settings
from PIL import Image

from inference.models import Job
from inference.services import interrogate_submit
from tests.security.conftest import run_on_a_worker

pytestmark = pytest.mark.django_db


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 90, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_anonymous_callers_and_non_members_cannot_interrogate(api, client, personas, interrogate_installed) -> None:
    body = {"image": base64.b64encode(_png()).decode(), "model": "clip"}
    response = api(None).post("/sdapi/v1/interrogate", body)
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Basic")
    assert set(response.json()) == {"error", "detail", "body", "errors"}
    wrong = client.post("/sdapi/v1/interrogate", data=json.dumps(body), content_type="application/json",
                        HTTP_AUTHORIZATION="Bearer not-a-token")
    assert wrong.status_code == 401
    response = api("admin").post("/sdapi/v1/interrogate", body)  # an operator is in no tenant
    assert response.status_code == 403 and "not a member" in response.json()["detail"]
    assert not Job.objects.exists()


def test_an_interrogate_job_and_its_caption_are_the_callers_only(api, personas, interrogate_installed, one_torch_thread) -> None:
    job = interrogate_submit(user=personas["alice"], model="deepdanbooru", image=_png(), size=(64, 64))
    run_on_a_worker([job], name="alice-interrogate")
    assert job.status == "succeeded" and len(job.texts) == 1, job.error
    image_key = job.params["image"]
    assert image_key.startswith("users/alice/inputs/") and (settings.DATA_DIR / image_key).is_file()
    mine = api("alice").get(f"/api/v1/jobs/{job.public_id}").json()
    assert mine["texts"] == job.texts
    for outsider in ("bob", "charlie"):
        for path in (f"/api/v1/jobs/{job.public_id}", f"/api/v1/jobs/{job.public_id}/images/0"):
            response = api(outsider).get(path)
            assert response.status_code == 404 and response.json() == {"error": "job not found"}, (outsider, path)
        assert api(outsider).post(f"/api/v1/jobs/{job.public_id}/cancel").status_code == 404
        listed = api(outsider).get("/api/v1/jobs").json()["jobs"]
        assert job.public_id not in [j["id"] for j in listed]
        progress = api(outsider).get("/sdapi/v1/progress").content.decode()
        assert job.public_id not in progress and (not job.texts[0] or job.texts[0] not in progress)
