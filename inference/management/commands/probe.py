"""`manage.py probe worker|sweeper --live|--ready [-n NAME]`: Kubernetes exec probes for the
processes that serve no HTTP (the web process has `/healthz` and `/readyz`).

* `--live`: the process's own loop touched its heartbeat file (`inference/health.py`) within
  `--max-age` seconds (default: `ATELIER_WORKER_DEAD_AFTER_SECONDS`, the age at which the
  sweeper declares a silent worker dead). No I/O beyond one `stat`: a database or broker outage
  does not fail it, so Kubernetes does not restart healthy processes that wait for one.
* `--ready`: the database and the broker answer (`inference.health.run_checks`); for a worker
  also its own `Worker` row is online with a heartbeat younger than the dead-worker timeout.

`-n` takes the worker's Celery node name as given to `celery worker -n`, templates included
(`gpu@%h` is expanded with this host's name, as Celery does), so the probe and the worker
command can share one string. Exit status 0 (with `ok`) or 1 (with the reason on stderr).
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from inference.health import heartbeat_age, run_checks, sweeper_name


class Command(BaseCommand):
    help = "Liveness (--live) or readiness (--ready) of a worker or the sweeper, for exec probes."
    requires_system_checks: list[str] = []  # a probe runs every few seconds: answer, do not audit

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=("worker", "sweeper"))
        mode = parser.add_mutually_exclusive_group(required=True)
        mode.add_argument("--live", action="store_true", help="its loop ran recently (no network I/O)")
        mode.add_argument("--ready", action="store_true", help="database and broker reachable (a worker: online)")
        parser.add_argument("-n", "--name", default="", help="the worker's node name, as given to celery -n (%%h ok)")
        parser.add_argument("--max-age", type=float, default=None, help="seconds; default ATELIER_WORKER_DEAD_AFTER_SECONDS")

    def handle(self, *args, kind: str, live: bool, ready: bool, name: str, max_age: float | None, **options):
        if kind == "worker" and not name:
            raise CommandError("probe worker: -n NAME is required (the worker's celery -n, e.g. gpu@%h)")
        name = _expand_node_name(name) if kind == "worker" else sweeper_name()
        problem = _liveness(kind, name, max_age) if live else _readiness(kind, name)
        if problem:
            raise CommandError(f"{kind} {name}: {problem}")
        self.stdout.write("ok")


def _expand_node_name(template: str) -> str:
    from celery.utils.nodenames import default_nodename, host_format

    return host_format(default_nodename(template))


def _liveness(kind: str, name: str, max_age: float | None) -> str:
    limit = settings.ATELIER_WORKER_DEAD_AFTER_SECONDS if max_age is None else max_age
    age = heartbeat_age(kind, name)
    if age is None:
        return "not alive: it has not touched its heartbeat file yet"
    if age > limit:
        return f"not alive: its heartbeat file is {age:.0f} s old (limit {limit:g} s)"
    return ""


def _readiness(kind: str, name: str) -> str:
    failed = [f"{r.name}: {r.reason}" for r in run_checks(("database", "broker")) if not r.ok]
    if failed:
        return "not ready: " + "; ".join(failed)
    if kind == "worker":
        from inference.dispatch import live_workers
        from inference.models import Worker

        if not live_workers().filter(name=name).exists():
            state = Worker.objects.filter(name=name).values_list("state", flat=True).first()
            return f"not ready: it is not an online worker with a recent heartbeat (state: {state or 'unregistered'})"
    return ""
