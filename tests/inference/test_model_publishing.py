"""Where model files reach the blob store (`inference/model_blobs.py`), with a bucket configured:
at every submit, before the job can be dispatched, and as soon as an upload into a model folder
completes; without a bucket, nowhere."""

from __future__ import annotations

import shutil

import pytest
from django.conf import settings

from inference.jobspec import JobSpec
from inference.models import Job, ModelBlob
from tests.safetensors_files import safetensors_bytes
from tests.tenants.upload_helpers import Uploader, sha

pytestmark = pytest.mark.django_db

BODY = {"prompt": "a red bicycle", "steps": 4, "width": 64, "height": 64, "seed": 42}
LORA = safetensors_bytes({"w": ("U8", (512,))}, fill=b"\x07")


@pytest.fixture
def clean_homes():
    yield
    for folder in ("users", "uploads"):
        shutil.rmtree(settings.DATA_DIR / folder, ignore_errors=True)


def test_a_submitted_jobs_checkpoint_is_in_the_bucket_before_dispatch(api, personas, tiny_checkpoint_path, s3_server, s3_storage) -> None:
    response = api("alice").post("/api/v1/jobs", BODY)
    assert response.status_code == 201, response.content
    spec = JobSpec.from_json(Job.objects.get(public_id=response.json()["id"]).params)
    assert s3_server.keys(s3_storage, f"model-blobs/{spec.checkpoint.sha256}") == [f"model-blobs/{spec.checkpoint.sha256}"]
    blob = ModelBlob.objects.get(sha256=spec.checkpoint.sha256)
    assert blob.size == tiny_checkpoint_path.stat().st_size and blob.files == []
    again = api("alice").post("/api/v1/jobs", BODY)  # already published: stored once
    assert again.status_code == 201 and len(s3_server.keys(s3_storage, "model-blobs/")) == 1


def test_an_upload_into_a_model_folder_is_published_when_it_completes(client, tokens, s3_server, s3_storage, clean_homes) -> None:
    alice = Uploader(client, tokens["alice"])
    assert alice.upload("models/Lora/eager.safetensors", LORA, 1 << 20).json()["state"] == "complete"
    assert s3_server.keys(s3_storage, "model-blobs/") == [f"model-blobs/{sha(LORA)}"]
    assert alice.upload("notes/eager.safetensors", LORA + b" ", 1 << 20).json()["state"] == "complete"
    assert s3_server.keys(s3_storage, "model-blobs/") == [f"model-blobs/{sha(LORA)}"]  # not a model folder


def test_without_a_bucket_nothing_is_published(api, personas, tiny_checkpoint_path) -> None:
    assert api("alice").post("/api/v1/jobs", BODY).status_code == 201
    assert not ModelBlob.objects.exists()


def test_a_model_store_that_does_not_answer_is_a_503_and_stores_no_job(api, personas, tiny_checkpoint_path, settings) -> None:
    from config.object_storage import ObjectStorageConfig, object_storages
    from tests.harness import free_port

    unreachable = ObjectStorageConfig(
        bucket="gone", endpoint_url=f"http://127.0.0.1:{free_port()}", region="us-east-1", access_key="k", secret_key="s",
    )
    settings.STORAGES = {**settings.STORAGES, "models": object_storages(unreachable)["models"]}
    before = Job.objects.count()
    native = api("alice").post("/api/v1/jobs", BODY)
    assert native.status_code == 503 and "model store does not answer" in native.json()["error"]
    sdapi = api("alice").post("/sdapi/v1/txt2img", BODY)
    assert sdapi.status_code == 503 and sdapi.json()["error"] == "ServiceUnavailable"
    assert Job.objects.count() == before  # nothing half-submitted
