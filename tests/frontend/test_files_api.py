"""The FileBrowser's JSON API (`/api/v1/files/<area>/<path>`, `frontend/files_api.py` over
`tenants/files.py`) through HTTP: alice works in her home, the team's folder is read by its
members and written by its admins, the public folders are read by everyone and written by
operators, and nobody reaches anyone else's files."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

pytestmark = pytest.mark.django_db


def _home(name: str) -> Path:
    return settings.DATA_DIR / "users" / name


@pytest.fixture(autouse=True)
def fresh_folders():
    """The personas' folders start empty in each test (DATA_DIR lives as long as the test process)."""

    def clear() -> None:
        for folder in ("users/alice", "users/bob", "users/charlie", "tenants/studio-a", "tenants/studio-b"):
            shutil.rmtree(settings.DATA_DIR / folder, ignore_errors=True)
        shutil.rmtree(settings.ATELIER_PUBLIC_MODEL_DIRS["Lora"] / "house-styles", ignore_errors=True)

    clear()
    yield
    clear()


def _names(response) -> dict[str, str]:
    assert response.status_code == 200, response.content
    return {entry["name"]: entry["type"] for entry in response.json()["entries"]}


class Files:
    """`files("alice").get("home/x")`: the API with alice's token."""

    def __init__(self, client: Client, token: str | None) -> None:
        self.client = client
        self.headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}

    def get(self, path: str, **query):
        return self.client.get(f"/api/v1/files/{path}", query, **self.headers)

    def post(self, path: str, body):
        return self.client.post(f"/api/v1/files/{path}", json.dumps(body), content_type="application/json",
                                **self.headers)

    def delete(self, path: str):
        return self.client.delete(f"/api/v1/files/{path}", **self.headers)


@pytest.fixture
def files(client, tokens):
    return lambda name=None: Files(client, tokens[name] if name else None)


@pytest.fixture
def alices_file(files) -> Path:
    assert files("alice").post("home/designs", {"action": "mkdir"}).status_code == 201
    path = _home("alice") / "designs" / "poster.png"
    path.write_bytes(b"alice's poster")
    return path


def _zip_entries(response) -> dict[str, bytes]:
    assert response.status_code == 200, response.content
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    return {info.filename: archive.read(info) for info in archive.infolist()}


def test_alice_browses_makes_renames_moves_downloads_and_deletes_in_her_home(files) -> None:
    alice = files("alice")
    root = alice.get("home/")
    assert root.json()["writable"] is True and root.json()["path"] == ""
    assert {"models", "outputs"} <= set(_names(root))
    created = alice.post("home/designs", {"action": "mkdir"})
    assert created.status_code == 201 and created.json()["path"] == "designs"
    assert (_home("alice") / "designs").stat().st_mode & 0o777 == 0o700
    assert alice.post("home/designs", {"action": "mkdir"}).status_code == 409
    assert alice.post("home/nowhere/deeper", {"action": "mkdir"}).status_code == 404
    (_home("alice") / "designs" / "poster.png").write_bytes(b"\x89PNG poster")
    listing = alice.get("home/designs").json()
    assert listing["entries"] == [{"name": "poster.png", "type": "file", "size": 11,
                                   "modified": listing["entries"][0]["modified"]}]
    download = alice.get("home/designs/poster.png")
    assert download.status_code == 200 and b"".join(download.streaming_content) == b"\x89PNG poster"
    assert download["Content-Type"] == "application/octet-stream" and download["X-Content-Type-Options"] == "nosniff"
    assert download["Content-Disposition"] == 'attachment; filename="poster.png"'
    renamed = alice.post("home/designs/poster.png", {"action": "move", "to": "designs/final.png"})
    assert renamed.status_code == 200 and renamed.json()["path"] == "designs/final.png"
    assert alice.post("home/archive", {"action": "mkdir"}).status_code == 201
    moved = alice.post("home/designs", {"action": "move", "to": "archive/designs-2026"})
    assert moved.status_code == 200
    assert (_home("alice") / "archive" / "designs-2026" / "final.png").read_bytes() == b"\x89PNG poster"
    assert alice.delete("home/archive/designs-2026/final.png").json()["deleted"] is True
    assert alice.delete("home/archive").status_code == 200  # a folder, with what it holds
    assert not (_home("alice") / "archive").exists()
    assert alice.get("home/archive").status_code == 404


def test_a_folder_downloads_as_a_zip_whose_entries_are_its_files(files, alices_file, settings) -> None:
    (alices_file.parent / "sketches").mkdir()
    (alices_file.parent / "sketches" / "one.txt").write_bytes(b"1" * 3000)
    (alices_file.parent / "empty").mkdir()
    (alices_file.parent / "outside-link").symlink_to(settings.DATA_DIR / "users")  # skipped, never followed
    response = files("alice").get("home/designs", zip="1")
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"] == 'attachment; filename="designs.zip"'
    entries = _zip_entries(response)
    assert {name: data for name, data in entries.items() if not name.endswith("/")} == {
        "designs/poster.png": b"alice's poster", "designs/sketches/one.txt": b"1" * 3000}
    assert {name for name in entries if name.endswith("/")} == {"designs/sketches/", "designs/empty/"}
    assert "outside-link" not in json.dumps(files("alice").get("home/designs").json())
    whole_home = _zip_entries(files("alice").get("home/", zip="1"))
    assert whole_home["home/designs/poster.png"] == b"alice's poster"


def test_a_zip_over_the_cap_is_a_413_before_anything_is_sent(files, alices_file, settings) -> None:
    settings.ATELIER_ZIP_MAX_BYTES = 10
    response = files("alice").get("home/designs", zip="1")
    assert response.status_code == 413 and "limit of a zip download" in response.json()["error"]
    assert files("alice").get("home/designs/poster.png", zip="1").status_code == 400  # a file is no folder


def test_built_in_folders_and_the_root_cannot_be_deleted_or_renamed(files) -> None:
    alice = files("alice")
    for path in ("home/models", "home/models/Lora", "home/outputs"):
        refused = alice.delete(path)
        assert refused.status_code == 403 and "built-in" in refused.json()["error"], path
        assert alice.post(path, {"action": "move", "to": "elsewhere"}).status_code == 403, path
    assert alice.delete("home/").status_code == 403
    assert (_home("alice") / "models" / "Lora").is_dir()


def test_moves_refuse_into_itself_onto_an_existing_name_and_across_areas(files, alices_file) -> None:
    alice = files("alice")
    assert alice.post("home/other", {"action": "mkdir"}).status_code == 201
    into_itself = alice.post("home/designs", {"action": "move", "to": "designs/inner"})
    assert into_itself.status_code == 400 and "into itself" in into_itself.json()["error"]
    taken = alice.post("home/designs", {"action": "move", "to": "other"})
    assert taken.status_code == 409 and taken.json()["field"] == "to"
    (_home("alice") / "other" / "poster.png").write_bytes(b"other poster")
    onto_file = alice.post("home/designs/poster.png", {"action": "move", "to": "other/poster.png"})
    assert onto_file.status_code == 409
    assert (_home("alice") / "other" / "poster.png").read_bytes() == b"other poster"  # never overwritten
    across = alice.post("home/designs/poster.png", {"action": "move", "to": "models/Lora/p.png", "to_area": "team"})
    assert across.status_code == 400 and across.json()["field"] == "to_area"
    bad_action = alice.post("home/designs", {"action": "chmod"})
    assert bad_action.status_code == 400 and bad_action.json()["field"] == "action"
    assert alice.post("home/designs", {"action": "move"}).json()["field"] == "to"
    assert alice.post("home/designs", {"action": "move", "to": "../charlie"}).status_code == 400
    assert alices_file.read_bytes() == b"alice's poster"


def test_bob_reads_the_team_folder_and_alice_its_admin_writes_it(files) -> None:
    made = files("alice").post("team/models/Lora/styles", {"action": "mkdir"})
    assert made.status_code == 201
    (settings.DATA_DIR / "tenants" / "studio-a" / "models" / "Lora" / "styles" / "ink.safetensors").write_bytes(b"w")
    team = files("bob").get("team/models/Lora/styles")
    assert _names(team) == {"ink.safetensors": "file"} and team.json()["writable"] is False
    assert files("bob").get("team/models/Lora/styles/ink.safetensors").status_code == 200
    for refused in (files("bob").post("team/models/Lora/mine", {"action": "mkdir"}),
                    files("bob").delete("team/models/Lora/styles/ink.safetensors"),
                    files("bob").post("team/models/Lora/styles", {"action": "move", "to": "models/Lora/x"})):
        assert refused.status_code == 403 and "team's admins" in refused.json()["error"]
    assert "styles" not in _names(files("charlie").get("team/models/Lora"))  # charlie's team is studio-b
    assert files("charlie").get("team/models/Lora/styles/ink.safetensors").status_code == 404


def test_public_folders_are_read_only_to_members_and_writable_by_operators(files, tiny_checkpoint_path) -> None:
    root = files("bob").get("public/")
    assert {"Stable-diffusion", "Lora"} <= set(_names(root)) and root.json()["writable"] is False
    assert settings.ATELIER_TINY_MODEL_NAME in _names(files("charlie").get("public/Stable-diffusion"))
    refused = files("alice").post("public/Lora/alices", {"action": "mkdir"})
    assert refused.status_code == 403 and "operators" in refused.json()["error"]
    assert files("bob").delete(f"public/Stable-diffusion/{settings.ATELIER_TINY_MODEL_NAME}").status_code == 403
    assert tiny_checkpoint_path.exists()
    assert files("admin").post("public/Lora/house-styles", {"action": "mkdir"}).status_code == 201
    assert files("admin").get("public/Lora").json()["writable"] is True
    assert files("admin").post("public/Lora/house-styles", {"action": "move", "to": "VAE/x"}).status_code == 400
    assert files("admin").delete("public/Lora").status_code == 403  # the model folder itself
    assert files("admin").delete("public/Lora/house-styles").status_code == 200
    assert files("admin").get("home/").status_code == 404  # operators have no home


def test_bob_and_charlie_get_404_for_alices_files(files, alices_file) -> None:
    for outsider in ("bob", "charlie"):
        caller = files(outsider)
        assert caller.get("home/designs").status_code == 404
        assert caller.get("home/designs/poster.png").status_code == 404
        assert caller.get("home/designs", zip="1").status_code == 404
        assert caller.delete("home/designs/poster.png").status_code == 404
        assert caller.post("home/designs/poster.png", {"action": "move", "to": "mine.png"}).status_code == 404
        assert caller.post("home/designs/inner", {"action": "mkdir"}).status_code == 404
        assert caller.get("home/../alice/designs/poster.png").status_code == 400
        assert caller.get("alice/designs").status_code == 404  # no area named after a member
    assert alices_file.read_bytes() == b"alice's poster"
    assert not (_home("bob") / "mine.png").exists() and not (_home("charlie") / "mine.png").exists()


def test_anonymous_callers_and_wrong_tokens_are_401(client) -> None:
    for method in ("get", "post", "delete"):
        response = getattr(client, method)("/api/v1/files/home/")
        assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
    wrong = client.get("/api/v1/files/home/", HTTP_AUTHORIZATION="Bearer not-a-token")
    assert wrong.status_code == 401


def test_a_session_reads_and_writes_only_with_the_csrf_token(personas) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(personas["alice"])
    assert browser.get("/api/v1/files/home/").status_code == 200  # reads need no token
    page = browser.get("/files/")
    assert page.status_code == 200
    csrf = browser.cookies["csrftoken"].value
    body = json.dumps({"action": "mkdir"})
    refused = browser.post("/api/v1/files/home/forged", body, content_type="application/json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
    assert browser.delete("/api/v1/files/home/outputs").status_code == 403
    assert not (_home("alice") / "forged").exists()
    made = browser.post("/api/v1/files/home/from-page", body, content_type="application/json", HTTP_X_CSRFTOKEN=csrf)
    assert made.status_code == 201
    assert browser.delete("/api/v1/files/home/from-page", HTTP_X_CSRFTOKEN=csrf).status_code == 200


@pytest.mark.parametrize("path, says", [
    ("home/../bob/outputs", "'..'"),
    ("home/%2e%2e/bob", "'..'"),  # decoded once by the URL: '..'
    ("home/%252e%252e/bob", "percent-encoded"),  # a second encoding
    ("home//etc/passwd", "absolute"),
    ("home/a%01b", "control"),
    ("home/" + "x" * 256, "255 bytes"),
    ("home/a%5Cb", "'\\\\'"),
])
def test_bad_paths_are_refused_with_a_message(files, path, says) -> None:
    for response in (files("alice").get(path), files("alice").post(path, {"action": "mkdir"}),
                     files("alice").delete(path)):
        assert response.status_code == 400, (path, response.content)
        assert says.strip("'").replace("\\\\", "\\") in response.json()["error"], response.json()
    assert not list(settings.DATA_DIR.glob("**/passwd"))


def test_a_nul_byte_in_the_path_is_refused(files) -> None:
    response = files("alice").get("home/a%00b")
    assert response.status_code == 400


def test_symbolic_links_out_are_never_followed(files, personas, tmp_path) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key.txt").write_bytes(b"server secret")
    files("alice").get("home/")  # her folder exists
    (_home("alice") / "escape").symlink_to(secret)
    (_home("alice") / "escape-file").symlink_to(secret / "key.txt")
    (_home("alice") / "bob-home").symlink_to(_home("bob"))
    alice = files("alice")
    for path in ("home/escape", "home/escape/key.txt", "home/escape-file", "home/bob-home"):
        assert alice.get(path).status_code == 403, path
        assert alice.get(path, zip="1").status_code == 403, path
    assert alice.post("home/escape/new", {"action": "mkdir"}).status_code == 403
    assert alice.post("home/outputs", {"action": "move", "to": "escape/outputs"}).status_code in (400, 403)
    assert b"server secret" not in b"".join(alice.get("home/", zip="1").streaming_content)
    assert not {"escape", "escape-file", "bob-home"} & set(_names(alice.get("home/")))
    assert alice.delete("home/escape").status_code == 403  # resolves outside: refused before any walk
    assert (secret / "key.txt").read_bytes() == b"server secret" and not (secret / "new").exists()


def test_a_link_inside_the_home_is_removed_itself_never_its_target(files, alices_file) -> None:
    (_home("alice") / "shortcut").symlink_to(alices_file.parent)
    assert files("alice").get("home/shortcut/poster.png").status_code == 403  # reads never follow a link
    assert files("alice").delete("home/shortcut").status_code == 200
    assert not (_home("alice") / "shortcut").is_symlink() and alices_file.read_bytes() == b"alice's poster"


# --- the page ---------------------------------------------------------------------------------

def test_the_page_lists_a_folder_with_sizes_times_in_the_tenants_zone_and_its_actions(client, personas, files,
                                                                                     alices_file) -> None:
    from tenants.models import Tenant

    Tenant.objects.filter(slug="studio-a").update(time_zone="Asia/Tokyo")
    (alices_file.parent / "big.bin").write_bytes(b"x" * 2_500_000)
    os_time = 1_767_225_600  # 2026-01-01 00:00 UTC: 09:00 in Tokyo
    import os

    os.utime(alices_file, (os_time, os_time))
    client.force_login(personas["alice"])
    page = client.get("/files/", {"area": "home", "path": "designs"})
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-path="designs/poster.png"' in html and "2026-01-01 09:00" in html
    assert "2.4\xa0MB" in html and "14\xa0bytes" in html
    assert 'href="/api/v1/files/home/designs?zip=1"' in html and 'href="/api/v1/files/home/designs/poster.png"' in html
    assert 'id="new-folder-form"' in html and 'data-action="delete"' in html
    assert '<section id="uploads" data-area="home" data-path="designs" data-writable="true"></section>' in html
    assert '<script src="/static/frontend/uploads.js" defer></script>' in html
    assert '<script src="/static/frontend/files.js" defer></script>' in html
    assert "<script>" not in html and " style=" not in html and "onclick" not in html  # the CSP: no inline code
    assert str(settings.DATA_DIR) not in html
    assert 'href="/files/?area=home">My files</a>' in html  # the breadcrumb's first step


def test_the_page_shows_team_and_public_read_only_to_members_and_refusals_with_their_status(client, personas) -> None:
    client.force_login(personas["bob"])
    team = client.get("/files/", {"area": "team", "path": "models"})
    assert team.status_code == 200 and 'id="read-only"' in team.content.decode()
    assert 'data-action="delete"' not in team.content.decode()
    public = client.get("/files/", {"area": "public"})
    assert public.status_code == 200 and "Stable-diffusion" in public.content.decode()
    missing = client.get("/files/", {"area": "home", "path": "no/such"})
    assert missing.status_code == 404 and "does not exist" in missing.content.decode()
    assert client.get("/files/", {"area": "home", "path": "../alice"}).status_code == 400
    client.force_login(personas["admin"])
    operator = client.get("/files/")
    assert operator.status_code == 200 and 'id="area-home"' not in operator.content.decode()


def test_the_page_needs_a_sign_in_and_is_linked_from_home_and_the_header(client, personas) -> None:
    response = client.get("/files/")
    assert response.status_code == 302 and response["Location"].startswith(settings.LOGIN_URL)
    client.force_login(personas["alice"])
    home = client.get("/").content.decode()
    assert 'id="files-link" href="/files/"' in home and '<a href="/files/">Files</a>' in home
