"""`manage.py serve` (what `make run` ends with): one command brings the platform up, keeps it
up when a child dies, and Ctrl-C brings every process it started down."""

from __future__ import annotations

import os
import signal
from pathlib import Path

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


def _child_pid(parent: int, marker: str) -> int:
    """The pid of `parent`'s child whose command line holds `marker`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(") ", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and marker in command:
            return int(entry.name)
    raise AssertionError(f"no child of {parent} runs {marker}")


def test_serve_runs_a_512px_job_survives_its_children_dying_and_stops_cleanly_on_ctrl_c() -> None:
    platform = Platform()
    try:
        serve = platform.serve(workers=1)
        job_id = platform.submit("alice", prompt="a curl-style request", width=512, height=512, steps=4)
        job = platform.wait_job("alice", job_id)
        assert job["status"] == "succeeded", job
        assert (platform.outputs_of("alice")[0]).name == f"{job_id}-0.png"
        worker_pids = [w["pid"] for w in platform.get("admin", "/api/v1/workers").json()["workers"]]

        # The web server dies: it alone is restarted, the worker keeps its process.
        web_pid = _child_pid(serve.pid, "config.webserver")
        os.kill(web_pid, signal.SIGKILL)
        platform.wait_until(lambda: not _alive(web_pid) and platform._web_up(), timeout=60, what="the web server back")
        workers = platform.get("admin", "/api/v1/workers").json()["workers"]
        assert [w["pid"] for w in workers] == worker_pids and all(_alive(pid) for pid in worker_pids)
        assert serve.poll() is None

        # A worker dies: its row is offline at once, by the supervisor (the sweeper would say
        # "dead", and only after ATELIER_WORKER_DEAD_AFTER_SECONDS without a heartbeat).
        os.kill(worker_pids[0], signal.SIGKILL)

        def settled() -> str | None:
            [row] = platform.get("admin", "/api/v1/workers").json()["workers"]
            if row["pid"] != worker_pids[0]:
                return "restarted before it was seen offline"
            return None if row["state"] == "online" else row["state"]

        assert platform.wait_until(settled, timeout=30, what="the killed worker's row to change") == "offline"

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
