"""Who sees whose usage: a member sees only their own on /usage/ (there is no parameter naming
anyone else), /team/usage/ is the tenant admin's own team only (members and another tenant's
people get 404 or their own team, never studio-a's numbers), and /ops/ is for operators only."""

from __future__ import annotations

from datetime import datetime
from datetime import timezone as dt_timezone

import pytest

from tests.frontend.usage_records import Recorder

pytestmark = pytest.mark.django_db
MONTH = "2026-11"
ALICES, BOBS, CHARLIES = 111.1, 222.2, 555.5  # no sum of two is another


@pytest.fixture
def usage(personas, tiny_checkpoint_path) -> None:
    recorder = Recorder()
    ended = datetime(2026, 11, 10, 12, tzinfo=dt_timezone.utc)
    for name, seconds in (("alice", ALICES), ("bob", BOBS), ("charlie", CHARLIES)):
        recorder.add(personas[name], ended_at=ended, gpu_seconds=seconds, images=1)


def shown(page: str, seconds: float) -> bool:
    """The figure written in a table cell or a chart's tooltip (not a chart coordinate)."""
    text = f"{seconds:,.1f}"
    return f">{text}<" in page or f": {text} GPU-s" in page


def test_a_member_sees_only_their_own_usage(client, personas, usage) -> None:
    for name, own, others in (("alice", ALICES, (BOBS, CHARLIES)), ("bob", BOBS, (ALICES, CHARLIES)),
                              ("charlie", CHARLIES, (ALICES, BOBS))):
        client.force_login(personas[name])
        # parameters naming someone else are not read
        page = client.get("/usage/", {"month": MONTH, "user": "alice", "tenant": "studio-a", "username": "bob"})
        assert page.status_code == 200
        body = page.content.decode()
        assert shown(body, own) and not any(shown(body, seconds) for seconds in others), name


def test_team_usage_is_the_tenant_admins_own_team_only(client, personas, outsiders, usage) -> None:
    client.force_login(personas["alice"])
    body = client.get("/team/usage/", {"month": MONTH}).content.decode()
    assert shown(body, ALICES) and shown(body, BOBS) and not shown(body, CHARLIES)
    for name in ("bob", "charlie"):  # members, in studio-a and studio-b
        client.force_login(outsiders[name])
        assert client.get("/team/usage/", {"month": MONTH}).status_code == 404, name
        assert client.get("/team/usage/", {"month": "bad"}).status_code == 404, name  # before the month is read
    client.force_login(outsiders["dana"])  # studio-b's admin: her own team, never studio-a's
    response = client.get("/team/usage/", {"month": MONTH, "tenant": "studio-a"})
    body = response.content.decode()
    assert response.status_code == 200 and "studio-b" in body and "studio-a" not in body
    assert shown(body, CHARLIES) and not shown(body, ALICES) and not shown(body, BOBS)


def test_only_operators_reach_the_operations_page(client, personas, outsiders, usage) -> None:
    for user in (personas["alice"], *outsiders.values()):  # a tenant admin, members, another tenant's admin
        client.force_login(user)
        for method in (client.get, client.post):
            assert method("/ops/", {"month": MONTH}).status_code == 404, user.username
    client.logout()
    response = client.get("/ops/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    client.force_login(personas["admin"])
    body = client.get("/ops/", {"month": MONTH}).content.decode()
    assert shown(body, ALICES + BOBS) and shown(body, CHARLIES)


def test_the_usage_pages_need_a_sign_in_and_operators_have_no_usage_of_their_own(client, personas) -> None:
    for path in ("/usage/", "/team/usage/", "/ops/"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), path
    client.force_login(personas["admin"])
    assert client.get("/usage/").status_code == 404 and client.get("/team/usage/").status_code == 404
