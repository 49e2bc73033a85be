"""`manage.py serve [--port N] [--workers K]`: the whole platform in one command.

Starts the web server (daphne), K Celery GPU workers and the sweeper as child processes,
restarts a worker that dies, and on Ctrl-C (or SIGTERM) stops them all cleanly: workers get
a warm shutdown (the running job finishes or is requeued), then everything is reaped.
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.management.base import BaseCommand

from inference.processes import child_env, sweeper_command, web_command, worker_command, worker_name

STOP_GRACE_SECONDS = 30


@dataclass
class Child:
    role: str
    command: list[str]
    process: subprocess.Popen | None = None
    restarts: int = 0


class Command(BaseCommand):
    help = "Run web + workers + sweeper together (the embedded default, or a one-machine cluster)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--workers", type=int, default=1)

    def handle(self, *args, host: str, port: int, workers: int, **options):
        env = child_env(port)
        children = [Child("web", web_command(host, port))]
        children += [Child(f"worker {i}", worker_command(worker_name(i))) for i in range(workers)]
        children.append(Child("sweeper", sweeper_command()))

        stopping = False

        def request_stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)

        for child in children:
            child.process = subprocess.Popen(child.command, env=env, start_new_session=True)
        mode = "cluster (PostgreSQL/Redis)" if settings.REDIS_URL else "embedded (SQLite, file broker)"
        self.stdout.write(
            self.style.SUCCESS(f"Atelier is running at http://{host}:{port}/  [{mode}, {workers} worker(s)]")
        )
        self.stdout.write("Press Ctrl-C to stop.")
        self.stdout.flush()

        try:
            while not stopping:
                time.sleep(0.5)
                for child in children:
                    code = child.process.poll()
                    if code is None or stopping:
                        continue
                    if child.role == "web":
                        self.stderr.write(f"web server exited with {code}: stopping")
                        stopping = True
                        break
                    child.restarts += 1
                    self.stderr.write(f"{child.role} exited with {code}: restart #{child.restarts}")
                    time.sleep(min(2**child.restarts, 30))
                    child.process = subprocess.Popen(child.command, env=env, start_new_session=True)
        finally:
            self._stop(children)

    def _stop(self, children: list[Child]) -> None:
        self.stdout.write("Stopping…")
        # Workers first (warm shutdown lets the current step finish and requeues held jobs).
        ordered = [c for c in children if c.role.startswith("worker")] + [
            c for c in children if not c.role.startswith("worker")
        ]
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
        self.stdout.write("Stopped.")
