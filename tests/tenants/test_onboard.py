"""Operators in Django admin: "Create a tenant" (one form, `tenant_onboard`), plans with their
effective-dated prices, and the audit of every operator write; the audit log is read-only."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from tenants.models import AuditEntry, Membership, Plan, PlanPrice, Tenant, TenantPlan
from tenants.selectors import plan_for_tenant, token_user

pytestmark = pytest.mark.django_db

ONBOARD = "/admin/tenants/tenant/onboard/"
GOOD = {"slug": "studio-c", "name": "Studio C", "time_zone": "Asia/Tokyo", "admin_username": "carol",
        "admin_email": "carol@example.com", "admin_password": "carol-s3cret"}


@pytest.fixture
def operator(client, personas) -> Client:
    client.force_login(personas["admin"])
    return client


@pytest.fixture
def plan() -> Plan:
    return Plan.objects.create(slug="studio", name="Studio", currency="JPY")


def test_the_tenants_list_links_the_form_and_it_onboards_a_tenant_in_one_go(operator, personas, plan) -> None:
    assert ONBOARD in operator.get("/admin/tenants/tenant/").content.decode()
    assert operator.get(ONBOARD).status_code == 200
    response = operator.post(ONBOARD, {**GOOD, "plan": plan.pk, "with_token": "on"})
    page = response.content.decode()
    assert response.status_code == 200 and "no-store" in response["Cache-Control"] and 'id="onboarded"' in page
    raw = re.search(r'id="new-token">(atl_[A-Za-z0-9_-]+)<', page)[1]

    tenant = Tenant.objects.get(slug="studio-c")
    assert (tenant.name, tenant.time_zone, plan_for_tenant(tenant)) == ("Studio C", "Asia/Tokyo", plan)
    carol = get_user_model().objects.get(username="carol")
    assert carol.membership.tenant == tenant and carol.membership.role == Membership.Role.ADMIN
    assert carol.email == "carol@example.com" and not carol.is_staff
    assert Client().login(username="carol", password="carol-s3cret") and token_user(raw) == carol
    assert raw not in operator.get(ONBOARD).content.decode()  # shown once

    entry = AuditEntry.objects.get(action="tenant.onboard")
    assert (entry.actor, entry.tenant, entry.target) == (personas["admin"], tenant, "tenant studio-c")
    assert entry.after == {"slug": "studio-c", "name": "Studio C", "time_zone": "Asia/Tokyo", "plan": "studio",
                           "admin": "carol", "token": True}

    carol_client = Client()
    carol_client.force_login(carol)
    assert carol_client.get("/team/").status_code == 200  # her team's admin, from the first sign-in


@pytest.mark.parametrize(("change", "field"), [
    ({"slug": "studio-a"}, "slug"),  # taken
    ({"slug": "no spaces"}, "slug"),
    ({"time_zone": "Mars/Olympus"}, "time_zone"),
    ({"admin_username": "alice"}, "admin_username"),  # taken
    ({"admin_username": "../x"}, "admin_username"),
    ({"admin_email": "nope"}, "admin_email"),
    ({"admin_password": "short"}, "admin_password"),
])
def test_bad_input_re_renders_the_form_naming_the_field_and_creates_nothing(operator, change, field) -> None:
    tenants, users = Tenant.objects.count(), get_user_model().objects.count()
    response = operator.post(ONBOARD, {**GOOD, **change})
    page = response.content.decode()
    assert response.status_code == 400
    row = re.search(rf'<div class="form-row errors" data-field="{field}">(.*?)</div>', page, re.S)
    assert row and "errorlist" in row[1], page
    assert (Tenant.objects.count(), get_user_model().objects.count()) == (tenants, users)
    assert not AuditEntry.objects.filter(action="tenant.onboard").exists()


def test_only_operators_onboard(client, personas) -> None:
    client.force_login(personas["alice"])  # a tenant admin
    response = client.post(ONBOARD, GOOD)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert not Tenant.objects.filter(slug="studio-c").exists()


def test_a_price_in_effect_is_never_edited_and_prices_keep_the_currencys_decimals(operator, plan) -> None:
    past = PlanPrice.objects.create(plan=plan, effective_from=timezone.now() - timedelta(days=30),
                                    price_per_gpu_hour=Decimal("100"))
    url = f"/admin/tenants/plan/{plan.pk}/change/"
    form = {"slug": "studio", "name": "Studio", "currency": "JPY", "billing_mode": "generation_time",
            "limits": "{}", "allowed_checkpoints": "[]",
            "prices-TOTAL_FORMS": "2", "prices-INITIAL_FORMS": "1", "prices-MIN_NUM_FORMS": "0",
            "prices-MAX_NUM_FORMS": "1000",
            "prices-0-id": str(past.pk), "prices-0-plan": str(plan.pk),
            "prices-0-effective_from_0": timezone.localtime(past.effective_from).strftime("%Y-%m-%d"),
            "prices-0-effective_from_1": timezone.localtime(past.effective_from).strftime("%H:%M:%S"),
            "prices-0-price_per_gpu_hour": "100", "prices-0-price_per_image": "0",
            "prices-0-included_gpu_seconds": "0", "prices-0-included_images": "0", "prices-0-monthly_fee": "0",
            "prices-1-plan": str(plan.pk)}
    page = operator.get(url).content.decode()
    shown = re.search(r'<input[^>]*name="prices-0-price_per_gpu_hour"[^>]*>', page)[0]
    assert "disabled" in shown  # read-only on the page
    deletable = re.search(r'<input[^>]*name="prices-0-DELETE"[^>]*>', page)[0]
    assert "disabled" in deletable
    for attempt in ({"prices-0-price_per_gpu_hour": "80"}, {"prices-0-DELETE": "on"}):
        operator.post(url, {**form, **attempt})  # what is posted for a row in effect is ignored
        past.refresh_from_db()
        assert past.price_per_gpu_hour == Decimal("100")
    assert not AuditEntry.objects.filter(action__in=["admin.planprice.change", "admin.planprice.delete"]).exists()

    later = timezone.localtime(timezone.now() + timedelta(days=10))
    new_row = {"prices-1-effective_from_0": later.strftime("%Y-%m-%d"), "prices-1-effective_from_1": "00:00:00",
               "prices-1-price_per_image": "0", "prices-1-included_gpu_seconds": "0",
               "prices-1-included_images": "0", "prices-1-monthly_fee": "0"}
    earlier = timezone.localtime(timezone.now() - timedelta(days=1))
    backdated = operator.post(url, {**form, **new_row, "prices-1-effective_from_0": earlier.strftime("%Y-%m-%d"),
                                    "prices-1-effective_from_1": earlier.strftime("%H:%M:%S"),
                                    "prices-1-price_per_gpu_hour": "80"})
    assert backdated.status_code == 200 and "starts now or later" in backdated.content.decode()
    assert plan.prices.count() == 1

    yen_cents = operator.post(url, {**form, **new_row, "prices-1-price_per_gpu_hour": "80.5"})
    assert yen_cents.status_code == 200 and "decimal" in yen_cents.content.decode().lower()
    assert plan.prices.count() == 1

    added = operator.post(url, {**form, **new_row, "prices-1-price_per_gpu_hour": "80"})
    assert added.status_code == 302, added.content.decode()[:3000]
    assert list(plan.prices.values_list("price_per_gpu_hour", flat=True)) == [Decimal("80"), Decimal("100")]
    entry = AuditEntry.objects.get(action="admin.planprice.add")
    assert entry.actor_name == "admin" and Decimal(entry.after["price_per_gpu_hour"]) == 80


def test_every_operator_write_in_the_tenants_admin_is_audited(operator, personas, plan) -> None:
    tenant = Tenant.objects.get(slug="studio-a")
    url = f"/admin/tenants/plan/{plan.pk}/change/"
    response = operator.post(url, {"slug": "studio", "name": "Studio Pro", "currency": "JPY",
                                   "billing_mode": "generation_time", "limits": '{"max_steps": 40}',
                                   "allowed_checkpoints": "[]", "prices-TOTAL_FORMS": "0",
                                   "prices-INITIAL_FORMS": "0", "prices-MIN_NUM_FORMS": "0",
                                   "prices-MAX_NUM_FORMS": "1000"})
    assert response.status_code == 302
    entry = AuditEntry.objects.get(action="admin.plan.change")
    assert entry.before["name"] == "Studio" and entry.after["name"] == "Studio Pro"
    assert entry.after["limits"] == {"max_steps": 40} and entry.actor == personas["admin"]

    rule = operator.post("/admin/tenants/modelaccessrule/add/", {"tenant": tenant.pk, "user": personas["bob"].pk,
                                                                "role": "", "kind": "lora", "pattern": "x-*",
                                                                "effect": "deny"})
    assert rule.status_code == 302
    assert AuditEntry.objects.get(action="admin.modelaccessrule.add").tenant == tenant
    both = operator.post("/admin/tenants/modelaccessrule/add/", {"tenant": tenant.pk, "user": personas["bob"].pk,
                                                                "role": "member", "kind": "lora", "pattern": "y",
                                                                "effect": "deny"})
    assert both.status_code == 200  # a member xor a role: the model's constraint, as a form error

    assignment = TenantPlan.objects.create(tenant=tenant, plan=plan, effective_from=timezone.now())
    deleted = operator.post(f"/admin/tenants/tenantplan/{assignment.pk}/delete/", {"post": "yes"})
    assert deleted.status_code in (302, 404)  # TenantPlan has no admin of its own: it is an inline
    rules = operator.post("/admin/tenants/modelaccessrule/", {
        "action": "delete_selected", "_selected_action": [str(pk) for pk in tenant.model_rules.values_list("pk", flat=True)],
        "post": "yes"})
    assert rules.status_code == 302 and not tenant.model_rules.exists()
    assert AuditEntry.objects.get(action="admin.modelaccessrule.delete").before["pattern"] == "x-*"


def test_the_audit_log_is_read_only_for_everyone(operator, personas) -> None:
    operator.post(ONBOARD, GOOD)
    entry = AuditEntry.objects.get(action="tenant.onboard")
    base = "/admin/tenants/auditentry"
    listing = operator.get(f"{base}/")
    assert listing.status_code == 200 and "tenant.onboard" in listing.content.decode()
    assert 'value="delete_selected"' not in listing.content.decode()
    detail = operator.get(f"{base}/{entry.pk}/change/")
    assert detail.status_code == 200 and 'name="_save"' not in detail.content.decode()
    assert operator.get(f"{base}/add/").status_code == 403
    assert operator.post(f"{base}/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert operator.post(f"{base}/{entry.pk}/change/", {"action": "x", "target": "y"}).status_code == 403
    entry.refresh_from_db()
    assert entry.action == "tenant.onboard"


def test_a_tenants_plan_changes_by_a_new_row_from_now_on(operator, personas, plan) -> None:
    tenant = Tenant.objects.get(slug="studio-a")
    current = TenantPlan.objects.create(tenant=tenant, plan=plan, effective_from=timezone.now() - timedelta(days=40))
    other = Plan.objects.create(slug="pro", name="Pro")
    url = f"/admin/tenants/tenant/{tenant.pk}/change/"
    page = operator.get(url).content.decode()
    assert "disabled" in re.search(r'<select[^>]*name="plan_assignments-0-plan"[^>]*>', page)[0]

    def post(starts):
        local = timezone.localtime(starts)
        return operator.post(url, {
            "slug": "studio-a", "name": tenant.name, "share_weight": "1.0", "time_zone": "UTC",
            "plan_assignments-TOTAL_FORMS": "2", "plan_assignments-INITIAL_FORMS": "1",
            "plan_assignments-MIN_NUM_FORMS": "0", "plan_assignments-MAX_NUM_FORMS": "1000",
            "plan_assignments-0-id": str(current.pk), "plan_assignments-0-tenant": str(tenant.pk),
            "plan_assignments-0-plan": str(other.pk),  # ignored: the row is in effect
            "plan_assignments-1-tenant": str(tenant.pk), "plan_assignments-1-plan": str(other.pk),
            "plan_assignments-1-effective_from_0": local.strftime("%Y-%m-%d"),
            "plan_assignments-1-effective_from_1": local.strftime("%H:%M:%S"),
            "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0",
            "memberships-MIN_NUM_FORMS": "0", "memberships-MAX_NUM_FORMS": "1000",
        })

    backdated = post(timezone.now() - timedelta(days=3))
    assert backdated.status_code == 200 and "starts now or later" in backdated.content.decode()
    assert tenant.plan_assignments.count() == 1
    moved = post(timezone.now() + timedelta(days=3))
    assert moved.status_code == 302, moved.content.decode()[:2000]
    assert list(tenant.plan_assignments.values_list("plan__slug", flat=True)) == ["pro", "studio"]
    assert plan_for_tenant(tenant) == plan  # until the new row's date
    entry = AuditEntry.objects.get(action="admin.tenantplan.add")
    assert entry.tenant == tenant and entry.after["plan"] == "Pro"
