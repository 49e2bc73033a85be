"""The FileBrowser's routes (`/api/v1/files/…`, `/files/`) reach only the caller's own areas:
no URL names another member's home or another team's folder, every outsider gets the same 404 as
for a file that does not exist, writes need the right role (and CSRF with a session), and no
answer names a server path."""

from __future__ import annotations

import json
import shutil

import pytest
from django.conf import settings
from django.test import Client

pytestmark = pytest.mark.django_db

ALICES = "private/plan.txt"


@pytest.fixture
def alices_file(personas):
    from tenants.filespace import resolve_place

    root = resolve_place(personas["alice"], "home", "").root
    (root / "private").mkdir(exist_ok=True)
    (root / ALICES).write_bytes(b"alice's plan")
    team = settings.DATA_DIR / "tenants" / "studio-a" / "models" / "Lora"
    team.mkdir(parents=True, exist_ok=True)
    (team / "studio-a-style.safetensors").write_bytes(b"team weights")
    yield root / ALICES
    shutil.rmtree(root / "private", ignore_errors=True)
    (team / "studio-a-style.safetensors").unlink(missing_ok=True)


def _call(client: Client, method: str, path: str, token: str | None = None, body: dict | None = None, **extra):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    if method == "GET":
        return client.get(path, **headers, **extra)
    return client.generic(method, path, json.dumps(body or {}), content_type="application/json", **headers, **extra)


CALLS = (
    ("GET", f"home/{ALICES}", None), ("GET", "home/private", None), ("GET", "home/private?zip=1", None),
    ("POST", f"home/{ALICES}", {"action": "move", "to": "stolen.txt"}),
    ("POST", "home/private/sub", {"action": "mkdir"}), ("DELETE", f"home/{ALICES}", None),
    ("DELETE", "home/private", None),
)


def test_outsiders_get_the_404_of_a_missing_file_for_alices_by_token_and_session(client, all_tokens, outsiders,
                                                                                  alices_file) -> None:
    for name, user in outsiders.items():
        for method, path, body in CALLS:
            response = _call(client, method, f"/api/v1/files/{path}", all_tokens[name], body)
            absent = _call(client, method, f"/api/v1/files/{path.replace('private', 'nothing')}", all_tokens[name], body)
            assert response.status_code == 404, f"{name}: {method} {path}: {response.status_code}"
            assert response.content.replace(b"private", b"?") == absent.content.replace(b"nothing", b"?")
        client.force_login(user)
        assert client.get(f"/api/v1/files/home/{ALICES}").status_code == 404
        assert client.get("/files/", {"area": "home", "path": "private"}).status_code == 404
        client.logout()
    assert alices_file.read_bytes() == b"alice's plan"
    assert not list(settings.DATA_DIR.glob("users/*/stolen.txt"))


def test_the_team_area_is_always_the_callers_own_team(client, all_tokens, alices_file) -> None:
    for name in ("charlie", "dana"):  # studio-b's member and admin
        response = _call(client, "GET", "/api/v1/files/team/models/Lora/studio-a-style.safetensors", all_tokens[name])
        assert response.status_code == 404, name
        listing = _call(client, "GET", "/api/v1/files/team/models/Lora", all_tokens[name]).json()
        assert "studio-a-style.safetensors" not in json.dumps(listing)
    dana_writes = _call(client, "DELETE", "/api/v1/files/team/models/Lora/studio-a-style.safetensors", all_tokens["dana"])
    assert dana_writes.status_code == 404  # dana administers studio-b's folder, where there is no such file
    assert (settings.DATA_DIR / "tenants" / "studio-a" / "models" / "Lora" / "studio-a-style.safetensors").exists()


def test_a_member_writing_into_public_or_a_member_into_the_team_is_403_and_nothing_is_written(client, tokens,
                                                                                             personas) -> None:
    before = sorted(p.name for p in settings.ATELIER_PUBLIC_MODEL_DIRS["Lora"].iterdir()) \
        if settings.ATELIER_PUBLIC_MODEL_DIRS["Lora"].exists() else []
    for name in ("alice", "bob", "charlie"):
        refused = _call(client, "POST", "/api/v1/files/public/Lora/mine", tokens[name], {"action": "mkdir"})
        assert refused.status_code == 403 and "operators" in refused.json()["error"], name
    refused = _call(client, "POST", "/api/v1/files/team/models/Lora/mine", tokens["bob"], {"action": "mkdir"})
    assert refused.status_code == 403 and "team's admins" in refused.json()["error"]
    assert sorted(p.name for p in settings.ATELIER_PUBLIC_MODEL_DIRS["Lora"].iterdir()) == before


def test_anonymous_callers_are_refused_on_every_method_and_the_page_sends_them_to_sign_in(client, alices_file) -> None:
    for method in ("GET", "POST", "DELETE"):
        for path in ("/api/v1/files/home/", f"/api/v1/files/home/{ALICES}", "/api/v1/files/public/Lora"):
            assert _call(client, method, path, body={"action": "mkdir"}).status_code == 401, (method, path)
    page = client.get("/files/")
    assert page.status_code == 302 and page["Location"].startswith(settings.LOGIN_URL)
    assert alices_file.exists()


def test_session_writes_need_the_csrf_token(personas, alices_file) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(personas["alice"])
    for method, path, body in CALLS[3:]:
        response = _call(browser, method, f"/api/v1/files/{path}", body=body)
        assert response.status_code == 403 and "CSRF" in response.json()["error"], (method, path)
    assert alices_file.read_bytes() == b"alice's plan"


def test_no_answer_names_a_server_path(client, tokens, alices_file, tmp_path) -> None:
    (alices_file.parent / "out").symlink_to(tmp_path)
    for path in ("home/../x", "home/out/x", "home/nothing/deeper", "public/secrets/x", "etc/passwd", "home/private/out",
                 "home/%252e%252e/x", f"home/{ALICES}/below"):
        for method in ("GET", "POST", "DELETE"):
            response = _call(client, method, f"/api/v1/files/{path}", tokens["alice"], {"action": "mkdir"})
            assert 400 <= response.status_code < 500, (method, path, response.status_code)
            text = response.content.decode()
            assert str(settings.DATA_DIR) not in text and str(tmp_path) not in text, (method, path, text)
