"""Who reaches an upload session (`/api/v1/uploads`), and where an upload may write.

bob (alice's team) and charlie (another team) get the same 404 for alice's session as for one that
does not exist, on every method, by token and by session; anonymous callers get 401; a session's
writes need the CSRF token. Uploads go only where the caller may write (`tenants.filespace`):
bad paths are refused before anything is stored, and a link swapped in on the way while the
upload runs is refused when the file is placed, with nothing written outside.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from django.conf import settings
from django.test import Client

from tenants.upload_models import FileUpload
from tests.tenants.upload_helpers import Uploader, sha

pytestmark = pytest.mark.django_db

DATA = b"alice's checkpoint bytes " * 40  # 1,000 bytes
NO_SUCH = "up_NoSuchUpload0000"


@pytest.fixture(autouse=True)
def clean_folders(settings):
    settings.ATELIER_UPLOAD_CHUNK_BYTES = 512
    for folder in ("users", "uploads", "tenants"):
        shutil.rmtree(settings.DATA_DIR / folder, ignore_errors=True)
    yield
    for folder in ("users", "uploads", "tenants"):
        shutil.rmtree(settings.DATA_DIR / folder, ignore_errors=True)


@pytest.fixture
def alices_upload(client, tokens) -> str:
    alice = Uploader(client, tokens["alice"])
    upload_id = alice.start("models/Lora/mine.safetensors", DATA).json()["id"]
    assert alice.put(upload_id, DATA[:512], 0, len(DATA)).status_code == 200
    return upload_id


def _calls(uploader: Uploader, upload_id: str) -> list:
    return [uploader.get(upload_id), uploader.put(upload_id, DATA[512:], 512, len(DATA)), uploader.delete(upload_id)]


def _same(response, absent, upload_id: str) -> bool:
    return (response.status_code, response.content.replace(upload_id.encode(), b"?")) == (
        absent.status_code, absent.content.replace(NO_SUCH.encode(), b"?"))


def test_bob_and_charlie_get_404_for_alices_upload_on_every_method(client, tokens, personas, alices_upload) -> None:
    for name in ("bob", "charlie"):
        outsider = Uploader(client, tokens[name])
        for response, absent in zip(_calls(outsider, alices_upload), _calls(outsider, NO_SUCH), strict=True):
            assert response.status_code == 404, (name, response.content)
            assert _same(response, absent, alices_upload), name
        session = Client()
        session.force_login(personas[name])
        by_session = Uploader(session, None)
        for response in _calls(by_session, alices_upload):
            assert response.status_code == 404, (name, "session", response.content)
    upload = FileUpload.objects.get(public_id=alices_upload)
    assert (upload.offset, upload.state) == (512, "open")
    assert Uploader(client, tokens["alice"]).get(alices_upload).json()["offset"] == 512


def test_anonymous_callers_and_wrong_tokens_are_401(client, alices_upload) -> None:
    for uploader in (Uploader(client, None), Uploader(client, "not-a-token")):
        assert uploader.start("x.bin", DATA).status_code == 401
        assert [r.status_code for r in _calls(uploader, alices_upload)] == [401, 401, 401]
    assert FileUpload.objects.get(public_id=alices_upload).offset == 512


def test_a_session_may_upload_with_the_csrf_token_and_not_without(personas) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(personas["alice"])
    token = "a" * 32
    browser.cookies[settings.CSRF_COOKIE_NAME] = token
    body = json.dumps({"area": "home", "path": "page.bin", "size": len(DATA), "sha256": sha(DATA)})
    refused = browser.post("/api/v1/uploads", data=body, content_type="application/json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
    assert FileUpload.objects.count() == 0
    started = browser.post("/api/v1/uploads", data=body, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert started.status_code == 201, started.content
    upload_id = started.json()["id"]
    assert browser.get(f"/api/v1/uploads/{upload_id}").status_code == 200  # reads need no token
    def put(first: int, **headers):
        return browser.generic("PUT", f"/api/v1/uploads/{upload_id}", data=DATA[first:first + 512],
                               content_type="application/octet-stream",
                               HTTP_CONTENT_RANGE=f"bytes {first}-{min(first + 512, len(DATA)) - 1}/{len(DATA)}",
                               **headers)

    assert put(0).status_code == 403
    assert browser.generic("DELETE", f"/api/v1/uploads/{upload_id}").status_code == 403
    assert put(0, HTTP_X_CSRFTOKEN=token).status_code == 200
    last = put(512, HTTP_X_CSRFTOKEN=token)
    assert last.status_code == 200 and last.json()["state"] == "complete"
    assert (settings.DATA_DIR / "users/alice/page.bin").read_bytes() == DATA


@pytest.mark.parametrize("path", ["../bob/x.bin", "%2e%2e/bob/x.bin", "/etc/x.bin", "a\x00b.bin", "models/\x07.bin",
                                  "a" * 256 + ".bin", "models\\x.bin", "./x.bin"])
def test_bad_paths_are_refused_before_anything_is_stored(client, tokens, path) -> None:
    answer = Uploader(client, tokens["alice"]).start(path, DATA)
    assert answer.status_code == 400 and answer.json()["field"] == "path", answer.content
    assert FileUpload.objects.count() == 0 and not (settings.DATA_DIR / "uploads").exists()


def test_members_write_only_where_they_may(client, tokens) -> None:
    bob, charlie = Uploader(client, tokens["bob"]), Uploader(client, tokens["charlie"])
    assert bob.start("Lora/x.safetensors", DATA, area="public").status_code == 403  # operators' folders
    assert bob.start("models/Lora/x.safetensors", DATA, area="team").status_code == 403  # admins' folder
    assert charlie.start("x.bin", DATA, area="nowhere").status_code == 404
    assert FileUpload.objects.count() == 0


def test_a_link_out_of_the_home_is_refused_at_start_and_when_swapped_in_later(client, tokens, personas) -> None:
    alice = Uploader(client, tokens["alice"])
    charlies = settings.DATA_DIR / "users" / "charlie"
    home = settings.DATA_DIR / "users" / "alice"
    os.symlink(charlies, home / "escape")
    assert alice.start("escape/x.bin", DATA).status_code == 403
    # a folder that is real when the upload starts and a link when it ends
    (home / "later").mkdir()
    upload_id = alice.start("later/x.bin", DATA).json()["id"]
    (home / "later").rmdir()
    os.symlink(charlies, home / "later")
    answer = alice.send(upload_id, DATA, 512)
    assert answer.status_code == 403, answer.content
    assert not (charlies / "x.bin").exists()
    assert alice.get(upload_id).json()["state"] == "failed"
    assert not list((settings.DATA_DIR / "uploads").rglob("*.part"))
