"""Structured logs with the platform's real processes (issue 18, item 5): with `LOG_FORMAT=json`
the Celery worker and the dispatcher (`manage.py sweeper`) write one JSON object per line, and
the lines about a job carry its public id, its batch and the worker's name
(`config/logcontext.py`; Celery's own logging is replaced by the platform's, `config/celery.py`)."""

from __future__ import annotations

import json

import pytest

from tests.harness import Platform, running_platform

pytestmark = pytest.mark.e2e

SMALL = {"prompt": "a lighthouse at dawn", "width": 64, "height": 64, "steps": 2, "sampler_name": "Euler a"}


@pytest.fixture(scope="module")
def platform():
    with running_platform(workers=1, env_overrides={"LOG_FORMAT": "json"}) as platform:
        yield platform


def _json_lines(platform: Platform, role: str) -> list[dict]:
    """The log's JSON objects (a library's own print to stdout, if any, is not a log record)."""
    lines = []
    for line in (platform.data_dir / f"{role}.log").read_text(errors="replace").splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))  # a record's line is always whole, valid JSON
    return lines


def test_a_job_s_log_lines_in_json_name_the_job_its_batch_and_the_worker(platform: Platform) -> None:
    job_id = platform.submit("alice", **SMALL)
    job = platform.wait_job("alice", job_id)
    assert job["status"] == "succeeded", job
    name = platform.worker_name("w0")

    worker_lines = [line for line in _json_lines(platform, "w0") if line.get("job") == job_id]
    assert any(f"job {job_id} attempt 1 started on {name}" in line["message"] for line in worker_lines), worker_lines
    assert all(line["worker"] == name and line.get("batch") for line in worker_lines), worker_lines
    assert all({"time", "level", "logger", "message"} <= set(line) for line in worker_lines)

    placed = [line for line in _json_lines(platform, "sweeper") if line.get("job") == job_id]
    assert any(line["message"].startswith("dispatched 1 job(s)") and line["worker"] == name for line in placed), placed
    assert {line["batch"] for line in placed} == {line["batch"] for line in worker_lines}  # one batch, both sides
