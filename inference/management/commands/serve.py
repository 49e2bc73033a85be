"""`manage.py serve [--port N] [--workers K]`: the whole platform in one command, supervised.

Starts the web server (daphne), K Celery GPU workers and the sweeper as child processes and
keeps them up:

* any child that dies (the web server too) is restarted on its own, and nothing else is torn
  down; each child has its own backoff (`inference/supervisor.py`: `min(2**n, 30)` s, n = its
  restarts since it last ran for a healthy minute), and the monitor loop never sleeps it out:
  it keeps watching the other children and starts the dead one when its time comes;
* when a worker exits, its `Worker` row goes offline at once and the jobs it held are requeued
  (or failed at the attempt cap) by `inference.reaping.worker_exited`, the reaper's own path,
  instead of after `ATELIER_WORKER_DEAD_AFTER_SECONDS`; it runs on a thread of its own so a slow
  database cannot stall the loop;
* on Ctrl-C (or SIGTERM) everything stops cleanly: workers first, with a warm shutdown (the
  running job finishes or is requeued), then the rest, and every child is reaped.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connections

from inference.reaping import worker_exited
from inference.processes import child_env, sweeper_command, web_command, worker_command, worker_name
from inference.supervisor import RestartBackoff

logger = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 30
POLL_SECONDS = 0.5


@dataclass
class Child:
    role: str
    command: list[str]
    backoff: RestartBackoff
    worker: str | None = None  # its Worker row's name, for a GPU worker
    process: subprocess.Popen | None = None  # None while it waits out its backoff


def _kill_group(pid: int) -> None:
    """A child runs in a session of its own: leave nothing of a dead one behind."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def report_worker_exit(name: str, pid: int) -> None:
    """The "child exited" hook of a worker: offline now, its jobs back. Runs on the reporting
    thread; if the database cannot be reached the sweeper's dead-worker timeout still applies."""
    try:
        worker_exited(name=name, pid=pid)
    except Exception:  # noqa: BLE001 - the supervisor must outlive a database outage
        logger.exception("could not mark worker %s (pid %s) offline; the sweeper will reap it", name, pid)
    finally:
        connections.close_all()  # this thread's connection: none held idle between exits


class Command(BaseCommand):
    help = "Run web + workers + sweeper together (the embedded default, or a one-machine cluster)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--workers", type=int, default=1)

    def handle(self, *args, host: str, port: int, workers: int, **options):
        env = child_env(port)
        if env.get("ATELIER_EVENTS_URL"):
            # The embedded default: this process publishes job events too (an exited worker's
            # requeued jobs), and like its children it must relay them through the web process.
            settings.ATELIER_EVENTS_URL = env["ATELIER_EVENTS_URL"]

        def child(role: str, command: list[str], worker: str | None = None) -> Child:
            return Child(role, command, RestartBackoff(clock=time.monotonic), worker=worker)

        children = [child("web", web_command(host, port))]
        for i in range(workers):
            name = worker_name(i)
            children.append(child(f"worker {i}", worker_command(name), worker=name))
        children.append(child("sweeper", sweeper_command()))

        stopping = False

        def request_stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)

        reports = ThreadPoolExecutor(max_workers=1, thread_name_prefix="worker-exit")
        for c in children:
            self._start(c, env)
        mode = "cluster (PostgreSQL/Redis)" if settings.REDIS_URL else "embedded (SQLite, file broker)"
        self.stdout.write(
            self.style.SUCCESS(f"Atelier is running at http://{host}:{port}/  [{mode}, {workers} worker(s)]")
        )
        self.stdout.write("Press Ctrl-C to stop.")
        self.stdout.flush()

        try:
            while not stopping:
                time.sleep(POLL_SECONDS)
                for c in children:
                    if stopping:
                        break
                    self._watch(c, env, reports)
        finally:
            self._stop(children, reports)

    def _start(self, child: Child, env: dict[str, str]) -> None:
        child.process = subprocess.Popen(child.command, env=env, start_new_session=True)
        child.backoff.started()

    def _watch(self, child: Child, env: dict[str, str], reports: ThreadPoolExecutor) -> None:
        """One look at one child: restart it if its backoff is over, or notice that it exited."""
        if child.process is None:
            if child.backoff.due():
                self._start(child, env)
                self.stderr.write(f"{child.role} restarted (pid {child.process.pid})")
            return
        code = child.process.poll()
        if code is None:
            return
        pid = child.process.pid
        _kill_group(pid)
        child.process = None
        delay = child.backoff.exited()
        self.stderr.write(f"{child.role} (pid {pid}) exited with {code}: restart #{child.backoff.restarts} in {delay:g}s")
        if child.worker:
            reports.submit(report_worker_exit, child.worker, pid)

    def _stop(self, children: list[Child], reports: ThreadPoolExecutor) -> None:
        self.stdout.write("Stopping…")
        # Workers first (warm shutdown lets the current step finish and requeues held jobs).
        ordered = [c for c in children if c.worker] + [c for c in children if not c.worker]
        for child in ordered:
            if child.process and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in ordered:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
            if child.worker:  # a worker killed past the grace period did not say it stopped
                reports.submit(report_worker_exit, child.worker, child.process.pid)
        reports.shutdown(wait=True)
        self.stdout.write("Stopped.")
