"""The Team pages (`/team/…`, `/invite/<token>/`): a tenant admin manages their team in the browser,
through the Django test client on the real URLconf and database. alice is studio-a's admin, bob a
member, charlie in studio-b (tests/conftest.py). Each action is checked for its effect, its audit
entry (before/after) and, for bad input, a 400 that re-renders the form naming the field."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from a1111.errors import Forbidden
from frontend.member_services import language_set
from inference.models import Job
from tenants.models import ApiToken, AuditEntry, Invitation, Membership, ModelAccessRule, Plan, Tenant, TenantPlan
from tenants.selectors import token_user
from tenants.services import member_remove, member_role_set, model_rule_add, token_create

pytestmark = pytest.mark.django_db

TOKEN = re.compile(r'id="new-token">(atl_[A-Za-z0-9_-]+)<')
INVITATION = re.compile(r'id="invitation-url">https?://[^/]+(/invite/[A-Za-z0-9_-]+/)<')


def field_error(page: str, field: str) -> str:
    """The message the page shows for `field` ("" if none), unescaped."""
    match = re.search(rf'data-field="{re.escape(field)}">([^<]*)<', page)
    return html.unescape(match[1]) if match else ""


def last_audit(action: str) -> AuditEntry:
    return AuditEntry.objects.filter(action=action).latest("pk")


@pytest.fixture
def alice_client(client, personas) -> Client:
    client.force_login(personas["alice"])
    return client


@pytest.fixture
def plan(personas) -> Plan:
    plan = Plan.objects.create(slug="studio", name="Studio", limits={"max_steps": 50, "user_images_per_day": 100})
    TenantPlan.objects.create(tenant=Tenant.objects.get(slug="studio-a"), plan=plan,
                              effective_from=timezone.now() - timedelta(days=1))
    return plan


def test_the_team_page_lists_members_and_links_the_usage_and_bill_pages(alice_client, personas) -> None:
    page = alice_client.get("/team/").content.decode()
    for link in ('href="/team/usage/"', 'href="/team/bill/"', 'href="/team/audit/"', 'href="/team/jobs/"',
                 'href="/team/rules/"', 'href="/team/members/bob/"'):
        assert link in page, link
    assert "charlie" not in page
    language_set(user=personas["alice"], language="ja")
    page = alice_client.get("/team/members/bob/").content.decode()
    assert "メンバー" in page and "上限を保存" in page and "監査ログ" in page


def test_an_admin_adds_a_member_with_an_initial_password(alice_client, personas) -> None:
    response = alice_client.post("/team/", {"username": "erin", "email": "erin@example.com", "role": "member",
                                            "access": "password", "password": "erin-s3cret"})
    assert response.status_code == 200 and "erin" in response.content.decode()
    erin = get_user_model().objects.get(username="erin")
    assert erin.membership.tenant.slug == "studio-a" and erin.membership.role == "member"
    assert Client().login(username="erin", password="erin-s3cret")
    entry = last_audit("member.add")
    assert (entry.actor, entry.tenant.slug, entry.target) == (personas["alice"], "studio-a", "member erin")
    assert entry.before is None and entry.after["role"] == "member" and entry.after["invited"] is False
    assert "erin-s3cret" not in str(entry.after)


@pytest.mark.parametrize(("post", "field"), [
    ({"username": "bob", "password": "long-enough"}, "username"),  # taken
    ({"username": "../etc", "password": "long-enough"}, "username"),
    ({"username": "", "password": "long-enough"}, "username"),
    ({"username": "erin", "email": "not-an-address", "password": "long-enough"}, "email"),
    ({"username": "erin", "role": "owner", "password": "long-enough"}, "role"),
    ({"username": "erin", "password": ""}, "password"),
    ({"username": "erin", "password": "short"}, "password"),
])
def test_bad_input_re_renders_the_add_form_naming_the_field(alice_client, post, field) -> None:
    response = alice_client.post("/team/", {"access": "password", "email": "", "role": "member", **post})
    page = response.content.decode()
    assert response.status_code == 400 and field_error(page, field), page
    assert 'id="add-member-form"' in page and (not post["password"] or f'value="{post["password"]}"' not in page)
    assert not get_user_model().objects.filter(username="erin").exists()
    assert not AuditEntry.objects.filter(action="member.add").exists()


def test_an_invitation_link_works_once_and_signs_the_member_in(alice_client, personas) -> None:
    response = alice_client.post("/team/", {"username": "erin", "email": "erin@example.com", "role": "member",
                                            "access": "invite", "password": ""})
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    link = INVITATION.search(response.content.decode())[1]
    assert link not in alice_client.get("/team/").content.decode()  # shown once
    invitation = Invitation.objects.get(user__username="erin")
    assert link.split("/")[2] not in str(list(Invitation.objects.values()))  # stored hashed
    assert timedelta(days=6, hours=23) < invitation.expires_at - timezone.now() <= timedelta(days=7)
    assert not get_user_model().objects.get(username="erin").has_usable_password()
    assert last_audit("invitation.create").target == "member erin"

    invitee = Client()
    page = invitee.get(link)
    assert page.status_code == 200 and "erin" in page.content.decode()
    mismatch = invitee.post(link, {"password": "erin-s3cret", "password_again": "other-one"})
    assert mismatch.status_code == 400 and field_error(mismatch.content.decode(), "password_again")
    short = invitee.post(link, {"password": "short", "password_again": "short"})
    assert short.status_code == 400 and field_error(short.content.decode(), "password")
    done = invitee.post(link, {"password": "erin-s3cret", "password_again": "erin-s3cret"})
    assert done.status_code == 200 and 'id="invite-accepted"' in done.content.decode()
    assert invitee.get("/").status_code == 200  # signed in
    assert Client().login(username="erin", password="erin-s3cret")
    entry = last_audit("invitation.accept")
    assert entry.actor_name == "erin" and entry.after["accepted_at"]

    again = Client().post(link, {"password": "other-pass", "password_again": "other-pass"})
    assert again.status_code == 404 and 'id="invite-gone"' in again.content.decode()
    assert Client().login(username="erin", password="erin-s3cret")  # unchanged


@pytest.mark.parametrize("link", ["/invite/x/", "/invite/inv_unknown/", "/invite/%00/", "/invite/" + "a" * 500 + "/"])
def test_unknown_invitation_links_are_a_clear_404(client, personas, link) -> None:
    for response in (client.get(link), client.post(link, {"password": "long-enough", "password_again": "long-enough"})):
        assert response.status_code in (400, 404)


def test_an_expired_invitation_is_a_404(alice_client) -> None:
    response = alice_client.post("/team/", {"username": "erin", "role": "member", "access": "invite"})
    link = INVITATION.search(response.content.decode())[1]
    Invitation.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    page = Client().get(link)
    assert page.status_code == 404 and 'id="invite-gone"' in page.content.decode()


def test_removing_a_member_deactivates_them_revokes_tokens_and_keeps_their_jobs(alice_client, api, personas,
                                                                                tiny_checkpoint_path) -> None:
    job = api("bob").post("/api/v1/jobs", {"prompt": "a cat", "steps": 2, "width": 64, "height": 64})
    assert job.status_code == 201
    token, raw = token_create(user=personas["bob"], name="laptop")
    response = alice_client.post("/team/members/bob/remove/")
    assert response.status_code == 200 and "bob removed" in response.content.decode()
    bob = get_user_model().objects.get(username="bob")
    assert not bob.is_active and not Membership.objects.filter(user=bob).exists()
    assert token_user(raw) is None and ApiToken.objects.get(pk=token.pk).revoked_at is not None
    assert Job.objects.filter(owner=bob).count() == 1  # kept
    assert not Client().login(username="bob", password="pw-bob")
    entry = last_audit("member.remove")
    assert entry.before["role"] == "member" and entry.after["is_active"] is False and entry.after["tokens_revoked"] >= 1
    assert alice_client.get("/team/members/bob/").status_code == 404


def test_an_admin_cannot_remove_herself_or_the_last_admin(alice_client, personas) -> None:
    response = alice_client.post("/team/members/alice/remove/")
    assert response.status_code == 400 and "yourself" in field_error(response.content.decode(), "member")
    with pytest.raises(Forbidden, match="last admin"):
        member_remove(actor=personas["admin"], tenant=Tenant.objects.get(slug="studio-a"), username="alice")
    assert Membership.objects.filter(user=personas["alice"]).exists() and personas["alice"].is_active
    assert not AuditEntry.objects.filter(action="member.remove").exists()


def test_an_admin_sets_roles_but_never_demotes_the_last_admin(alice_client, personas) -> None:
    response = alice_client.post("/team/members/alice/", {"role": "member"})
    assert response.status_code == 400 and "last admin" in field_error(response.content.decode(), "role")
    assert Membership.objects.get(user=personas["alice"]).role == "admin"

    assert alice_client.post("/team/members/bob/", {"role": "admin"}).status_code == 200
    assert Membership.objects.get(user=personas["bob"]).role == "admin"
    entry = last_audit("member.role")
    assert (entry.target, entry.before, entry.after) == ("member bob", {"role": "member"}, {"role": "admin"})
    bad = alice_client.post("/team/members/bob/", {"role": "owner"})
    assert bad.status_code == 400 and field_error(bad.content.decode(), "role")
    member_role_set(actor=personas["bob"], tenant=Tenant.objects.get(slug="studio-a"), username="alice", role="member")
    assert Membership.objects.get(user=personas["alice"]).role == "member"


def test_member_limits_are_held_within_the_plan(alice_client, personas, plan) -> None:
    page = alice_client.get("/team/members/bob/").content.decode()
    assert 'name="max_steps"' in page and "≤ 50" in page and "≤ 100" in page

    above = alice_client.post("/team/members/bob/", {"max_steps": "80", "user_images_per_day": ""})
    text = field_error(above.content.decode(), "max_steps")
    assert above.status_code == 400 and "80 is above the plan's 50" in text, text
    assert 'value="80"' in above.content.decode()  # the form keeps what was typed
    assert Membership.objects.get(user=personas["bob"]).limits == {}

    for value, field in (("abc", "max_steps"), ("-1", "max_steps"), ("1.5", "max_steps")):
        bad = alice_client.post("/team/members/bob/", {field: value})
        assert bad.status_code == 400 and field_error(bad.content.decode(), field), value

    saved = alice_client.post("/team/members/bob/", {"max_steps": "30", "user_gpu_seconds_per_day": "12.5",
                                                     "tenant_images_per_day": "1"})  # not a member key: ignored
    assert saved.status_code == 200
    assert Membership.objects.get(user=personas["bob"]).limits == {"user_gpu_seconds_per_day": 12.5, "max_steps": 30}
    entry = last_audit("limits.set")
    assert (entry.before, entry.after) == ({"limits": {}}, {"limits": {"user_gpu_seconds_per_day": 12.5, "max_steps": 30}})

    cleared = alice_client.post("/team/members/bob/", {"max_steps": ""})  # blank: the plan's; others unchanged
    assert cleared.status_code == 200
    assert Membership.objects.get(user=personas["bob"]).limits == {"user_gpu_seconds_per_day": 12.5}


def test_model_rules_for_a_member_and_a_role(alice_client, personas) -> None:
    added = alice_client.post("/team/rules/", {"member": "bob", "kind": "checkpoint", "pattern": "sdxl-*",
                                               "effect": "deny"})
    assert added.status_code == 200 and "sdxl-*" in added.content.decode()
    rule = ModelAccessRule.objects.get(user=personas["bob"])
    assert (rule.kind, rule.pattern, rule.effect, rule.role) == ("checkpoint", "sdxl-*", "deny", "")
    assert last_audit("model_rule.add").after["pattern"] == "sdxl-*"

    by_role = alice_client.post("/team/rules/", {"role": "member", "kind": "lora", "pattern": "style-*",
                                                 "effect": "allow"})
    assert by_role.status_code == 200
    assert ModelAccessRule.objects.get(role="member").kind == "lora"
    assert "style-*" in alice_client.get("/team/members/bob/").content.decode()  # his role's rule shown

    for post, field in (({"member": "bob", "kind": "vae", "pattern": "x", "effect": "deny"}, "kind"),
                        ({"member": "bob", "kind": "lora", "pattern": " ", "effect": "deny"}, "pattern"),
                        ({"member": "bob", "kind": "lora", "pattern": "x", "effect": "maybe"}, "effect"),
                        ({"role": "owner", "kind": "lora", "pattern": "x", "effect": "deny"}, "role")):
        bad = alice_client.post("/team/rules/", post)
        assert bad.status_code == 400 and field_error(bad.content.decode(), field), post
    assert ModelAccessRule.objects.count() == 2

    deleted = alice_client.post(f"/team/rules/{rule.public_id}/delete/")
    assert deleted.status_code == 200 and not ModelAccessRule.objects.filter(pk=rule.pk).exists()
    assert last_audit("model_rule.delete").before["pattern"] == "sdxl-*"


def test_an_admin_creates_a_members_token_shown_once_and_revokes_it(alice_client, client, personas) -> None:
    created = alice_client.post("/team/tokens/", {"member": "bob", "name": "render-farm"})
    assert created.status_code == 200 and created["Cache-Control"] == "no-store"
    raw = TOKEN.search(created.content.decode())[1]
    token = ApiToken.objects.get(name="render-farm")
    assert token.user == personas["bob"] and token_user(raw) == personas["bob"]
    page = alice_client.get("/team/members/bob/").content.decode()
    assert raw not in page and "render-farm" in page and f"{token.prefix}…" in page
    assert last_audit("token.create").after["name"] == "render-farm"

    empty = alice_client.post("/team/tokens/", {"member": "bob", "name": "  "})
    assert empty.status_code == 400 and field_error(empty.content.decode(), "name")
    assert alice_client.post("/team/tokens/", {"member": "charlie", "name": "x"}).status_code == 404

    bobs_own, bobs_raw = token_create(user=personas["bob"], name="laptop")  # made by bob on /tokens/
    for revoked in (token, bobs_own):
        response = alice_client.post(f"/team/tokens/{revoked.public_id}/revoke/")
        assert response.status_code == 200
        revoked.refresh_from_db()
        assert revoked.revoked_at is not None
    assert token_user(raw) is None and token_user(bobs_raw) is None
    entry = last_audit("token.revoke")
    assert entry.before["revoked_at"] is None and entry.after["revoked_at"]


def test_the_team_jobs_and_audit_log_in_the_tenants_time_zone(alice_client, api, personas,
                                                              tiny_checkpoint_path) -> None:
    Tenant.objects.filter(slug="studio-a").update(time_zone="Asia/Tokyo")
    submitted = api("bob").post("/api/v1/jobs", {"prompt": "a cat", "steps": 2, "width": 64, "height": 64})
    job = Job.objects.get(public_id=submitted.json()["id"])
    charlies = api("charlie").post("/api/v1/jobs", {"prompt": "a dog", "steps": 2, "width": 64, "height": 64})
    page = alice_client.get("/team/jobs/").content.decode()
    tokyo = timezone.localtime(job.created_at, timezone=ZoneInfo("Asia/Tokyo"))
    assert f'id="job-{job.public_id}"' in page and tokyo.strftime("%Y-%m-%d %H:%M:%S") in page
    assert "Asia/Tokyo" in page and charlies.json()["id"] not in page

    alice_client.post("/team/members/bob/", {"role": "admin"})
    model_rule_add(actor=personas["admin"], tenant=Tenant.objects.get(slug="studio-b"), kind="lora",
                   pattern="studio-b-secret", effect="deny", role="member")  # an operator, for studio-b
    audit = alice_client.get("/team/audit/").content.decode()
    assert "member.role" in audit and "member bob" in audit and "studio-b-secret" not in audit


def test_a_new_invitation_link_resets_a_members_password(alice_client, personas) -> None:
    response = alice_client.post("/team/members/bob/invite/")
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    link = INVITATION.search(response.content.decode())[1]
    assert last_audit("invitation.create").target == "member bob"
    done = Client().post(link, {"password": "bob-new-pass", "password_again": "bob-new-pass"})
    assert done.status_code == 200
    assert Client().login(username="bob", password="bob-new-pass")


def test_an_admin_who_demotes_herself_leaves_the_team_pages(alice_client, personas) -> None:
    alice_client.post("/team/members/bob/", {"role": "admin"})
    response = alice_client.post("/team/members/alice/", {"role": "member"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert alice_client.get("/team/").status_code == 404


def test_a_member_removed_loses_the_invitation_link_too(alice_client) -> None:
    response = alice_client.post("/team/", {"username": "erin", "role": "member", "access": "invite"})
    link = INVITATION.search(response.content.decode())[1]
    assert alice_client.post("/team/members/erin/remove/").status_code == 200
    assert Client().get(link).status_code == 404
