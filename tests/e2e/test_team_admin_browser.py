"""Issue 16's team administration in a real Chromium on the real platform (`tests/harness.py`:
daphne over loopback, the demo accounts of `bootstrap_demo`, where alice is studio-a's admin).

* alice, on the Team page, adds a member with an initial password, sets a limit on them and
  creates an API token for them: shown once, then listed by name, and it works on the API.
* The new member signs in with that password, creates their own token on /tokens/, sees it
  listed beside the one their admin made, and revokes it.

Each step is a function of its own, so the month's bill and its CSV download (on the bill page)
join as one more step of the same flow. Screenshots go to `artifacts/workspace_browser/`
(ignored by git). Needs Playwright and Chromium, as `tests/e2e/test_workspace_browser.py`, whose
browser fixture and helpers this module shares.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.test_workspace_browser import (  # noqa: F401  (browser, chromium_present: fixtures)
    CHROMIUM,
    IN_CI,
    browser,
    chromium_present,
    shot,
    sign_in,
)
from tests.harness import running_platform

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.single_mode,  # the pages are the subject; tests/frontend/test_team_admin.py runs each action in both modes
    pytest.mark.skipif(
        not IN_CI and not Path(CHROMIUM).exists(),
        reason=f"no Chromium at {CHROMIUM} (apt-get install chromium, or set ATELIER_CHROMIUM); in CI this fails",
    ),
]

MEMBER, MEMBER_PASSWORD = "frank", "frank-pass-2026"


@pytest.fixture(scope="module")
def platform():
    with running_platform(workers=0) as running:
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
    alice.close()
