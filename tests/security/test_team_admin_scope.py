"""Who reaches the Team pages of studio-a: its admin alice only. bob (a member of studio-a),
charlie (studio-b), dana (studio-b's admin) and an operator without a team get 404 on every
`/team/…` URL, by session and by API token, and change nothing; every POST needs the CSRF token
with a session; anonymous callers are sent to sign in. The routes come from the real URLconf, so
a team route added later is swept without editing this file."""

from __future__ import annotations

import pytest
from django.test import Client

from tenants.models import ApiToken, AuditEntry, Membership, ModelAccessRule, Tenant
from tenants.services import model_rule_add, token_create
from tests.security.surface import enumerate_routes

pytestmark = pytest.mark.django_db


def team_patterns() -> list[str]:
    """Every served route of the Team pages (`/team/…`), from the real URLconf."""
    return sorted(route.pattern.removeprefix("/") for route in enumerate_routes()
                  if route.protocol == "http" and route.pattern.startswith("/team/"))


@pytest.fixture
def studio_a(personas):
    """studio-a's things a team route may name: bob's page, his token, a rule of the team."""
    tenant = Tenant.objects.get(slug="studio-a")
    token, _ = token_create(user=personas["bob"], name="bobs")
    rule = model_rule_add(actor=personas["alice"], tenant=tenant, kind="checkpoint", pattern="studio-a-only-*",
                          effect="deny", username="bob")
    return {"member": "bob", "api_token_id": token.public_id, "rule_id": rule.public_id, "token": token, "rule": rule}


def urls(values: dict) -> list[str]:
    paths = []
    for pattern in team_patterns():
        path = "/" + pattern
        for name in ("member", "api_token_id", "rule_id"):
            path = path.replace(f"<str:{name}>", values[name])
        assert "<" not in path, path
        paths.append(path)
    return paths


POSTS = {"username": "mallory", "password": "long-enough", "access": "password", "role": "admin",
         "max_steps": "1", "member": "bob", "name": "stolen", "kind": "lora", "pattern": "x", "effect": "allow"}


def snapshot_state() -> tuple:
    return (
        list(Membership.objects.order_by("pk").values_list("user__username", "role", "limits")),
        list(ApiToken.objects.order_by("pk").values_list("name", "revoked_at")),
        list(ModelAccessRule.objects.order_by("pk").values_list("pattern", "effect")),
        AuditEntry.objects.count(),
    )


def test_every_team_route_is_swept() -> None:
    assert {"team/", "team/members/<str:member>/", "team/audit/", "team/rules/<str:rule_id>/delete/"} <= set(team_patterns())


def test_members_other_teams_admins_and_operators_get_404_on_every_team_route(client, personas, outsiders,
                                                                              all_tokens, studio_a) -> None:
    """bob, charlie and an operator get 404 on every team URL; dana (an admin, of studio-b) on every URL
    that names something of studio-a (her own team's pages are hers: the next test)."""
    before = snapshot_state()
    people = {"bob": personas["bob"], "charlie": personas["charlie"], "admin": personas["admin"], "dana": outsiders["dana"]}
    for name, user in people.items():
        for path in urls(studio_a):
            if name == "dana" and path.count("/") <= 3:  # /team/, /team/jobs/, …: her own team's
                continue
            for method in ("get", "post"):
                # by API token
                response = getattr(client, method)(path, POSTS if method == "post" else None,
                                                   HTTP_AUTHORIZATION=f"Bearer {all_tokens[name]}")
                assert response.status_code in (404, 405), f"{name} (token) {method} {path}: {response.status_code}"
                # by session
                client.force_login(user)
                response = getattr(client, method)(path, POSTS if method == "post" else None)
                assert response.status_code in (404, 405), f"{name} (session) {method} {path}: {response.status_code}"
                client.logout()
    assert snapshot_state() == before


def test_dana_cannot_reach_studio_a_through_her_own_team_pages(client, outsiders, studio_a) -> None:
    """studio-b's admin naming studio-a's member, token or rule in her own forms: 404, nothing changes."""
    before = snapshot_state()
    client.force_login(outsiders["dana"])
    assert client.get("/team/").status_code == 200  # her own team
    for path, post in (("/team/tokens/", {"member": "bob", "name": "stolen"}),
                       ("/team/rules/", {"member": "bob", "kind": "lora", "pattern": "x", "effect": "allow"}),
                       ("/team/members/bob/", {"role": "member"}),
                       ("/team/members/bob/remove/", {}),
                       (f"/team/tokens/{studio_a['api_token_id']}/revoke/", {}),
                       (f"/team/rules/{studio_a['rule_id']}/delete/", {})):
        assert client.post(path, post).status_code == 404, path
    page = client.get("/team/").content.decode() + client.get("/team/audit/").content.decode()
    page += client.get("/team/jobs/").content.decode() + client.get("/team/rules/").content.decode()
    for name in ("bob", "alice", "studio-a-only-*"):
        assert name not in page, name
    assert snapshot_state() == before


def test_anonymous_callers_are_sent_to_sign_in(studio_a) -> None:
    for path in urls(studio_a):
        for method in ("get", "post"):
            response = getattr(Client(), method)(path)
            assert response.status_code in (302, 405), f"{method} {path}"
            if response.status_code == 302:
                assert response["Location"].startswith("/login/"), path


def test_every_post_needs_the_csrf_token_with_a_session(personas, studio_a) -> None:
    before = snapshot_state()
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(personas["alice"])
    for path in urls(studio_a):
        response = browser.post(path, POSTS)
        assert response.status_code in (403, 405), f"POST {path} without CSRF: {response.status_code}"
    assert snapshot_state() == before
    page = browser.get("/team/members/bob/")
    assert page.status_code == 200 and "csrfmiddlewaretoken" in page.content.decode()


def test_the_invitation_page_is_public_but_needs_csrf_and_a_live_link(personas) -> None:
    browser = Client(enforce_csrf_checks=True)
    assert browser.get("/invite/inv_nothing/").status_code == 404
    assert browser.post("/invite/inv_nothing/", {"password": "x"}).status_code == 403
