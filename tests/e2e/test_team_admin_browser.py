"""Issue 16's team administration in a real Chromium on the real platform (`tests/harness.py`:
daphne over loopback, the demo accounts of `bootstrap_demo`, where alice is studio-a's admin).

* alice, on the Team page, adds a member with an initial password, sets a limit on them and
  creates an API token for them: shown once, then listed by name, and it works on the API.
* The new member signs in with that password, creates their own token on /tokens/, sees it
  listed beside the one their admin made, and revokes it.
* alice opens the team's bill for this month (studio-a on a plan an operator set up before the
  start, with one finished job of hers) and downloads it as CSV: the file's lines are the page's.

Each step is a function of its own. Screenshots go to `artifacts/workspace_browser/`
(ignored by git). Needs Playwright and Chromium, as `tests/e2e/test_workspace_browser.py`, whose
browser fixture and helpers this module shares.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest

from tests.e2e.test_workspace_browser import (  # noqa: F401  (browser, chromium_present: fixtures)
    BROWSER_TEST_MARKS,
    browser,
    chromium_present,
    shot,
    sign_in,
)
from tests.harness import running_platform

pytestmark = BROWSER_TEST_MARKS

MEMBER, MEMBER_PASSWORD = "frank", "frank-pass-2026"


# What an operator sets up (admin: a plan, its price, studio-a on it) and one job of alice's that
# finished this month with its usage record (no worker runs here: the row is written as a worker's
# finish transaction writes it).
BILLING_SETUP = """
from decimal import Decimal
from django.utils import timezone
from inference.models import Job
from tenants.models import Plan, PlanPrice, Tenant, TenantPlan, UsageRecord
from django.contrib.auth import get_user_model
now = timezone.now()
tenant = Tenant.objects.get(slug="studio-a")
plan = Plan.objects.create(slug="team", name="Team", currency="USD")
PlanPrice.objects.create(plan=plan, effective_from=now.replace(year=now.year - 1), price_per_gpu_hour=Decimal("3.60"),
                         price_per_image=Decimal("0.05"), monthly_fee=Decimal("10.00"))
TenantPlan.objects.create(tenant=tenant, plan=plan, effective_from=now.replace(year=now.year - 1))
alice = get_user_model().objects.get(username="alice")
job = Job.objects.create(owner=alice, tenant=tenant, params={}, checkpoint_title="tiny", checkpoint_path="tiny.safetensors",
                         checkpoint_sha256="0" * 64, model_key="k", batch_key="b", status="succeeded", gpu_seconds=100,
                         started_at=now, finished_at=now)
UsageRecord.objects.create(job=job, user=alice, tenant=tenant, kind="txt2img", gpu_seconds=100, images=4,
                           status="succeeded", started_at=now, ended_at=now)
"""


@pytest.fixture(scope="module")
def platform():
    with running_platform(workers=0, before_start=lambda p: p.manage("shell", "-c", BILLING_SETUP)) as running:
        yield running


def admin_adds_a_member(page) -> None:
    page.click("header nav a[href='/team/']")
    page.fill("#add-username", MEMBER)
    page.fill("#add-email", f"{MEMBER}@example.com")
    page.select_option("#add-role", "member")
    page.check("#add-access-password")
    page.fill("#add-password", MEMBER_PASSWORD)
    page.click("#add-member-button")
    assert f"Member {MEMBER} added." in page.locator("#team-message").inner_text()
    shot(page, "60_team_member_added")


def admin_sets_a_limit(page) -> None:
    page.click(f"#roster-{MEMBER} a.member-link")
    page.wait_for_url(re.compile(rf"/team/members/{MEMBER}/$"))
    page.fill("#limit-max_steps", "20")
    page.fill("#limit-user_images_per_day", "abc")
    page.click("#limits-button")  # refused: the form says which field and why
    assert "must be a number" in page.locator('[data-field="user_images_per_day"]').inner_text()
    page.fill("#limit-user_images_per_day", "")
    page.click("#limits-button")
    assert "Saved" in page.locator("#team-message").inner_text()
    page.goto(f"/team/members/{MEMBER}/")  # not a reload: that would post the form again
    assert page.locator("#limit-max_steps").input_value() == "20"
    shot(page, "61_team_member_limit")


def admin_creates_a_token_for_the_member(page) -> str:
    page.fill("#token-name", "render-farm")
    page.click("#create-token-button")
    raw = page.locator("#new-token").inner_text().strip()
    assert raw.startswith("atl_")
    shot(page, "62_team_member_token_once")
    page.goto(f"/team/members/{MEMBER}/")  # shown once: the page lists it by name only
    assert page.locator("#new-token").count() == 0 and raw not in page.content()
    row = page.locator("#member-tokens tr.token-row", has_text="render-farm")
    assert row.count() == 1 and "active" in row.inner_text()
    works = page.request.get("/api/v1/models", headers={"Authorization": f"Bearer {raw}"})
    assert works.status == 200, works.text()
    return raw


def member_manages_their_own_token(browser, platform) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, base_url=platform.base_url)
    page = context.new_page()
    page.goto("/login/")
    page.fill("input[name=username]", MEMBER)
    page.fill("input[name=password]", MEMBER_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/$"))
    page.goto("/tokens/")
    page.fill("#token-name", "laptop")
    page.click("#create-token-button")
    raw = page.locator("#new-token").inner_text().strip()
    assert raw.startswith("atl_")
    names = page.locator("tr.token-row .token-name").all_inner_texts()
    assert "laptop" in names and "render-farm" in names  # theirs and the one their admin made
    shot(page, "63_member_tokens")
    page.locator("tr.token-row", has_text="laptop").locator("button.revoke").click()
    assert "revoked" in page.locator("#tokens-message").inner_text()
    row = page.locator("tr.token-row", has_text="laptop")
    assert "revoked" in (row.get_attribute("class") or "") and row.locator("button.revoke").count() == 0
    assert page.request.get("/api/v1/models", headers={"Authorization": f"Bearer {raw}"}).status == 401
    shot(page, "64_member_token_revoked")
    context.close()


def admin_downloads_the_months_bill_as_csv(page) -> None:
    page.goto("/team/")
    page.click("a[href='/team/bill/']")
    page.wait_for_url(re.compile(r"/team/bill/"))
    # 100 GPU-s at 3.60/hour = 0.10, 4 images at 0.05 = 0.20, the 10.00 fee
    assert page.locator("#bill-total").inner_text().strip() == "10.30 USD"
    assert "0.30 USD" in page.locator("#bill-members tr.member[data-user='alice']").inner_text()
    shot(page, "66_team_bill")
    with page.expect_download() as download:
        page.click("#download-csv")
    assert download.value.suggested_filename.endswith(".csv")
    lines = {(row["line"], row["user"]): row for row in csv.DictReader(io.StringIO(Path(download.value.path()).read_text()))}
    assert (lines[("member", "alice")]["amount"], lines[("member", "alice")]["images"]) == ("0.30", "4")
    assert (lines[("monthly_fee", "")]["amount"], lines[("total", "")]["amount"]) == ("10.00", "10.30")


def test_an_admin_adds_a_member_who_then_manages_their_own_tokens(platform, browser) -> None:
    alice, page = sign_in(browser, platform, "alice")
    admin_adds_a_member(page)
    admin_sets_a_limit(page)
    admin_creates_a_token_for_the_member(page)
    member_manages_their_own_token(browser, platform)
    page.goto("/team/audit/")
    actions = page.locator("#audit-log").inner_text()
    assert "member.add" in actions and "limits.set" in actions and "token.create" in actions
    shot(page, "65_team_audit")
    admin_downloads_the_months_bill_as_csv(page)
    alice.close()
