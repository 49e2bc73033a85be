"""A worker name held by two live processes (issue 18), with the platform's real processes: the
second Celery worker started under a name a live one holds stops at once and says why; the first
keeps its row and runs jobs as before."""

from __future__ import annotations

import subprocess

import pytest

from inference.processes import worker_command
from tests.harness import Platform, running_platform

pytestmark = pytest.mark.e2e

SMALL = {"prompt": "a lighthouse at dawn", "width": 128, "height": 128, "steps": 4, "sampler_name": "Euler a"}


@pytest.fixture(scope="module")
def platform():
    with running_platform(workers=1) as platform:
        yield platform


def _row(platform: Platform, name: str) -> dict:
    [row] = [w for w in platform.get("admin", "/api/v1/workers").json()["workers"] if w["name"] == name]
    return row


def test_a_second_worker_under_a_live_workers_name_stops_and_says_why(platform: Platform) -> None:
    name = platform.worker_name("w0")
    first = _row(platform, name)
    twin = platform._spawn("w0-twin", worker_command(name, app="tests.e2e.holding"), worker=True)
    try:
        twin.wait(timeout=120)
    except subprocess.TimeoutExpired:
        twin.kill()
        twin.wait()
        pytest.fail("the second worker under one name kept running")
    log = (platform.data_dir / "w0-twin.log").read_text(errors="replace")
    assert f"worker name '{name}' is in use by pid {first['pid']}" in log, log[-3000:]

    row = _row(platform, name)
    assert (row["pid"], row["state"]) == (first["pid"], "online")
    job_id = platform.submit("alice", **SMALL)
    job = platform.wait_job("alice", job_id)
    assert (job["status"], job["attempts"]) == ("succeeded", 1), job
