"""The API tokens page (`/tokens/`): members create, name, see the last use of and revoke their own
API tokens, through the Django test client on the real URLconf and database. alice and bob are in
studio-a (alice its tenant admin), charlie in studio-b (tests/conftest.py)."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from tenants.models import ApiToken
from tenants.services import token_create

pytestmark = pytest.mark.django_db

TOKEN = re.compile(r'id="new-token">(atl_[A-Za-z0-9_-]+)<')


def test_alice_creates_a_token_shown_once_that_works_until_revoked(client, personas) -> None:
    client.force_login(personas["alice"])
    assert 'id="no-tokens"' in client.get("/tokens/").content.decode()

    created = client.post("/tokens/", {"name": "laptop"})
    assert created.status_code == 200 and created["Cache-Control"] == "no-store"
    raw = TOKEN.search(created.content.decode())[1]
    stored = ApiToken.objects.get(user=personas["alice"])
    assert (stored.name, stored.digest) == ("laptop", hashlib.sha256(raw.encode()).hexdigest())
    assert raw not in str(list(ApiToken.objects.values()))  # stored hashed
    page = client.get("/tokens/")
    assert "no-store" not in page.get("Cache-Control", "")
    row = _row(page.content.decode(), stored)
    assert raw not in page.content.decode() and f"<code>{stored.prefix}…</code>" in row and "laptop" in row
    assert "never" in row and "active" in row

    jobs = client.get("/api/v1/jobs", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert jobs.status_code == 200
    stored.refresh_from_db()
    assert stored.last_used_at is not None
    assert "never" not in _row(client.get("/tokens/").content.decode(), stored)

    revoked = client.post(f"/tokens/{stored.public_id}/revoke/")
    assert revoked.status_code == 200 and "revoked" in revoked.content.decode()
    stored.refresh_from_db()
    assert stored.revoked_at is not None
    row = _row(revoked.content.decode(), stored)
    assert "active" not in row and 'class="revoke"' not in row  # listed as revoked, no button
    assert client.get("/api/v1/jobs", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401
    assert client.post(f"/tokens/{stored.public_id}/revoke/").status_code == 200  # again: nothing changes


def test_last_use_is_written_at_most_once_a_minute(client, personas) -> None:
    token, raw = token_create(user=personas["bob"], name="ci")
    assert client.get("/api/v1/jobs", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    token.refresh_from_db()
    first = token.last_used_at
    assert client.get("/api/v1/jobs", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at == first  # a second call within the minute writes nothing
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now() - timedelta(minutes=2))
    assert client.get("/api/v1/jobs", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at > timezone.now() - timedelta(minutes=1)  # an older last use is refreshed


def test_bob_and_charlie_cannot_see_or_revoke_alices_token(client, personas) -> None:
    token, raw = token_create(user=personas["alice"], name="alices-laptop")
    for name in ("bob", "charlie"):  # bob: her tenant (alice is its admin, he is not); charlie: tenant B
        client.force_login(personas[name])
        page = client.get("/tokens/").content.decode()
        assert "alices-laptop" not in page and token.prefix not in page
        assert client.post(f"/tokens/{token.public_id}/revoke/").status_code == 404, name
        assert client.get(f"/tokens/{token.public_id}/revoke/").status_code == 405, name  # POST only
    _, bobs_raw = token_create(user=personas["bob"], name="bobs")
    by_token = client.post(f"/tokens/{token.public_id}/revoke/", HTTP_AUTHORIZATION=f"Bearer {bobs_raw}")
    assert by_token.status_code == 404
    # Alice, a tenant admin, cannot revoke her member's token here either: each member's own only.
    client.force_login(personas["alice"])
    bobs = ApiToken.objects.get(user=personas["bob"])
    assert client.post(f"/tokens/{bobs.public_id}/revoke/").status_code == 404
    assert "bobs" not in client.get("/tokens/").content.decode()
    token.refresh_from_db()
    bobs.refresh_from_db()
    assert token.revoked_at is None and bobs.revoked_at is None
    assert client.get("/api/v1/jobs", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200


def test_bad_names_re_render_the_form_naming_the_field(client, personas) -> None:
    client.force_login(personas["alice"])
    for name in ("", "   ", "x" * 101):
        response = client.post("/tokens/", {"name": name})
        page = response.content.decode()
        assert response.status_code == 400 and 'data-field="name"' in page, name
        assert "no-store" not in response.get("Cache-Control", "") and not TOKEN.search(page)
    assert client.post("/tokens/", {}).status_code == 400  # no field at all
    assert not ApiToken.objects.filter(user=personas["alice"]).exists()
    assert client.post("/tokens/", {"name": "x" * 100}).status_code == 200  # the longest allowed


def test_sign_in_csrf_and_api_tokens(client, personas, api) -> None:
    anonymous = client.get("/tokens/")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(settings.LOGIN_URL)
    assert client.post("/tokens/", {"name": "x"}).status_code == 302
    assert client.get("/tokens/", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    # A member's API token works as for the API (a header no foreign page can send) ...
    assert api("alice").get("/tokens/").status_code == 200
    # ... while a browser session's POST needs the CSRF token.
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(personas["alice"])
    token, _ = token_create(user=personas["alice"], name="keep")
    assert browser.post("/tokens/", {"name": "other"}).status_code == 403
    assert browser.post(f"/tokens/{token.public_id}/revoke/").status_code == 403
    token.refresh_from_db()
    assert token.revoked_at is None and not ApiToken.objects.filter(name="other").exists()
    # With the form's own CSRF token it goes through.
    page = browser.get("/tokens/").content.decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
    assert browser.post("/tokens/", {"name": "other", "csrfmiddlewaretoken": csrf}).status_code == 200


def test_the_home_page_links_the_tokens_page_instead_of_the_command(client, personas) -> None:
    client.force_login(personas["bob"])
    page = client.get("/").content.decode()
    assert 'href="/tokens/"' in page and "manage.py create_token" not in page


def _row(page: str, token: ApiToken) -> str:
    match = re.search(rf'<tr class="token-row[^"]*" id="token-{re.escape(token.public_id)}">(.*?)</tr>', page, re.DOTALL)
    assert match, f"no row for {token.public_id}"
    return match[1]
