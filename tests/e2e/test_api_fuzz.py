"""Schemathesis fuzzes every operation of `/openapi.json` on a running platform (issue 23).

Three runs, all through the CLI from PyPI (`st run`), deterministic and with a bounded number of
examples per operation so CI is repeatable (`make fuzz` runs the same with many more):

1. as alice with her API token, positive and negative data, on every member operation;
2. as charlie, with every job id in a path set to one of alice's jobs;
3. the EAS queue operations, with a token of alice's EAS service.

Checks: no 5xx (`not_a_server_error`), every status and body as documented
(`status_code_conformance`, `content_type_conformance`, `response_schema_conformance`), data
the schema forbids is refused (`negative_data_rejection`), and our own two in
`tests/e2e/fuzz/hooks.py`: 4xx bodies in the documented shape with a message, and nothing of
another member's within reach. Generation is kept cheap by the platform's own limits (a few
steps, small sizes) rather than by hiding operations.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO, Platform, running_platform

# The parsers and views are the subject, not the broker: CI fuzzes in cluster mode only (tests/conftest.py).
pytestmark = [pytest.mark.e2e, pytest.mark.single_mode]

# CI: the fuzzing phase only, a few examples per operation (about a minute a run). `make fuzz`:
# every phase (schema examples, the coverage phase's boundary values, fuzzing, stateful) with many more.
EXAMPLES = int(os.environ.get("ATELIER_FUZZ_EXAMPLES", "8"))
PHASES = os.environ.get("ATELIER_FUZZ_PHASES", "fuzzing")
CHECKS = ",".join((
    "not_a_server_error", "status_code_conformance", "content_type_conformance",
    "response_schema_conformance", "negative_data_rejection",
    "error_bodies_say_what_to_fix", "other_members_objects_stay_out_of_reach",
))
LIMITS = {  # a tiny platform: every generation the fuzzer asks for is a few tiny steps
    "ATELIER_MAX_STEPS": "2", "ATELIER_MAX_SIZE": "128", "ATELIER_MAX_BATCH_SIZE": "2", "ATELIER_MAX_N_ITER": "2",
    "ATELIER_MAX_PROMPT_CHARS": "400", "ATELIER_MAX_QUEUED_JOBS_PER_USER": "4",  # a sync call never waits behind a long queue of her own
}


@pytest.fixture(scope="module")
def platform():
    with running_platform(workers=1, env_overrides=LIMITS) as platform:
        yield platform


def schemathesis_run(
    platform: Platform, user: str, report: Path, *extra: str, foreign_ids: tuple[str, ...] = (),
    config: Path | None = None, token: str | None = None,
) -> str:
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.e2e.fuzz.hooks", "PYTHONPATH": str(REPO),
           "ATELIER_FUZZ_FOREIGN_IDS": ",".join(foreign_ids)}
    command = [
        str(Path(sys.executable).with_name("st")), "--no-color", *(("--config-file", str(config)) if config else ()), "run", f"{platform.base_url}/openapi.json",
        "--header", f"Authorization: Bearer {token or platform.token(user)}",
        "--checks", CHECKS, "--mode", "all", "--max-examples", str(EXAMPLES),
        "--generation-deterministic", "--workers", "1", "--request-timeout", "120", "--max-failures", "30",
        "--phases", PHASES, "--suppress-health-check", "all",
        "--report", "junit", "--report-junit-path", str(report), *extra,
    ]
    # run in the test's own folder: the CLI keeps a crash cache (.schemathesis/) in its working directory
    result = subprocess.run(command, cwd=report.parent, env=env, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-20000:]
    return output


def test_alice_fuzzes_every_operation_and_nothing_fails(platform: Platform, tmp_path: Path) -> None:
    output = schemathesis_run(platform, "alice", tmp_path / "alice.xml", "--exclude-path-regex", "^/api/predict/")
    print(output[-3000:])


def test_charlie_fuzzes_with_alices_job_ids_and_reaches_nothing(platform: Platform, tmp_path: Path) -> None:
    job_id = platform.submit("alice", prompt="alice's own", steps=1, width=64, height=64)
    platform.wait_job("alice", job_id)
    config = tmp_path / "schemathesis.toml"
    config.write_text(f'[parameters]\n"path.public_id" = "{job_id}"\n"path.index" = 0\n')
    command_config = ("--include-path-regex", r"\{public_id\}")
    output = schemathesis_run(
        platform, "charlie", tmp_path / "charlie.xml", *command_config, foreign_ids=(job_id,), config=config
    )
    print(output[-3000:])


def test_the_eas_queue_is_fuzzed_with_a_service_token(platform: Platform, tmp_path: Path) -> None:
    printed = platform.manage("create_eas_service", "sd_fuzz", "--owner", "alice")
    token = dict(line.split(": ", 1) for line in printed.splitlines() if ": " in line)["token"].strip()
    config = tmp_path / "schemathesis.toml"
    config.write_text('[parameters]\n"path.service" = "sd_fuzz"\n')
    output = schemathesis_run(
        platform, "alice", tmp_path / "eas.xml", "--include-path-regex", "^/api/predict/", config=config, token=token,
    )
    print(output[-3000:])


# --- /docs in a real browser ---------------------------------------------------------------------


def test_alice_opens_the_api_docs_from_home_authorizes_with_her_token_and_tries_a_call(platform: Platform) -> None:
    """Swagger UI renders under the site's CSP (no inline script, files from /static/ only), lists
    the operations, and a call made with "Try it out" after "Authorize" carries her token."""
    from tests.e2e.test_workspace_browser import CHROMIUM, playwright_api, sign_in

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: .ci/run installs it (apt-get install chromium)", pytrace=False)
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            context, page = sign_in(browser, platform, "alice")
            problems: list[str] = []
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            sent: list[dict[str, str]] = []
            page.on("request", lambda request: sent.append(request.headers) if "/api/v1/usage" in request.url else None)
            page.click("#api-docs-link")
            page.wait_for_selector("#swagger-ui[data-loaded]", timeout=60_000)
            page.locator(".opblock-summary-path", has_text="/sdapi/v1/txt2img").first.wait_for(timeout=30_000)
            assert page.locator(".opblock").count() >= 45
            assert not [p for p in problems if "Content Security Policy" in p], problems

            page.click("button.authorize")
            page.locator(".auth-container input[type=text]").first.fill(platform.token("alice"))
            page.locator(".auth-container button.authorize").first.click()
            page.click("button.close-modal")
            operation = page.locator(".opblock", has=page.locator(".opblock-summary-path", has_text="/api/v1/usage")).first
            operation.locator(".opblock-summary").click()
            # "Try it out" is on from the start (tryItOutEnabled in frontend/static/frontend/api_docs.js)
            operation.locator("button.execute").click()
            status = operation.locator(".live-responses-table tr.response .response-col_status").first
            status.wait_for(timeout=30_000)
            assert status.inner_text().strip() == "200"
            assert any(headers.get("authorization") == f"Bearer {platform.token('alice')}" for headers in sent), sent
            context.close()
        finally:
            browser.close()
