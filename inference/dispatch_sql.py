"""The dispatch pass's hot statements on PostgreSQL, as SQL written once: fewer round trips, no ORM per pass.

A steady pass (one worker freed, one batch placed) was nine statements, each made by the ORM
again every pass; at ~0.3–1 ms a round trip plus the ORM's own cost on a loaded host that was
most of the pass (`bench/dispatch_scale.py`). On PostgreSQL the pass uses these instead:

* `pass_begin`: one statement sets `synchronous_commit = off` for the transaction (as SET LOCAL
  did), reads the database's clock (`statement_timestamp()`, as `database_now()` does) and locks
  the live workers' rows (FOR UPDATE, live by that same clock);
* `live_workers_and_jobs`: the locked workers and every job on a worker (dispatched or running,
  a dead worker's too: they count in fair share) in one FULL JOIN. It is a second statement on
  purpose: in READ COMMITTED each statement takes a new snapshot, so the jobs are read after the
  locks are held, as before; read in the locking statement, a pass that waited for another's
  locks would not see the batches that pass placed and could fill the same worker twice;
* `jobs_move`: the batches' UPDATE (compare-and-set on the status) RETURNING the moved rows,
  instead of an UPDATE and a read-back.

SQLite (the embedded default, one sweeper) keeps the ORM path in `inference/dispatch.py`.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone as dt_timezone
from typing import Any

from django.conf import settings
from django.db import connection

from inference.dispatch_reads import ON_WORKER, LiveWorker, OnWorker
from inference.models import Job, Worker

_EPOCH = datetime(1970, 1, 1, tzinfo=dt_timezone.utc)
_WORKER = Worker._meta.db_table
_JOB = Job._meta.db_table

_BEGIN = (
    "SELECT set_config('synchronous_commit', 'off', true), statement_timestamp(),"
    f" ARRAY(SELECT id FROM {_WORKER} WHERE state = %s"
    " AND last_heartbeat >= statement_timestamp() - %s * interval '1 second' ORDER BY id FOR UPDATE)"
)
# The locked workers (still live: they cannot change while locked) and every job on a worker,
# earliest started first as `jobs_on_workers` reads them (a worker without jobs: job columns NULL;
# a job on a worker not locked here: worker columns NULL; its start in microseconds since the
# epoch, exact, as an integer is far cheaper to read than a timestamp's text), and each worker's place in `Worker`'s
# order (by name, in the database's collation), the order `live_workers()` gives them.
_WORKERS_AND_JOBS = (
    "SELECT live.id, live.name, live.queue, live.max_batch, live.loaded_models, live.cached_models,"
    " live.active_networks, job.worker_id, job.status, (extract(epoch FROM job.started_at) * 1000000)::bigint,"
    " job.progress, job.model_key,"
    " job.owner_id, job.tenant_id, live.place"
    " FROM (SELECT id, name, queue, max_batch, loaded_models, cached_models, active_networks,"
    f"  row_number() OVER (ORDER BY name) AS place FROM {_WORKER}"
    "  WHERE id = ANY(%s) AND state = %s AND last_heartbeat >= %s) AS live"
    f" FULL JOIN (SELECT worker_id, status, started_at, progress, model_key, owner_id, tenant_id FROM {_JOB}"
    "  WHERE status IN (%s, %s)) AS job ON job.worker_id = live.id"
    " ORDER BY job.started_at, live.id"
)
# A job's columns but its parameters (the message and the job event need the rest), as the
# read-back after the UPDATE read them (`defer("params")`).
_RETURNED = [field.column for field in Job._meta.concrete_fields if field.name != "params"]
_MOVE = (
    f"UPDATE {_JOB} AS job SET status = %s, worker_id = plan.worker_id, attempts = job.attempts + 1,"
    " dispatched_at = %s, batch_id = plan.batch_id"
    " FROM unnest(%s::bigint[], %s::bigint[], %s::text[]) AS plan(id, worker_id, batch_id)"
    " WHERE job.id = plan.id AND job.status = %s"
    " RETURNING " + ", ".join(f"job.{column}" for column in _RETURNED)
)


def pass_begin() -> tuple[datetime, list[int]]:
    """Start the pass's transaction (commit without waiting for the disk: see `dispatch_pending`):
    the database's clock, and the ids of the live workers, locked."""
    with connection.cursor() as cursor:
        cursor.execute(_BEGIN, [Worker.State.ONLINE, settings.ATELIER_WORKER_DEAD_AFTER_SECONDS])
        _, now, locked = cursor.fetchone()
    return now.astimezone(dt_timezone.utc), list(locked)


def live_workers_and_jobs(locked: list[int], live_since: datetime) -> tuple[list[LiveWorker], dict[int | None, list[OnWorker]]]:
    """The locked live workers (by id), and worker id → its jobs (`jobs_on_workers`' answer)."""
    workers: dict[int, tuple[int, LiveWorker]] = {}
    on_worker: dict[int | None, list[OnWorker]] = {}
    with connection.cursor() as cursor:
        cursor.execute(_WORKERS_AND_JOBS, [locked, Worker.State.ONLINE, live_since, *ON_WORKER])
        rows = cursor.fetchall()
    for row in rows:
        worker_id = row[0]
        if worker_id is not None and worker_id not in workers:
            workers[worker_id] = (row[14], LiveWorker(worker_id, row[1], row[2], row[3], _json(row[4]), _json(row[5]), row[6]))
        if row[8] is not None:  # a job (its status is never NULL)
            started = None if row[9] is None else _EPOCH + timedelta(microseconds=row[9])
            on_worker.setdefault(row[7], []).append(OnWorker(row[7], row[8], started, *row[10:14]))
    return [worker for _, worker in sorted(workers.values())], on_worker


def jobs_move(planned: dict[int, tuple[Any, str]], now: datetime) -> list[Job]:
    """Move the planned jobs (pk → (worker, batch id)) queued → dispatched, by compare-and-set on
    the status, in one UPDATE; the moved jobs (without `params`), as it left them, in queue order."""
    ids = list(planned)
    params = [Job.Status.DISPATCHED, now, ids, [planned[pk][0].pk for pk in ids], [planned[pk][1] for pk in ids],
              Job.Status.QUEUED]
    moved = list(Job.objects.raw(_MOVE, params))
    moved.sort(key=lambda job: (job.created_at, job.pk))
    return moved


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value
