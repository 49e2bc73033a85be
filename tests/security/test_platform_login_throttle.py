"""Login throttling (issue #13): /login/ and /admin/login/ lock an account, and an address,
after ATELIER_LOGIN_FAILURE_LIMIT failures, with a clear 429; operators can unlock; API tokens
are untouched. These tests run with the real limit from config/settings.py."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.management import call_command

pytestmark = pytest.mark.django_db

REAL_DEFAULT_LIMIT = 10  # config/settings.py's ATELIER_LOGIN_FAILURE_LIMIT default


def _login(client, path: str, username: str, password: str, address: str = "203.0.113.7"):
    return client.post(path, {"username": username, "password": password}, REMOTE_ADDR=address)


def _signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_the_real_limit_is_in_force():
    assert settings.AXES_FAILURE_LIMIT == settings.ATELIER_LOGIN_FAILURE_LIMIT == REAL_DEFAULT_LIMIT


def test_login_page_locks_an_account_after_the_limit_even_for_the_right_password(client, personas):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _login(client, "/login/", "alice", "wrong").status_code == 200
    locked = _login(client, "/login/", "alice", "wrong")
    assert locked.status_code == 429

    response = _login(client, "/login/", "alice", "pw-alice")
    assert response.status_code == 429
    assert not _signed_in(client)
    body = response.content.decode()
    assert "Too many sign-in attempts" in body
    assert f"Try again in {settings.ATELIER_LOGIN_COOLOFF_MINUTES:.0f} minutes" in body
    assert "operator" in body and "axes_reset_username" in body
    assert int(response["Retry-After"]) == settings.ATELIER_LOGIN_COOLOFF_MINUTES * 60

    # Per account: another address is refused for alice too.
    assert _login(client, "/login/", "alice", "pw-alice", address="198.51.100.9").status_code == 429


def test_an_address_is_locked_after_failures_against_many_accounts(client, personas):
    for index in range(settings.AXES_FAILURE_LIMIT):
        _login(client, "/login/", f"guess{index}", "wrong")
    assert _login(client, "/login/", "bob", "pw-bob").status_code == 429
    assert not _signed_in(client)
    # bob himself is not locked: from his own address he signs in.
    assert _login(client, "/login/", "bob", "pw-bob", address="198.51.100.9").status_code == 302
    assert _signed_in(client)


def test_admin_login_is_throttled_too(client, personas):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _login(client, "/admin/login/", "admin", "wrong")
    response = _login(client, "/admin/login/", "admin", "pw-admin")
    assert response.status_code == 429
    assert not _signed_in(client)


def test_an_operator_unlocks_an_account(client, personas):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _login(client, "/login/", "alice", "wrong")
    assert _login(client, "/login/", "alice", "pw-alice").status_code == 429

    call_command("axes_reset_username", "alice")
    call_command("axes_reset_ip", "203.0.113.7")
    assert _login(client, "/login/", "alice", "pw-alice").status_code == 302
    assert _signed_in(client)


def test_a_success_resets_the_count(client, personas):
    for _ in range(2):
        for _ in range(settings.AXES_FAILURE_LIMIT - 1):
            assert _login(client, "/login/", "alice", "wrong").status_code == 200
        assert _login(client, "/login/", "alice", "pw-alice").status_code == 302
        client.post("/logout/")


def test_api_tokens_work_for_a_locked_out_member(client, personas, tokens):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _login(client, "/login/", "alice", "wrong")
    assert _login(client, "/login/", "alice", "pw-alice").status_code == 429

    bearer = {"HTTP_AUTHORIZATION": f"Bearer {tokens['alice']}", "REMOTE_ADDR": "203.0.113.7"}
    assert client.get("/api/v1/jobs", **bearer).status_code == 200
    assert client.get("/sdapi/v1/sd-models", **bearer).status_code == 200


def test_client_login_without_a_request_still_works(client, personas):
    # Django's test client and management code call authenticate() without a request.
    assert client.login(username="alice", password="pw-alice")
