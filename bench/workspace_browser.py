"""Login to a usable workspace, measured in a real browser (issue 20's interactive-speed goal).

Starts the real platform (daphne with the workspace session manager, no GPU worker) and drives
Chromium through what a member does: the sign-in form at `/login/?next=/ui/`, submitted, until
the workspace is usable, i.e. its header carries `data-loaded` (drawn by the page load's
`on_load`, after the member's stored settings are in the controls: the moment the browser
tests start typing). The clock starts at the click on "Sign in" and stops when that attribute
appears, both in the page (`performance.now()`), so the figure is the member's wait.

Two cases, N runs each, every run a member whose workspace is not running yet:

  * with a warm spare: `ATELIER_WORKSPACE_SPARES=1`, and each run waits until a spare is ready;
  * without one: `ATELIER_WORKSPACE_SPARES=0`, every member's process boots from scratch (what
    the first member after a boot gets, before the first spare is ready).

Each member signs in from a new browser profile (a first visit: Gradio's ~120 front-end files
fetched), or with `--cached-browser` from one profile whose cache an extra member warmed first (a
returning member). Prints the figures beside the goal (≤ 1 s with a warm spare, ≤ 4 s without)
and ends with one JSON line. Needs Playwright and Chromium (ATELIER_CHROMIUM, default /usr/bin/chromium).

Usage (from the repository root):

    .venv/bin/python bench/workspace_browser.py [--runs 5] [--cached-browser]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.harness import Platform  # noqa: E402

CHROMIUM = os.environ.get("ATELIER_CHROMIUM", "/usr/bin/chromium")
GOALS_S = {"warm_spare": 1.0, "no_spare": 4.0}
PASSWORD = "bench-password-1"
BOOT_TIMEOUT_MS = 180_000
VIEWPORT = {"width": 1280, "height": 800}

# The clock runs in the page: the login page stores the click time, the workspace page reads it.
MARK_CLICK = "() => sessionStorage.setItem('atelier-bench-click', String(performance.timeOrigin + performance.now()))"
ELAPSED_MS = "() => performance.timeOrigin + performance.now() - Number(sessionStorage.getItem('atelier-bench-click'))"


def create_members(platform: Platform, prefix: str, count: int) -> list[str]:
    """`count` fresh members of the demo tenant, none of whom has a workspace process yet."""
    names = [f"{prefix}{index}" for index in range(count)]
    platform.manage("shell", "-c", (
        "from tenants.models import Tenant\n"
        "from tenants.services import member_create\n"
        "tenant = Tenant.objects.order_by('pk').first()\n"
        f"for name in {names!r}:\n"
        f"    member_create(tenant=tenant, username=name, password={PASSWORD!r})\n"
    ))
    return names


def spares_ready(platform: Platform) -> set[str]:
    logs = platform.data_dir / "workspaces" / "logs"
    return {log.name for log in logs.glob("spare-*.log") if "spare ready" in log.read_text(errors="replace")}


def login_to_workspace(context, username: str) -> dict[str, float]:
    """Seconds from the sign-in click to: Generate drawn (the Gradio app rendered), and the
    workspace usable (`data-loaded`: its page load's settings applied), measured in the page."""
    context.clear_cookies()  # signed out; the HTTP cache stays as it is
    page = context.new_page()
    try:
        page.goto("/login/?next=/ui/")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", PASSWORD)
        page.evaluate(MARK_CLICK)
        page.click("button[type=submit]")
        page.wait_for_selector("#atelier-txt2img-generate", timeout=BOOT_TIMEOUT_MS)
        drawn = page.evaluate(ELAPSED_MS) / 1000
        page.wait_for_selector(".atelier-header[data-loaded]", timeout=BOOT_TIMEOUT_MS)
        return {"drawn": drawn, "usable": page.evaluate(ELAPSED_MS) / 1000}
    finally:
        page.close()


def measure(browser, runs: int, spares: int, cached: bool) -> list[dict[str, float]]:
    """`runs` logins of fresh members; `cached`: one browser profile for all (a returning
    member's browser: Gradio's assets in its cache, warmed by one extra member first), else a
    new profile each (a first visit)."""
    platform = Platform(env_overrides={"ATELIER_WORKSPACE_SPARES": str(spares),
                                       "ATELIER_WORKSPACE_MAX_SESSIONS": str(runs + 2)})
    try:
        platform.start(workers=0)
        members = create_members(platform, "warm" if spares else "cold", runs + cached)
        if spares:  # any /ui/ request starts the session manager, which boots the spares
            httpx.get(f"{platform.base_url}/ui/", timeout=60)
        timings = []
        used: set[str] = set()
        shared = browser.new_context(viewport=VIEWPORT, base_url=platform.base_url) if cached else None
        for username in members:
            if spares:  # a spare that has not served anyone yet is ready
                ready = Platform.wait_until(lambda: (spares_ready(platform) - used) or None, timeout=180,
                                            what="a warm spare", interval=0.1)
                used |= ready
            context = shared or browser.new_context(viewport=VIEWPORT, base_url=platform.base_url)
            try:
                timings.append(login_to_workspace(context, username))
            finally:
                if context is not shared:
                    context.close()
        return timings[1:] if cached else timings
    finally:
        platform.stop()


def summary(values: list[float]) -> dict[str, float]:
    return {"median_s": round(statistics.median(values), 3), "min_s": round(min(values), 3),
            "max_s": round(max(values), 3), "runs": [round(v, 3) for v in values]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cached-browser", action="store_true",
                        help="a returning member's browser (assets cached) instead of a first visit")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed bench still stops its platform

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM,
                                     args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            results = {"warm_spare": measure(browser, args.runs, spares=1, cached=args.cached_browser),
                       "no_spare": measure(browser, args.runs, spares=0, cached=args.cached_browser)}
        finally:
            browser.close()

    load = os.getloadavg()[0]
    browser_kind = "returning browser (assets cached)" if args.cached_browser else "first visit (empty cache)"
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f}; Chromium headless, {browser_kind}, embedded default")
    print(f"login form submitted → workspace usable (header data-loaded), {args.runs} members each")
    print(f"  {'':22}{'median':>9}{'min':>9}{'max':>9}{'goal':>8}  meets goal   (median to Generate drawn)")
    for name, label in (("warm_spare", "with a warm spare"), ("no_spare", "without a spare")):
        usable = [run["usable"] for run in results[name]]
        median = statistics.median(usable)
        drawn = statistics.median(run["drawn"] for run in results[name])
        print(f"  {label:22}{median:8.2f}s{min(usable):8.2f}s{max(usable):8.2f}s{GOALS_S[name]:7.1f}s  "
              f"{'yes' if median <= GOALS_S[name] else 'no ':<10}   ({drawn:.2f} s)")
    print(json.dumps({
        "bench": "workspace_browser", "cpus": os.cpu_count(), "load_average": round(load, 2), "goals_s": GOALS_S,
        "cached_browser": args.cached_browser,
        **{name: {**summary([run["usable"] for run in runs]),
                  "drawn_median_s": round(statistics.median(run["drawn"] for run in runs), 3)}
           for name, runs in results.items()},
    }))


if __name__ == "__main__":
    main()
