"""Issue 22 in a real Chromium on the real platform: the operators' tab switches and BeautifulPrompt.

The platform runs as real processes over loopback (`tests/harness.py`: daphne with the workspace
session manager and `/ui/` proxy, one Celery worker), with the tiny random-weight GPT-2 and
BLOOM prompt-generation models placed in the public `promptgen` folder as an operator would
(`manage.py make_tiny_model --promptgen all`), and studio-b's PNG Info tab hidden before anyone
opens a workspace.

* Tabs: charlie (studio-b) has no PNG Info tab, alice (studio-a) has one. Then studio-a's operator
  hides it while alice's workspace runs: her reload no longer shows it, and calling its function
  directly (by `api_name`, as a script would) is refused with the reason.
* BeautifulPrompt: bob turns the extension on in the Extensions tab, its tab appears, he expands
  "a cat" on the worker, watches the bar finish, and sends the first result to txt2img, whose
  prompt it fills (appended to what he had typed), and the page switches to txt2img.

Screenshots go to `artifacts/workspace_browser/` (ignored by git). Needs Playwright and Chromium,
as `tests/e2e/test_workspace_browser.py` (whose browser fixture and helpers this module shares).
"""

from __future__ import annotations

import json
import re

import pytest

from tests.e2e.test_workspace_browser import (  # noqa: F401  (browser, chromium_present: fixtures)
    BROWSER_TEST_MARKS,
    browser,
    chromium_present,
    open_workspace,
    playwright_api,
    shot,
    sign_in,
)
from tests.harness import running_platform

GENERATION_MS = 180_000

pytestmark = BROWSER_TEST_MARKS


def set_hidden_tabs(platform, tenant: str, tabs: list[str]) -> None:
    """What an operator does in /admin/ → Tenants, through the same service."""
    platform.manage("shell", "-c", (
        "from tenants.models import Tenant; from tenants.services import tenant_hidden_tabs_set; "
        f"tenant_hidden_tabs_set(tenant=Tenant.objects.get(slug={tenant!r}), tabs={tabs!r})"
    ))


def before_start(platform) -> None:
    platform.manage("make_tiny_model", "--promptgen", "all")
    set_hidden_tabs(platform, "studio-b", ["pnginfo"])


@pytest.fixture(scope="module")
def platform():
    with running_platform(workers=1, env_overrides={"ATELIER_WORKSPACE_SPARES": "1"},
                          before_start=before_start) as running:
        yield running


def workspace_tabs(page) -> list[str]:
    """The names of the workspace's tabs the member sees (not the ControlNet units' tabs)."""
    names = page.get_by_role("tab").all_inner_texts()
    return [name.strip() for name in names if not name.strip().startswith("ControlNet")]


def test_a_tab_hidden_for_one_tenant_is_not_there_and_its_function_is_refused(platform, browser) -> None:
    charlie, page = sign_in(browser, platform, "charlie")
    open_workspace(page)
    tabs = workspace_tabs(page)
    assert "PNG Info" not in tabs and {"txt2img", "img2img", "Gallery", "Extensions"} <= set(tabs), tabs
    shot(page, "30_charlie_without_png_info")
    charlie.close()

    alice, page = sign_in(browser, platform, "alice")
    open_workspace(page)
    assert "PNG Info" in workspace_tabs(page)
    shot(page, "31_alice_with_png_info")

    # The operator hides it for studio-a while alice's workspace runs.
    set_hidden_tabs(platform, "studio-a", ["pnginfo"])
    page.reload()
    open_workspace(page)
    page.get_by_role("tab", name="PNG Info", exact=True).wait_for(state="hidden", timeout=30_000)
    assert "PNG Info" not in workspace_tabs(page) and "Gallery" in workspace_tabs(page)
    shot(page, "32_alice_png_info_hidden_after_reload")

    # Calling the tab's function directly, as a script would, through the platform's proxy.
    started = page.request.post("/ui/gradio_api/call/read_pnginfo", data=json.dumps({"data": [None]}),
                                headers={"Content-Type": "application/json"})
    assert started.status == 200, started.text()
    events = page.request.get(f"/ui/gradio_api/call/read_pnginfo/{started.json()['event_id']}").text()
    assert "event: error" in events and "PNG Info tab is turned off" in events, events
    set_hidden_tabs(platform, "studio-a", [])
    alice.close()


def test_bob_expands_a_prompt_and_sends_it_to_txt2img(platform, browser) -> None:
    bob, page = sign_in(browser, platform, "bob")
    open_workspace(page)
    assert "BeautifulPrompt" not in workspace_tabs(page)  # off until he turns it on
    page.get_by_role("tab", name="Extensions").click()
    page.get_by_label("BeautifulPrompt").check()
    page.click("#atelier-extensions-apply")
    page.get_by_role("tab", name="BeautifulPrompt").wait_for(state="visible", timeout=30_000)
    page.get_by_role("tab", name="txt2img").click()
    page.locator("#atelier-txt2img-prompt textarea").fill("masterpiece")
    page.get_by_role("tab", name="BeautifulPrompt").click()
    model = page.locator("#atelier-bp-model input").input_value()
    assert model.startswith("atelier-tiny-"), model

    page.locator("#atelier-bp-prompt textarea").fill("a cat")
    page.get_by_text("Sampling settings", exact=True).click()
    page.wait_for_selector("#atelier-bp-seed input", state="visible", timeout=30_000)
    for elem_id, value in (("atelier-bp-seed", 1234), ("atelier-bp-max-length", 40), ("atelier-bp-num-results", 3)):
        field = page.locator(f"#{elem_id} input[type=number]")
        field.fill(str(value))
        field.press("Enter")
    page.click("#atelier-bp-generate")
    bar = "#atelier-bp-progress .atelier-progress"
    page.wait_for_selector(f'{bar}:is([data-status="queued"],[data-status="dispatched"],[data-status="running"],'
                           '[data-status="succeeded"])', timeout=30_000)
    job_id = page.locator(bar).get_attribute("data-job")
    page.wait_for_selector(f'{bar}[data-status="succeeded"]', timeout=GENERATION_MS)
    page.wait_for_selector("#atelier-bp-result-0", state="visible", timeout=30_000)
    first = page.locator("#atelier-bp-result-0-text textarea").input_value()
    assert first.strip(), "the first result has text"
    shot(page, "33_bob_beautiful_prompt_results")

    job = platform.get("bob", f"/api/v1/jobs/{job_id}").json()
    assert job["kind"] == "promptgen" and job["status"] == "succeeded" and job["params"]["prompt"] == "a cat"
    assert job["texts"] and job["texts"][0] == first
    assert platform.get("alice", f"/api/v1/jobs/{job_id}").status_code == 200  # alice is studio-a's admin
    assert platform.get("charlie", f"/api/v1/jobs/{job_id}").status_code == 404

    page.click("#atelier-bp-result-0-txt2img")
    page.wait_for_function(
        "expected => document.querySelector('#atelier-txt2img-prompt textarea').value === expected",
        arg=f"masterpiece, {first.strip()}", timeout=30_000,
    )
    assert page.locator("#atelier-txt2img-prompt").is_visible()  # the page switched to txt2img
    shot(page, "34_bob_prompt_sent_to_txt2img")

    # His history lists the expansion after a reload, and the last results are shown again.
    page.reload()
    open_workspace(page)
    page.get_by_role("tab", name="BeautifulPrompt").click()
    page.wait_for_selector("#atelier-bp-result-0", state="visible", timeout=30_000)
    assert page.locator("#atelier-bp-result-0-text textarea").input_value() == first
    bob.close()

    # Charlie's workspace shows nothing of bob's expansion.
    charlie, page = sign_in(browser, platform, "charlie")
    open_workspace(page)
    assert "a cat" not in page.content() and first not in page.content()
    assert re.search(job_id, page.content()) is None
    charlie.close()
