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

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("ATELIER_FUZZ_EXAMPLES", "6"))
SEED = int(os.environ.get("ATELIER_FUZZ_SEED", "23"))
CHECKS = ",".join((
    "not_a_server_error", "status_code_conformance", "content_type_conformance",
    "response_schema_conformance", "negative_data_rejection",
    "error_bodies_say_what_to_fix", "other_members_objects_stay_out_of_reach",
))
LIMITS = {  # a tiny platform: every generation the fuzzer asks for is a few tiny steps
    "ATELIER_MAX_STEPS": "2", "ATELIER_MAX_SIZE": "128", "ATELIER_MAX_BATCH_SIZE": "2", "ATELIER_MAX_N_ITER": "2",
    "ATELIER_MAX_PROMPT_CHARS": "400", "ATELIER_MAX_QUEUED_JOBS_PER_USER": "1000",
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
        "--checks", CHECKS, "--mode", "all", "--max-examples", str(EXAMPLES), "--seed", str(SEED),
        "--generation-deterministic", "--workers", "1", "--request-timeout", "120", "--max-failures", "30",
        "--phases", "examples,coverage,fuzzing", "--suppress-health-check", "all",
        "--report", "junit", "--report-junit-path", str(report), *extra,
    ]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
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
