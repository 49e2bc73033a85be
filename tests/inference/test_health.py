"""Probes: `/readyz` against real dependencies (and closed ports), and `manage.py probe` for the
processes without HTTP (workers, the sweeper) on the real database and broker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from inference.health import heartbeat_path, run_checks, sweeper_name
from inference.processes import web_command
from inference.transitions import worker_register
from tests.harness import REPO, free_port


@pytest.fixture
def probe_dir(settings, tmp_path: Path) -> Path:
    settings.ATELIER_PROBE_DIR = tmp_path / "probes"
    return settings.ATELIER_PROBE_DIR


def probe(*args: str) -> str:
    """`manage.py probe …` in this process: its output, or the CommandError's message."""
    from io import StringIO

    out = StringIO()
    try:
        call_command("probe", *args, stdout=out)
    except CommandError as exc:
        return f"error: {exc}"
    return out.getvalue().strip()


@pytest.mark.django_db
def test_the_real_database_broker_and_storage_are_ready() -> None:
    assert [(r.name, r.ok) for r in run_checks()] == [("database", True), ("broker", True), ("storage", True)]


def test_readyz_is_a_503_naming_the_database_and_broker_on_closed_ports(tmp_path: Path) -> None:
    """The real web process (the platform's own command line) with PostgreSQL and Redis URLs that
    point at closed ports: alive (/healthz 200), not ready (/readyz 503 naming both, and why)."""
    closed_db, closed_redis, port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE",)}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings", DATA_DIR=str(tmp_path / "data"), PYTHONUNBUFFERED="1",
        DATABASE_URL=f"postgres://atelier:hunter2@127.0.0.1:{closed_db}/atelier",
        REDIS_URL=f"redis://:hunter2@127.0.0.1:{closed_redis}/0",
        ATELIER_WORKSPACE_SPARES="0",
    )
    log = open(tmp_path / "web.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(web_command("127.0.0.1", port), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert health is not None, (tmp_path / "web.log").read_text(errors="replace")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=30)
        assert ready.status_code == 503, ready.text
        assert ready.json() == {"status": "unavailable", "checks": {
            "database": {"ok": False, "reason": "connection refused"},
            "broker": {"ok": False, "reason": "connection refused"},
            "storage": {"ok": True},
        }}
        for leak in ("hunter2", str(closed_db), str(closed_redis), "127.0.0.1", "Traceback"):
            assert leak not in ready.text
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def test_worker_liveness_follows_its_heartbeat_file(probe_dir: Path, settings) -> None:
    name = f"gpu@{socket.gethostname()}"
    assert "has not touched its heartbeat file" in probe("worker", "--live", "-n", "gpu@%h")
    from inference.health import touch_heartbeat

    touch_heartbeat("worker", name)
    assert probe("worker", "--live", "-n", "gpu@%h") == "ok"  # %h: this host, as celery -n expands it
    stale = time.time() - settings.ATELIER_WORKER_DEAD_AFTER_SECONDS - 5
    os.utime(heartbeat_path("worker", name), (stale, stale))
    assert "heartbeat file is" in probe("worker", "--live", "-n", "gpu@%h")
    assert probe("worker", "--live", "-n", "gpu@%h", "--max-age", "3600") == "ok"
    assert "-n NAME is required" in probe("worker", "--live")


@pytest.mark.django_db
def test_worker_readiness_needs_its_own_online_row_and_the_broker(probe_dir: Path) -> None:
    from inference.models import Worker

    assert "state: unregistered" in probe("worker", "--ready", "-n", "gpu7@%h")
    worker = worker_register(name=f"gpu7@{socket.gethostname()}", device="cpu", device_memory_bytes=None)
    assert probe("worker", "--ready", "-n", "gpu7@%h") == "ok"
    Worker.objects.filter(pk=worker.pk).update(state=Worker.State.DRAINING)
    assert "state: draining" in probe("worker", "--ready", "-n", "gpu7@%h")


@pytest.mark.django_db(transaction=True)  # the sweeper closes connections a test transaction holds
def test_the_sweeper_touches_its_file_each_pass_and_its_probes_read_it(probe_dir: Path) -> None:
    assert "has not touched" in probe("sweeper", "--live")
    call_command("sweeper", "--once")
    assert heartbeat_path("sweeper", sweeper_name()).exists()
    assert probe("sweeper", "--live") == "ok"
    assert probe("sweeper", "--ready") == "ok"
