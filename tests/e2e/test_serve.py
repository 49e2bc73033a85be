"""`manage.py serve` (what `make run` ends with): one command brings the platform up, and
Ctrl-C brings every process it started down."""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from tests.harness import Platform

pytestmark = pytest.mark.e2e


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_serve_runs_a_512px_job_and_stops_cleanly_on_ctrl_c() -> None:
    platform = Platform()
    try:
        serve = platform.serve(workers=1)
        job_id = platform.submit("alice", prompt="a curl-style request", width=512, height=512, steps=4)
        job = platform.wait_job("alice", job_id)
        assert job["status"] == "succeeded", job
        assert (platform.outputs_of("alice")[0]).name == f"{job_id}-0.png"
        worker_pids = [w["pid"] for w in platform.get("admin", "/api/v1/workers").json()["workers"]]

        serve.send_signal(signal.SIGINT)
        assert serve.wait(timeout=60) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(platform.base_url + "/login/", timeout=2)
        assert not [pid for pid in worker_pids if _alive(pid)]
        log = (platform.data_dir / "serve.log").read_text()
        assert "Atelier is running at" in log and "Stopped." in log
    except BaseException:
        print(platform.logs())
        raise
    finally:
        platform.stop()
