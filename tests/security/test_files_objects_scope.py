"""Members' files in S3-compatible object storage (moto's server on loopback) stay their owner's:
alice's outputs are not listable, downloadable, zippable, movable or deletable by bob, charlie or
dana (the 404 of a missing file); bad paths are refused with a 4xx before any storage call; a job's
image redirects to a signed URL only for its owner; signed URLs expire."""

from __future__ import annotations

import json
from urllib.parse import quote

import httpx
import pytest
from django.core.files.storage import default_storage

from inference.storage import member_file_read, member_file_save

pytestmark = pytest.mark.django_db

ALICES = "users/alice/outputs/private/plan.png"


def _call(client, method: str, path: str, token: str, body: dict | None = None):
    return client.generic(method, f"/api/v1/files/{path}", json.dumps(body) if body else "",
                          content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")


CALLS = (
    ("GET", "home/outputs/private/plan.png", None), ("GET", "home/outputs/private", None),
    ("GET", "home/outputs/private?zip=1", None),
    ("POST", "home/outputs/private/plan.png", {"action": "move", "to": "outputs/stolen.png"}),
    ("POST", "home/outputs/private/sub", {"action": "mkdir"}),
    ("DELETE", "home/outputs/private/plan.png", None), ("DELETE", "home/outputs/private", None),
)


def test_outsiders_get_the_404_of_a_missing_file_for_alices_outputs(client, all_tokens, outsiders, s3_server,
                                                                    s3_storage) -> None:
    member_file_save(ALICES, b"alice's plan")
    for name in outsiders:
        for method, path, body in CALLS:
            response = _call(client, method, path, all_tokens[name], body)
            absent = _call(client, method, path.replace("private", "nothing"), all_tokens[name], body)
            assert response.status_code == 404, f"{name}: {method} {path}: {response.status_code}"
            assert "Location" not in response
            assert response.content.replace(b"private", b"?") == absent.content.replace(b"nothing", b"?")
    assert member_file_read(ALICES) == b"alice's plan"
    keys = s3_server.keys(s3_storage)
    assert keys == ["tenants/studio-a/users/alice/outputs/private/plan.png"]  # nothing stolen, made or moved
    alice = _call(client, "GET", "home/outputs/private/plan.png", all_tokens["alice"])
    assert alice.status_code == 302 and httpx.get(alice["Location"]).content == b"alice's plan"


def test_a_signed_url_lives_as_long_as_configured_and_the_bucket_refuses_unsigned_reads(personas, s3_server,
                                                                                      settings) -> None:
    """The URL carries the configured lifetime (`ATELIER_S3_SIGNED_URL_SECONDS`); the object store
    enforces it. moto's server does not refuse an expired URL (it checks no presigned expiry), so
    the expiry itself is the real store's (AWS, OSS, MinIO): what is tested here is what we send."""
    from config.object_storage import object_storages

    bucket = s3_server.bucket_create()
    settings.STORAGES = {**settings.STORAGES, **object_storages(s3_server.storage_config(bucket, signed_url_seconds=1))}
    key = member_file_save(ALICES, b"alice's plan")
    url = default_storage.url(key)
    assert "X-Amz-Expires=1&" in url and "X-Amz-Date=" in url and "X-Amz-Signature=" in url
    assert httpx.get(url.split("?", 1)[0]).status_code == 403  # private: only a signed URL reads


BAD_PATHS = (
    "home/outputs/../x", "home/outputs/%252e%252e/x", "home/outputs/%2e%2e", "home/outputs/a%00b",
    "home/outputs/a%01b", "home/outputs/a%7Fb", f"home/outputs/{'a' * 256}", "home/outputs/a\\b",
)


def test_bad_paths_are_refused_before_any_storage_call(client, tokens, personas, s3_server, settings) -> None:
    """The storage points at a bucket that does not exist: any call to it fails the request (shown
    first with a good path), so a clean 4xx means the path was refused before the storage was asked."""
    from config.object_storage import object_storages

    settings.STORAGES = {**settings.STORAGES, **object_storages(s3_server.storage_config("atelier-no-such-bucket"))}
    with pytest.raises(Exception, match="NoSuchBucket|does not exist"):
        _call(client, "GET", "home/outputs", tokens["alice"])
    for path in BAD_PATHS:
        for method, body in (("GET", None), ("POST", {"action": "mkdir"}), ("DELETE", None)):
            response = _call(client, method, path, tokens["alice"], body)
            assert 400 <= response.status_code < 500, (method, path, response.status_code)
            assert "error" in response.json()
    for to in ("../x", "/etc/passwd", "outputs/a\x00b", "outputs/a\x01b", "outputs/" + "b" * 256, "outputs/%2e%2e/x"):
        response = _call(client, "POST", "home/outputs/x.png", tokens["alice"], {"action": "move", "to": to})
        assert 400 <= response.status_code < 500, (to, response.status_code)
    refused = _call(client, "POST", "public/Lora/mine", tokens["alice"], {"action": "mkdir"})
    assert refused.status_code == 403 and "operators" in refused.json()["error"]


def _finished_job(user, outputs: list[str]) -> str:
    import uuid

    from a1111.generation import parse_generation_request
    from inference.dispatch import dispatch_pending
    from inference.services import job_submit
    from inference.transitions import job_claim, job_succeed, worker_register

    worker = worker_register(name=f"test-{uuid.uuid4().hex[:8]}@host", device="cpu", device_memory_bytes=None)
    job = job_submit(user=user, request=parse_generation_request({"prompt": "x", "steps": 4}))
    dispatch_pending()
    claimed = job_claim(public_id=job.public_id, attempt=1, worker_name=worker.name, total_steps=4)
    assert claimed is not None
    assert job_succeed(job=claimed, attempt=1, outputs=outputs, infotexts=["t"] * len(outputs), gpu_seconds=0.1)
    return job.public_id


def test_a_jobs_image_redirects_to_its_signed_url_for_its_owner_only(api, personas, outsiders, all_tokens, client,
                                                                     s3_storage, tiny_checkpoint_path) -> None:
    key = member_file_save("users/alice/outputs/2026-12-07/job.png", b"\x89PNG job")
    job_id = _finished_job(personas["alice"], [key])
    owner = api("alice").get(f"/api/v1/jobs/{job_id}/images/0")
    assert owner.status_code == 302 and "X-Amz-Signature=" in owner["Location"]
    fetched = httpx.get(owner["Location"])
    assert fetched.content == b"\x89PNG job" and fetched.headers["content-type"] == "image/png"
    for name in outsiders:
        response = client.get(f"/api/v1/jobs/{job_id}/images/0", HTTP_AUTHORIZATION=f"Bearer {all_tokens[name]}")
        assert response.status_code == 404 and "Location" not in response, name
    default_storage.delete(key)
    gone = api("alice").get(f"/api/v1/jobs/{job_id}/images/0")
    assert gone.status_code == 404 and "no longer stored" in gone.json()["error"]
    assert quote(key)  # the key named the member's own output
