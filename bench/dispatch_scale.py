"""One dispatch decision at scale, through PostgreSQL: 64 workers, 1000 users in 50 tenants, 5000 queued jobs.

A "decision" is one `inference.dispatch.dispatch_pending()` pass, the dispatcher's whole pass:
lock the live workers, read what runs on them, the queued window, the owners' terms and the
fair-share state, run the policy, move the chosen jobs to dispatched, read them back and send
their batches (to an in-memory broker: no worker runs them; job events to the in-memory channel
layer). Between decisions, untimed, the batches the last one placed end and as many new jobs are
queued (plain SQL and `bulk_create`), so each decision sees 5000 queued jobs, as in a steady
state. 5000 recently finished jobs are there for fair share. Two scenarios:

* steady: 63 workers busy (running jobs of their own) and one free, as when the dispatcher is
  woken by one worker finishing its batch: the decision places one batch. The goal (≤ 5 ms p95)
  is about this one.
* all free: the 64 workers free at once (a cold start): one pass places 64 batches.

Each scenario is timed three ways, in the same run on the same rows: with the sweeper's
`QueueMemory` kept between passes (what `manage.py sweeper` does), with the window read in full
every pass (`dispatch_pending()` without a memory: what a pass cost before the memory), and the
pure policy alone (`plan_assignments` over the same rows, read once: the floor), itself twice:
over the memory's `QueueIndex` kept between calls (the dispatcher's way) and over the plain list
(the index rebuilt from 5000 jobs each call, as before it was kept). Per decision:
p50 and p95 milliseconds, database queries (counted with `connection.execute_wrapper`) and jobs
placed. The last line is one JSON object.

A scratch database (`atelier_bench_dispatch_scale`) is created and dropped here;
`--database-url` names the server.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/atelier .venv/bin/python bench/dispatch_scale.py
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SCRATCH_DB = "atelier_bench_dispatch_scale"
MODELS = [f"{index:064x}" for index in range(1, 9)]  # 8 checkpoints
SIZES = [(512, 512), (768, 768), (1024, 1024), (512, 768)]


def _recreate(server_url: str) -> None:
    import psycopg

    maintenance = server_url.replace("postgres://", "postgresql://", 1).rpartition("/")[0] + "/postgres"
    with psycopg.connect(maintenance, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {SCRATCH_DB} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {SCRATCH_DB}")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


class Rows:
    """Makes the bench's rows: tenants, members, live workers, jobs."""

    def __init__(self, args: argparse.Namespace) -> None:
        from django.contrib.auth import get_user_model
        from django.utils import timezone

        from inference.dispatch import worker_queue_name
        from inference.models import Worker
        from tenants.models import Membership, Tenant

        self.rng = random.Random(7)
        now = timezone.now()
        self.tenants = Tenant.objects.bulk_create(
            [Tenant(slug=f"t{index}", name=f"t{index}", share_weight=1.0 + index % 3) for index in range(args.tenants)]
        )
        self.users = get_user_model().objects.bulk_create(
            [get_user_model()(username=f"u{index}") for index in range(args.users)]
        )
        Membership.objects.bulk_create(
            [Membership(user=user, tenant=self.tenants[index % len(self.tenants)]) for index, user in enumerate(self.users)]
        )
        Worker.objects.bulk_create([
            Worker(name=f"gpu{index}@bench", queue=worker_queue_name(f"gpu{index}@bench"), max_batch=4,
                   state=Worker.State.ONLINE, last_heartbeat=now, loaded_models=[MODELS[index % len(MODELS)]])
            for index in range(args.workers)
        ])

    def job(self, status: str, **fields):
        from inference.models import Job

        owner = self.rng.randrange(len(self.users))
        model = MODELS[min(int(self.rng.expovariate(0.5)), len(MODELS) - 1)]  # a few popular checkpoints
        width, height = self.rng.choice(SIZES)
        return Job(
            owner_id=self.users[owner].pk, tenant_id=self.tenants[owner % len(self.tenants)].pk, status=status,
            params={"steps": 20, "width": width, "height": height, "prompt": "a lighthouse at dusk, " * 8},
            checkpoint_title="c", checkpoint_path="c", checkpoint_sha256=model, model_key=model,
            batch_key=f"m{MODELS.index(model)}-{width}x{height}", seeds=[self.rng.randrange(2**31)], total_steps=20,
            **fields,
        )

    def populate(self, args: argparse.Namespace) -> None:
        """The queue, the busy workers' jobs, and recent history for fair share."""
        from django.db import connection
        from django.utils import timezone

        from inference.models import Job, Worker

        now = timezone.now()
        rng = self.rng
        history = [
            self.job(Job.Status.SUCCEEDED, gpu_seconds=rng.uniform(1, 20), finished_at=now - timedelta(seconds=rng.uniform(0, 3600)))
            for _ in range(args.history)
        ]
        workers = list(Worker.objects.order_by("pk"))
        running = [  # what keeps every worker but the first busy in the steady scenario
            self.job(Job.Status.RUNNING, worker=worker, attempts=1, started_at=now - timedelta(seconds=5), progress=0.5,
                     batch_id="busy")
            for worker in workers[1:] for _ in range(worker.max_batch)
        ]
        Job.objects.bulk_create(history, batch_size=1000)
        Job.objects.bulk_create(running, batch_size=1000)
        Job.objects.bulk_create([self.job(Job.Status.QUEUED) for _ in range(args.jobs)], batch_size=1000)
        with connection.cursor() as cursor:  # created_at is auto_now_add: spread the queue over the last hour
            cursor.execute("UPDATE inference_job SET created_at = now() - interval '1 hour' + (interval '1 second' * (id % 3600))"
                           " WHERE status = 'queued'")
            # As autovacuum leaves a production table: the visibility map set, so the queue's
            # checksum reads the partial index `job_queued_order` alone (an index-only scan).
            cursor.execute("VACUUM ANALYZE")

    def advance(self) -> None:
        """Untimed, between decisions: the batches the last decision placed end (their worker is
        free again; out of the fair-share horizon: no finished_at) and as many new jobs are
        queued, so the next decision sees 5000 queued jobs again, as in a steady state."""
        from django.db import connection

        from inference.models import Job

        with connection.cursor() as cursor:
            cursor.execute("UPDATE inference_job SET status = 'cancelled' WHERE status = 'dispatched'")
            ended = cursor.rowcount
            cursor.execute("UPDATE inference_worker SET last_heartbeat = now()")
        Job.objects.bulk_create([self.job(Job.Status.QUEUED) for _ in range(ended)])


def all_free() -> None:
    """From the steady scenario to the cold one: the busy workers' jobs end (out of the fair-share
    horizon: no finished_at), so every worker is free."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("UPDATE inference_job SET status = 'cancelled' WHERE batch_id = 'busy'")


def time_decisions(rows: Rows, decisions: int, *, remember: bool) -> tuple[list[float], list[int], int, int]:
    """`decisions` passes, each timed with its queries counted; `remember`: with the sweeper's
    `QueueMemory` kept between them (else each reads the window in full). Returns the durations
    (ms), the query counts, the jobs placed and the memory's full reads."""
    from django.db import connection

    from inference.dispatch import dispatch_pending
    from inference.dispatch_memory import QueueMemory

    queries = [0]

    def count(execute, sql, params, many, context):
        queries[0] += 1
        return execute(sql, params, many, context)

    memory = QueueMemory()
    durations, counts, placed = [], [], 0
    for index in range(decisions + 1):  # the first one, untimed, fills the memory (the sweeper's beat does)
        rows.advance()
        queries[0] = 0
        with connection.execute_wrapper(count):
            started = time.perf_counter()
            moved = dispatch_pending(memory=memory if remember else None)
            elapsed = (time.perf_counter() - started) * 1000
        if index:
            durations.append(elapsed)
            counts.append(queries[0])
            placed += moved
    return durations, counts, placed, memory.reloads - 1


def time_policy(decisions: int, *, free: int, kept: bool) -> list[float]:
    """The floor: `plan_assignments` alone over the same rows, read once before the timing,
    with `free` workers free; `kept`: over the memory's `QueueIndex`, kept between calls (what
    the dispatcher does), else over the plain list (the index built again every call, as before)."""
    from django.utils import timezone

    from inference.dispatch import fair_share_state, live_workers, policy_config
    from inference.dispatch_memory import QueueMemory
    from inference.scheduler import WorkerState, plan_assignments

    now = timezone.now()
    memory = QueueMemory()
    pending = memory.window(now)
    states = [
        WorkerState(worker_id=w.pk, free=index < free, max_batch=w.max_batch, resident_models=tuple(w.loaded_models),
                    cached_models=tuple(w.cached_models), active_networks=w.active_networks,
                    busy_until=None if index < free else now.timestamp() + 5, busy_model=None if index < free else w.loaded_models[0])
        for index, w in enumerate(live_workers().order_by("pk"))
    ]
    config = policy_config()
    fair = fair_share_state(now, config)
    durations = []
    for _ in range(decisions):
        started = time.perf_counter()
        plan_assignments(memory.index if kept else pending, states, fair, now=now.timestamp(), config=config)
        durations.append((time.perf_counter() - started) * 1000)
    return durations


def _figures(durations: list[float], queries: list[int], placed: int) -> dict:
    return {"p50_ms": round(statistics.median(durations), 2), "p95_ms": round(_percentile(durations, 0.95), 2),
            "queries": statistics.median(queries) if queries else 0, "placed": round(placed / len(durations), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/atelier"))
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=5000, help="queued jobs")
    parser.add_argument("--history", type=int, default=5000, help="recently finished jobs (fair share)")
    parser.add_argument("--decisions", type=int, default=60)
    args = parser.parse_args()

    _recreate(args.database_url)
    os.environ["DATABASE_URL"] = args.database_url.rpartition("/")[0] + f"/{SCRATCH_DB}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.pop("REDIS_URL", None)  # job events stay in this process (in-memory channel layer)
    import logging

    import django

    django.setup()
    logging.disable(logging.WARNING)
    from django.core.management import call_command

    from config.celery import app as celery_app

    celery_app.conf.broker_url = "memory://"  # batches go nowhere: only the decision is timed
    call_command("migrate", verbosity=0)
    cold_decisions = max(args.decisions // 4, 3)
    results: dict[str, dict] = {}
    try:
        rows = Rows(args)
        rows.populate(args)
        time_decisions(rows, 3, remember=True)  # warm-up: connections, plans, caches
        *steady, reloads = time_decisions(rows, args.decisions, remember=True)
        results["steady, with the sweeper's memory"] = {**_figures(*steady), "full_reads": reloads}
        results["steady, window read every pass"] = _figures(*time_decisions(rows, args.decisions, remember=False)[:3])
        results["steady, policy alone, index kept"] = _figures(time_policy(args.decisions, free=1, kept=True), [], 0)
        results["steady, policy alone, index rebuilt"] = _figures(time_policy(args.decisions, free=1, kept=False), [], 0)
        all_free()
        *cold, reloads = time_decisions(rows, cold_decisions, remember=True)
        results["all free, with the sweeper's memory"] = {**_figures(*cold), "full_reads": reloads}
        results["all free, window read every pass"] = _figures(*time_decisions(rows, cold_decisions, remember=False)[:3])
        results["all free, policy alone, index kept"] = _figures(
            time_policy(cold_decisions, free=args.workers, kept=True), [], 0)
        results["all free, policy alone, index rebuilt"] = _figures(
            time_policy(cold_decisions, free=args.workers, kept=False), [], 0)
    finally:
        from django.db import connections

        connections.close_all()
        _recreate(args.database_url)  # leave an empty scratch database behind, not bench rows
    print(f"{args.workers} workers, {args.users} users in {args.tenants} tenants, {args.jobs} queued jobs, "
          f"{args.history} recently finished; steady: one worker free per decision, {args.decisions} decisions; "
          f"all free: {args.workers} free, {cold_decisions} decisions")
    print(f"load average: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
    print(f"{'':<42} {'p50 ms':>8} {'p95 ms':>8} {'queries':>8} {'placed':>7}")
    for name, figures in results.items():
        print(f"{name:<42} {figures['p50_ms']:>8} {figures['p95_ms']:>8} {figures['queries']:>8} {figures['placed']:>7}")
    print(json.dumps({"workers": args.workers, "users": args.users, "tenants": args.tenants, "queued": args.jobs,
                      "load_average": os.getloadavg(), "results": results}))


if __name__ == "__main__":
    main()
