"""Scheduler load at 8 and 16 workers: passes and worker-row locks per second, before vs after.

Rows in a real PostgreSQL database (a scratch database, `atelier_bench_dispatch`, created and
dropped here; `--database-url` names the server), the real `inference.dispatch` and
`inference.transitions` code, and one thread per simulated GPU worker that heartbeats, claims
what it was dispatched, "runs" it for `--batch-s` and finishes it. A steady queue of jobs keeps
every worker busy. Two wirings of the same code are timed side by side:

* before: every heartbeat ran a full pass (`sweep()`: reap + dispatch, locking every live worker
  row) and so did every finished batch (`dispatch_pending()`), plus the sweeper's loop;
* after: a heartbeat is one UPDATE of the worker's own row, a finished batch only wakes the
  dispatcher (`worker_batch_done`: a NOTIFY), and the sweeper alone runs passes: every heartbeat
  period, and at once when woken (`inference/dispatch_wake.py`; wakes together make one pass).

A "pass" is one `dispatch_pending` call; "row locks" counts the worker rows it locked (all live
workers: every pass is a full one). `bench/dispatch_scale.py` times one pass at scale. The heartbeat period is scaled down
(`--heartbeat-s`, 0.5 s instead of production's 2 s) so a short run sees many of them; the
ratio is what matters. The last line printed is one JSON object.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/atelier .venv/bin/python bench/dispatch_load.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SCRATCH_DB = "atelier_bench_dispatch"


def _scratch_url(server_url: str) -> str:
    base, _, _ = server_url.rpartition("/")
    return f"{base}/{SCRATCH_DB}"


def _recreate(server_url: str) -> None:
    import psycopg

    maintenance = server_url.replace("postgres://", "postgresql://", 1).rpartition("/")[0] + "/postgres"
    with psycopg.connect(maintenance, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {SCRATCH_DB} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {SCRATCH_DB}")


class Counter:
    """Passes and worker-row locks, counted by wrapping `inference.dispatch.dispatch_pending`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.passes = self.full_passes = self.row_locks = 0

    def install(self, dispatch, workers: int) -> None:
        original = dispatch.dispatch_pending

        def counted() -> int:
            with self.lock:
                self.passes += 1
                self.full_passes += 1
                self.row_locks += workers
            return original()

        dispatch.dispatch_pending = counted
        self.restore = lambda: setattr(dispatch, "dispatch_pending", original)


def run(mode: str, workers: int, args: argparse.Namespace) -> dict[str, float]:
    from django.db import close_old_connections, connection

    from inference import dispatch
    from inference.models import Job, Worker
    from inference.transitions import job_claim, job_succeed, worker_batch_done, worker_heartbeat, worker_register
    from tenants.models import Tenant, UsageRecord

    UsageRecord.objects.all().delete()
    Job.objects.all().delete()
    Worker.objects.all().delete()
    tenant = Tenant.objects.get(slug="bench")
    owner = tenant.memberships.first().user
    names = [f"bench{index}@{mode}" for index in range(workers)]
    for name in names:
        worker_register(name=name, device="cpu", device_memory_bytes=None, max_batch=1)
        worker_heartbeat(name=name, loaded_models=["ckpt"])
    queued_target = 4 * workers

    def top_up() -> None:
        missing = queued_target - Job.objects.filter(status=Job.Status.QUEUED).count()
        Job.objects.bulk_create([
            Job(owner=owner, tenant=tenant, params={"steps": 20, "width": 512, "height": 512}, checkpoint_title="c",
                checkpoint_path="c", checkpoint_sha256="ckpt", model_key="ckpt", batch_key="b", seeds=[1],
                total_steps=20)
            for _ in range(max(missing, 0))
        ])

    top_up()
    counter = Counter()
    counter.install(dispatch, workers)
    stop = threading.Event()
    done = [0]
    errors: list[str] = []

    def worker_loop(name: str) -> None:
        next_beat = time.monotonic()
        try:
            while not stop.is_set():
                close_old_connections()
                if time.monotonic() >= next_beat:
                    worker_heartbeat(name=name, loaded_models=["ckpt"])
                    if mode == "before":
                        dispatch.sweep()
                    next_beat += args.heartbeat_s
                mine = list(Job.objects.filter(worker__name=name, status=Job.Status.DISPATCHED).values_list("public_id", "attempts"))
                if not mine:
                    time.sleep(0.02)
                    continue
                for public_id, attempt in mine:
                    job = job_claim(public_id=public_id, attempt=attempt, worker_name=name, total_steps=20)
                    time.sleep(args.batch_s)
                    if job and job_succeed(job=job, attempt=attempt, outputs=[], infotexts=[], gpu_seconds=args.batch_s):
                        with counter.lock:
                            done[0] += 1
                if mode == "before":
                    worker_heartbeat(name=name, loaded_models=["ckpt"])
                    dispatch.dispatch_pending_safely()
                else:
                    worker_batch_done(name=name, loaded_models=["ckpt"])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(f"{name}: {exc!r}")
        finally:
            connection.close()

    def sweeper_loop() -> None:
        from inference.dispatch_wake import DispatchWaiter

        waiter = DispatchWaiter() if mode == "after" else None
        next_beat = time.monotonic() + args.heartbeat_s
        try:
            while not stop.is_set():
                if waiter is None:
                    stop.wait(args.heartbeat_s)
                else:
                    waiter.wait(max(0.0, next_beat - time.monotonic()))
                close_old_connections()
                full = time.monotonic() >= next_beat
                dispatch.sweep(reap=full)
                if full:
                    next_beat = time.monotonic() + args.heartbeat_s
                    top_up()
        finally:
            if waiter is not None:
                waiter.close()
            connection.close()

    threads = [threading.Thread(target=worker_loop, args=(name,)) for name in names]
    threads.append(threading.Thread(target=sweeper_loop))
    started = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(args.seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    counter.restore()
    if errors:
        raise SystemExit(f"{mode}: {errors[:3]}")
    return {
        "passes_per_s": round(counter.passes / elapsed, 1),
        "full_passes_per_s": round(counter.full_passes / elapsed, 1),
        "row_locks_per_s": round(counter.row_locks / elapsed, 1),
        "jobs_per_s": round(done[0] / elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/atelier"))
    parser.add_argument("--seconds", type=float, default=6.0, help="measured time per run")
    parser.add_argument("--heartbeat-s", type=float, default=0.5)
    parser.add_argument("--batch-s", type=float, default=0.3, help="how long a simulated batch runs")
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 16])
    args = parser.parse_args()

    _recreate(args.database_url)
    os.environ["DATABASE_URL"] = _scratch_url(args.database_url)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.pop("REDIS_URL", None)  # job events stay in this process (in-memory channel layer)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from config.celery import app as celery_app
    from tenants.models import Membership, Tenant

    celery_app.conf.broker_url = "memory://"  # batches are "sent" to no real worker: the threads look in the DB
    call_command("migrate", verbosity=0)
    tenant = Tenant.objects.create(slug="bench", name="bench")
    Membership.objects.create(user=get_user_model().objects.create(username="bench"), tenant=tenant)

    figures: dict[str, dict[str, dict[str, float]]] = {}
    print(f"{'workers':>7} {'mode':>7} {'passes/s':>9} {'full/s':>7} {'row locks/s':>12} {'jobs/s':>7}")
    try:
        for workers in args.workers:
            for mode in ("before", "after"):
                result = run(mode, workers, args)
                figures.setdefault(str(workers), {})[mode] = result
                print(f"{workers:>7} {mode:>7} {result['passes_per_s']:>9} {result['full_passes_per_s']:>7} "
                      f"{result['row_locks_per_s']:>12} {result['jobs_per_s']:>7}")
            before, after = figures[str(workers)]["before"], figures[str(workers)]["after"]
            print(f"{workers:>7} {'ratio':>7} {after['passes_per_s'] / max(before['passes_per_s'], 1e-9):>9.2f} "
                  f"{'':>7} {after['row_locks_per_s'] / max(before['row_locks_per_s'], 1e-9):>12.2f} "
                  f"{after['jobs_per_s'] / max(before['jobs_per_s'], 1e-9):>7.2f}")
    finally:
        from django.db import connections

        connections.close_all()
        _recreate(args.database_url)  # leave an empty scratch database behind, not bench rows
    print(json.dumps({"heartbeat_s": args.heartbeat_s, "batch_s": args.batch_s, "workers": figures}))


if __name__ == "__main__":
    main()
