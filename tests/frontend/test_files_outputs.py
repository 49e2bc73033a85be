"""A member's `outputs` folder through the FileBrowser API, the same behaviours whether members'
files lie on the local file system or in S3-compatible object storage (moto's server on loopback,
`s3_storage`): list, download, zip, mkdir, move and delete; on object storage a download is a 302
to a short-lived signed URL that answers the file as an attachment, and the storage use counts
the member's objects."""

from __future__ import annotations

import io
import json
import shutil
import zipfile

import httpx
import pytest
from django.conf import settings
from django.test import Client

from inference.storage import member_file_save

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["local", "s3"])
def backend(request, personas) -> str:
    """Where members' files lie in this test: the local file system, or a fresh bucket."""
    for name in ("alice", "bob", "charlie"):
        shutil.rmtree(settings.DATA_DIR / "users" / name / "outputs", ignore_errors=True)
    if request.param == "s3":
        request.getfixturevalue("s3_storage")
    yield request.param
    for name in ("alice", "bob", "charlie"):
        shutil.rmtree(settings.DATA_DIR / "users" / name / "outputs", ignore_errors=True)


class Files:
    def __init__(self, client: Client, token: str) -> None:
        self.client, self.headers = client, {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    def get(self, path: str, **query):
        return self.client.get(f"/api/v1/files/{path}", query, **self.headers)

    def post(self, path: str, body: dict):
        return self.client.post(f"/api/v1/files/{path}", json.dumps(body), content_type="application/json",
                                **self.headers)

    def delete(self, path: str):
        return self.client.delete(f"/api/v1/files/{path}", **self.headers)


def _download(response) -> tuple[bytes, str, str]:
    """(bytes, content type, disposition) of a download, following a redirect to object storage."""
    if response.status_code == 302:
        assert "X-Amz-Signature=" in response["Location"] and response["Cache-Control"] == "private, no-store"
        fetched = httpx.get(response["Location"])
        assert fetched.status_code == 200
        return fetched.content, fetched.headers["content-type"], fetched.headers["content-disposition"]
    assert response.status_code == 200, response.content
    return b"".join(response.streaming_content), response["Content-Type"], response["Content-Disposition"]


def _names(response) -> dict[str, str]:
    assert response.status_code == 200, response.content
    return {entry["name"]: entry["type"] for entry in response.json()["entries"]}


def test_outputs_list_download_zip_move_and_delete(backend, client, tokens) -> None:
    alice = Files(client, tokens["alice"])
    first = member_file_save("users/alice/outputs/2026-12-07/one.png", b"\x89PNG one")
    member_file_save("users/alice/outputs/2026-12-07/two.png", b"\x89PNG two!")
    assert first == "users/alice/outputs/2026-12-07/one.png"
    assert "outputs" in _names(alice.get("home/"))
    assert _names(alice.get("home/outputs")) == {"2026-12-07": "folder"}
    listing = alice.get("home/outputs/2026-12-07").json()
    assert {entry["name"]: entry["size"] for entry in listing["entries"]} == {"one.png": 8, "two.png": 9}

    data, kind, disposition = _download(alice.get("home/outputs/2026-12-07/one.png"))
    assert (data, kind, disposition) == (b"\x89PNG one", "application/octet-stream", 'attachment; filename="one.png"')
    zipped = alice.get("home/outputs/2026-12-07", zip="1")
    assert zipped.status_code == 200 and zipped["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(b"".join(zipped.streaming_content)))
    assert {info.filename: archive.read(info) for info in archive.infolist()} == {
        "2026-12-07/one.png": b"\x89PNG one", "2026-12-07/two.png": b"\x89PNG two!"}

    assert alice.post("home/outputs/keep", {"action": "mkdir"}).status_code == 201
    assert alice.post("home/outputs/keep", {"action": "mkdir"}).status_code == 409
    assert alice.post("home/outputs/no/deeper", {"action": "mkdir"}).status_code == 404
    assert _names(alice.get("home/outputs/keep")) == {}  # an empty folder (its marker hidden)
    moved = alice.post("home/outputs/2026-12-07/one.png", {"action": "move", "to": "outputs/keep/best.png"})
    assert moved.status_code == 200, moved.content
    taken = alice.post("home/outputs/2026-12-07/two.png", {"action": "move", "to": "outputs/keep/best.png"})
    assert taken.status_code == 409  # never onto an existing name
    assert _download(alice.get("home/outputs/keep/best.png"))[0] == b"\x89PNG one"
    assert alice.get("home/outputs/2026-12-07/one.png").status_code == 404
    renamed = alice.post("home/outputs/2026-12-07", {"action": "move", "to": "outputs/keep/december"})
    assert renamed.status_code == 200, renamed.content
    assert _names(alice.get("home/outputs/keep")) == {"best.png": "file", "december": "folder"}
    assert _download(alice.get("home/outputs/keep/december/two.png"))[0] == b"\x89PNG two!"
    across = alice.post("home/outputs/keep/best.png", {"action": "move", "to": "designs-best.png"})
    assert across.status_code == (400 if backend == "s3" else 200)  # out of the bucket: download and upload

    assert alice.delete("home/outputs/keep/december").json()["deleted"] is True  # a folder, with what it holds
    assert alice.get("home/outputs/keep/december").status_code == 404
    assert alice.delete("home/outputs").status_code == 403  # built-in
    assert alice.delete("home/outputs/nothing-here.png").status_code == 404


def test_a_taken_output_name_is_never_overwritten(backend, personas) -> None:
    from inference.storage import member_file_read

    first = member_file_save("users/alice/outputs/same.png", b"one")
    again = member_file_save("users/alice/outputs/same.png", b"two")
    if backend == "s3":
        assert again != first and member_file_read(first) == b"one" and member_file_read(again) == b"two"
    stored = member_file_save("users/alice/inputs/abc.png", b"content", skip_if_stored=True)
    assert member_file_save("users/alice/inputs/abc.png", b"content", skip_if_stored=True) == stored


def test_the_zip_cap_holds_for_outputs(backend, client, tokens, settings) -> None:
    member_file_save("users/alice/outputs/big/a.png", b"x" * 64)
    settings.ATELIER_ZIP_MAX_BYTES = 10
    response = Files(client, tokens["alice"]).get("home/outputs/big", zip="1")
    assert response.status_code == 413 and "limit of a zip download" in response.json()["error"]


def test_storage_use_counts_the_members_outputs(backend, personas, client, tokens) -> None:
    from tenants.models import Membership
    from tenants.storage_usage import tenant_storage_used, user_storage_used

    alice, bob = personas["alice"], personas["bob"]
    before_alice, before_bob = user_storage_used(alice), user_storage_used(bob)
    tenant = Membership.objects.get(user=alice).tenant
    before_team = tenant_storage_used(tenant)
    member_file_save("users/alice/outputs/sized.png", b"z" * 1000)
    assert user_storage_used(alice) == before_alice + 1000
    assert user_storage_used(bob) == before_bob
    assert tenant_storage_used(tenant) == before_team + 1000
    charlie_tenant = Membership.objects.get(user=personas["charlie"]).tenant
    before_other = tenant_storage_used(charlie_tenant)
    member_file_save("users/charlie/outputs/c.png", b"c" * 10)
    assert tenant_storage_used(charlie_tenant) == before_other + 10 and tenant_storage_used(tenant) == before_team + 1000
    usage = Files(client, tokens["alice"]).get("home/outputs").json()["usage"]
    assert usage["used_bytes"] == before_alice + 1000
