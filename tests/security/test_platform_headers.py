"""Security headers on Django pages (issue #13): a Content-Security-Policy that the platform's
own pages and the admin satisfy (no inline scripts or styles), nosniff and a Referrer-Policy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.django_db

TEMPLATES = Path(__file__).resolve().parents[2] / "frontend" / "templates" / "frontend"
INLINE = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=|\son[a-z]+=", re.IGNORECASE)


def _assert_headers(response) -> str:
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    return response.content.decode()


def test_login_page_sends_csp_and_has_nothing_inline(client):
    body = _assert_headers(client.get("/login/"))
    assert not INLINE.search(body), INLINE.search(body)
    assert "/static/frontend/atelier.css" in body


def test_home_and_team_pages_have_nothing_inline(client, personas):
    client.force_login(personas["alice"])
    for path in ("/", "/team/"):
        body = _assert_headers(client.get(path))
        assert not INLINE.search(body), (path, INLINE.search(body))


def test_admin_pages_send_csp_and_have_nothing_inline(client, personas):
    body = _assert_headers(client.get("/admin/login/"))
    assert not INLINE.search(body)
    client.force_login(personas["admin"])
    for path in ("/admin/", "/admin/auth/user/", f"/admin/auth/user/{personas['alice'].pk}/change/"):
        response = client.get(path)
        assert response.status_code == 200, path
        body = _assert_headers(response)
        assert not INLINE.search(body), (path, INLINE.search(body))


def test_no_platform_template_has_inline_scripts_or_styles():
    # workspace_starting.html is served by the /ui/ proxy, which sends its own headers.
    for template in TEMPLATES.glob("*.html"):
        assert not INLINE.search(template.read_text()), (template.name, INLINE.search(template.read_text()))


def test_the_static_files_the_pages_use_are_found():
    from django.contrib.staticfiles import finders

    for name in ("frontend/atelier.css", "frontend/workspace_starting.css", "frontend/workspace_starting.js"):
        assert finders.find(name), name
