"""Applies the scheduler's decisions: the dispatcher side of the job lifecycle (reaping dead
workers lives in `inference/reaping.py`; its functions are importable from here too).

Where dispatch runs: in ONE place, `manage.py sweeper` (started by `manage.py serve`, the
end-to-end harness and docker/). A pass (`dispatch_pending()`) reads every live worker, locks
their rows and the queued window, and runs the policy once over all of them. The sweeper runs
`sweep()`: every `ATELIER_HEARTBEAT_SECONDS` a full pass (reap dead workers, the EAS pump, then
dispatch), and in between a dispatch-only pass as soon as it is woken.

The sweeper hands each pass its `QueueMemory` (`inference/dispatch_memory.py`): the queued window
as its last pass left it, so a woken pass reads only what changed (new jobs, one aggregate to
see any other change) instead of 5000 rows; the periodic pass reads everything again. A pass
reads the window as tuples (`inference/dispatch_reads.py`), moves each batch with one UPDATE and
commits without waiting for the disk (`bench/dispatch_scale.py` has the figures). On PostgreSQL
its hot statements are SQL written once, five round trips in a steady pass
(`inference/dispatch_sql.py`); SQLite keeps the ORM's.

Nobody else runs a pass. A submission (`job_submit`, a job group), a worker finishing a batch,
registering, stopping or seen exiting *wakes* the dispatcher (`inference/dispatch_wake.py`:
`NOTIFY atelier_dispatch` in the committing transaction on PostgreSQL, a datagram to the
sweeper's Unix socket under `DATA_DIR` on SQLite); wakes that arrive together make one pass.
Workers only claim, report and finish (`inference/transitions.py`). Before this, the web process
ran a pass on every submit and each worker one over its own slot after every batch, so passes
overlapped and contended for the same rows (`bench/dispatch_load.py`, `bench/dispatch_scale.py`).

Failover: the sweeper that holds the leadership lock (`inference.dispatch_wake.LEADER_LOCK`, on
its LISTEN connection) runs the passes; a second replica waits, trying the lock at each beat and
wake, so only one decides. A leader killed (`kill -9`) loses the lock with its connection and the
other takes over: an uncommitted plan rolls back (its jobs stay queued), a batch committed but
never sent is requeued by the reaper after `ATELIER_DISPATCH_TIMEOUT_SECONDS`. Each pass also
holds `DISPATCHER_LOCK` (`sweep`), so a `manage.py sweeper --once` beside it skips instead.

A worker is dead for dispatch when its heartbeat is `ATELIER_WORKER_DEAD_AFTER_SECONDS` old
(`workers_reap`), or at once when the supervisor that started it saw its process exit
(`worker_exited`, called by `manage.py serve`); both take its jobs back through `requeue_or_fail`
(`inference/reaping.py`: a job only dispatched goes back for free, a running one spends a started
attempt). Every dispatch gives a job a new dispatch number (`Job.attempts`), never reused: it
is the token of the message and of the worker's compare-and-set.

Passes may still overlap (a test calling `dispatch_pending()` beside a sweeper, two sweepers on
SQLite): worker rows are locked while a plan is applied, queued jobs are locked with SKIP LOCKED,
and each job moves queued → dispatched by compare-and-set, so a job is never handed out twice.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, CharField, F, Field, IntegerField, Value, When

from config.celery import app as celery_app
from config.logcontext import log_context
from inference.clock import database_now, live_since
from inference.dispatch_memory import QueueMemory
from inference.dispatch_reads import (  # noqa: F401 - QUEUED_WINDOW, pending_job: read from here too
    ON_WORKER,
    LiveWorker,
    QUEUED_WINDOW,
    fair_share_state,
    jobs_on_workers,
    live_workers,
    pending_job,
    policy_config,
    worker_state,
)
from inference.dispatch_sql import jobs_move, live_workers_and_jobs, pass_begin
from inference.endings import job_ended
from inference.events import job_event_publish, job_events_publish
from inference.models import Job, Worker
from inference.reaping import requeue_or_fail, worker_exited, workers_reap  # noqa: F401 - their home was here
from inference.scheduler import plan_assignments
from tenants.quotas import dispatch_refusals

logger = logging.getLogger(__name__)

RUN_BATCH_TASK = "atelier.run_batch"
# A worker's columns a pass reads (its row locked).
WORKER_COLUMNS = ("id", "name", "queue", "max_batch", "loaded_models", "cached_models", "active_networks")


def worker_queue_name(worker_name: str) -> str:
    """`gpu0@host-1` → `atelier.worker.gpu0.host-1` (every broker accepts these characters)."""
    return "atelier.worker." + re.sub(r"[^A-Za-z0-9_-]", ".", worker_name)


def dispatch_pending(*, memory: QueueMemory | None = None) -> int:
    """Place queued jobs on free live workers, as batches; returns how many jobs were dispatched.
    The dispatcher's pass (`sweep`); everyone else calls `dispatch_wake()` instead. `memory`: the
    queued window as the dispatcher's last pass left it (`inference/dispatch_memory.py`); without
    one, the window is read in full."""
    memory = memory if memory is not None else QueueMemory()
    over_quota: list[Job] = []
    with transaction.atomic():
        batches = _planned_batches(memory, over_quota)
    for job in over_quota:  # their ending, once their failure is committed
        job_event_publish(job)
        job_ended(job)
    sent: list[Job] = []
    for worker, jobs in batches:
        # The placement's log lines name the worker, the batch and its jobs (config/logcontext.py).
        with log_context(worker=worker.name, batch=jobs[0].batch_id, job=[job.public_id for job in jobs]):
            logger.info("dispatched %d job(s) to %s", len(jobs), worker.name)
            if _send(worker, jobs):
                sent.extend(jobs)
    job_events_publish(sent)  # after every batch left: a worker's claim need not wait for them
    return sum(len(jobs) for _, jobs in batches)


def _planned_batches(memory: QueueMemory, over_quota: list[Job]) -> list[tuple[LiveWorker | Worker, list[Job]]]:
    """`dispatch_pending`'s transaction: lock the live workers, read, plan and move the jobs to
    dispatched (the jobs failed for a rate window are added to `over_quota`). One clock, the
    database's, for dispatched_at and liveness, whichever host runs the pass.

    The queued jobs are not locked: each moves queued → dispatched by compare-and-set, so a job
    cancelled meanwhile, or taken by another pass, is simply not moved (and is forgotten)."""
    workers: list[LiveWorker] | list[Worker]
    if connection.vendor == "postgresql":
        # Its commit need not wait for the disk (`pass_begin` sets it): were the database to crash
        # and lose it, the jobs are queued again and a worker's claim of the lost attempt finds
        # nothing to claim (compare-and-set on status and attempt), so nothing runs twice or is lost.
        now, locked = pass_begin()
        workers, on_worker = live_workers_and_jobs(locked, live_since(now))
    else:
        now = database_now()
        workers = list(live_workers(now).select_for_update().only(*WORKER_COLUMNS))
        on_worker = jobs_on_workers()
    states = [worker_state(w, on_worker.get(w.pk, []), now) for w in workers]
    if not any(state.free for state in states):
        return []
    pending = memory.window(now)
    if not pending:
        return []
    # The owners' limits in force: running caps for the policy (in `pending`), and rate windows
    # re-checked (a limit lowered, or GPU time over its estimate, since the job was queued).
    if memory.rate_limited:
        in_window = {job.job_id for job in pending}
        rows = [job for job in Job.objects.filter(status=Job.Status.QUEUED, owner_id__in=memory.rate_limited)
                .select_related("tenant").order_by("created_at", "pk") if job.pk in in_window]
        refused = dispatch_refusals(rows, memory.terms, now=now)
        if refused:
            over_quota.extend(_fail_over_quota(rows, refused, now))
            memory.forget(refused)
            pending = [job for job in pending if job.job_id not in refused]
            if not pending:
                return []
    config = policy_config()
    active = [job for jobs in on_worker.values() for job in jobs]
    fair = fair_share_state(now, config, finished=memory.finished_service(now, config), active=active)
    plan = plan_assignments(memory.index, states, fair, now=now.timestamp(), config=config)
    by_id = {w.pk: w for w in workers}
    planned: dict[int, tuple[LiveWorker | Worker, str]] = {}  # job pk → (its worker, its batch)
    for assignment in plan:
        batch_id = secrets.token_hex(8)
        planned.update((job_id, (by_id[assignment.worker_id], batch_id)) for job_id in assignment.job_ids)
        memory.forget(assignment.job_ids)
    if not planned:
        return []
    # Every batch moved by one UPDATE (compare-and-set on the status: a job cancelled meanwhile,
    # or taken by another pass, is not moved), read as it left them (for the message and the
    # event); a job that did not move does not carry its planned batch's (new, random) id.
    moved = jobs_move(planned, now) if connection.vendor == "postgresql" else _jobs_move_orm(planned, now)
    batches: dict[str, tuple[LiveWorker | Worker, list[Job]]] = {}
    for job in moved:
        worker, batch_id = planned[job.pk]
        if job.batch_id == batch_id and job.status == Job.Status.DISPATCHED:
            batches.setdefault(batch_id, (worker, []))[1].append(job)
    return list(batches.values())


def _jobs_move_orm(planned: dict[int, tuple[Worker, str]], now: datetime) -> list[Job]:
    """`jobs_move` on SQLite: the UPDATE, each job given its worker and batch by a CASE, then
    the planned rows read back (without `params`), in queue order."""
    ids = list(planned)
    Job.objects.filter(pk__in=ids, status=Job.Status.QUEUED).update(
        status=Job.Status.DISPATCHED,
        worker_id=_by_job(planned, lambda target: target[0].pk, IntegerField()),
        attempts=F("attempts") + 1,
        dispatched_at=now,
        batch_id=_by_job(planned, lambda target: target[1], CharField()),
    )
    return list(Job.objects.filter(pk__in=ids).defer("params").order_by("created_at", "pk"))


def _by_job(planned: dict[int, tuple[Worker, str]], value: Callable[[tuple[Worker, str]], object], output_field: Field) -> Case:
    """A CASE giving each planned job its batch's `value` (its worker's id, its batch's id)."""
    by_value: dict[object, list[int]] = {}
    for job_id, target in planned.items():
        by_value.setdefault(value(target), []).append(job_id)
    return Case(*(When(pk__in=job_ids, then=Value(each)) for each, job_ids in by_value.items()),
                output_field=output_field)


def _fail_over_quota(window: list[Job], refused: dict[int, str], now: datetime) -> list[Job]:
    """Fail the queued jobs `refused` names (pk → the quota's message), by compare-and-set: a job
    the owner cancelled meanwhile stays cancelled. Returns the jobs failed here, as failed."""
    failed = []
    for job in window:
        message = refused.get(job.pk)
        if message is None:
            continue
        if Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(
            status=Job.Status.FAILED, finished_at=now, error=message,
        ):
            job.status, job.finished_at, job.error = Job.Status.FAILED, now, message
            failed.append(job)
    return failed


def _send(worker: LiveWorker | Worker, jobs: list[Job]) -> bool:
    """Publish one task for the batch (`jobs`, as dispatched); True when it left. If it cannot be
    sent, its jobs go back to the queue (and False: no event for them). Their dispatch numbers are
    not given back: the next dispatch takes a new one, so no two messages ever carry the same
    (job, number). No attempt was started: none is spent."""
    try:
        _publish(worker.queue, [[job.public_id, job.attempts] for job in jobs])
    except Exception:  # noqa: BLE001 - the broker is down: leave the jobs for the next sweep
        logger.exception(
            "could not send %s to %s: back to the queue", [f"{j.public_id} attempt {j.attempts}" for j in jobs], worker.name
        )
        for job in jobs:
            Job.objects.filter(pk=job.pk, status=Job.Status.DISPATCHED, attempts=job.attempts).update(
                status=Job.Status.QUEUED, worker=None, dispatched_at=None, batch_id=""
            )
        return False
    return True


def _publish(queue: str, batch: list[list]) -> None:
    """Send one `run_batch` message to a worker's queue.

    On Redis through the app's producer pool: a producer (and its connection) held by this thread
    for this send only, so sends from the web server's threads never share one; a new connection
    per send cost ~8 ms of every submit's dispatch (bench/e2e_overhead.py). The embedded default's
    file broker keeps a connection of its own per send (it is a folder: nothing to save)."""
    if settings.CELERY_BROKER_URL.startswith("redis"):
        with celery_app.producer_or_acquire() as producer:
            celery_app.send_task(RUN_BATCH_TASK, args=[batch], queue=queue, producer=producer)
        return
    with celery_app.connection_for_write() as broker:
        celery_app.send_task(RUN_BATCH_TASK, args=[batch], queue=queue, connection=broker)


def dispatch_pending_safely() -> None:
    """A pass for callers that must not fail because of scheduling (the next sweep will retry)."""
    try:
        dispatch_pending()
    except Exception:  # noqa: BLE001
        logger.exception("dispatch failed; the next sweep will retry")


# The advisory lock a dispatcher holds for its pass ("atelier" in ASCII, as a bigint).
DISPATCHER_LOCK = 0x61_74_65_6C_69_65_72


def sweep(*, reap: bool = True, memory: QueueMemory | None = None) -> bool:
    """One dispatcher pass: reap (the periodic pass; `reap=False` for a wake's), then dispatch
    (with the sweeper's `memory` of the queue, read again in full on the periodic pass).
    False (nothing done) while another dispatcher is in its pass: on PostgreSQL the pass holds a
    session advisory lock, so of two sweepers (failover) only one decides at a time, and one
    killed mid-pass loses the lock with its connection. (It is not one transaction: a batch's
    message must leave only after its jobs are committed.)"""
    from inference.eas.bridge import eas_sweep_safely

    if connection.vendor != "postgresql":  # SQLite: the embedded default runs one sweeper
        _pass(reap, memory, eas_sweep_safely)
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [DISPATCHER_LOCK])
        if not cursor.fetchone()[0]:
            return False
    try:
        _pass(reap, memory, eas_sweep_safely)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [DISPATCHER_LOCK])
    return True


def _pass(reap: bool, memory: QueueMemory | None, eas_sweep_safely) -> None:
    if reap:
        workers_reap()
        lost_batches_resend()
        eas_sweep_safely()  # EAS input items that may run now become queued jobs
        if memory is not None:
            memory.invalidate()  # each beat, the window, terms and weights read again in full
    dispatch_pending(memory=memory)


def lost_batches_resend(now: datetime | None = None) -> int:
    """Send again, once, the batches a broker lost: jobs dispatched to a live worker that runs
    nothing, unclaimed for `ATELIER_RESEND_UNCLAIMED_SECONDS` (a Redis restarted without its data
    drops the messages waiting in the workers' queues; without this they would wait
    `ATELIER_DISPATCH_TIMEOUT_SECONDS`). The same message: the same jobs with the same dispatch
    numbers, so if the first copy was not lost after all, the worker's claim of the second is a
    compare-and-set that fails and the copy is skipped. "Once": only jobs whose dispatch falls in
    the last sweep period past the delay (the periodic pass runs once a period), so a worker that
    never reads its queue is left to the dispatch timeout. Returns how many jobs were sent again."""
    now = now or database_now()
    after = timedelta(seconds=settings.ATELIER_RESEND_UNCLAIMED_SECONDS)
    period = timedelta(seconds=settings.ATELIER_HEARTBEAT_SECONDS)
    idle_live_workers = live_workers(now).exclude(jobs__status=Job.Status.RUNNING)
    stuck = (
        Job.objects.filter(
            status=Job.Status.DISPATCHED, worker__in=idle_live_workers,
            dispatched_at__lte=now - after, dispatched_at__gt=now - after - period,
        )
        .order_by("worker_id", "batch_id", "id")
        .values_list("worker__name", "worker__queue", "batch_id", "public_id", "attempts")
    )
    batches: dict[tuple[str, str, str], list[list]] = {}
    for worker_name, queue, batch_id, public_id, attempt in stuck:
        batches.setdefault((worker_name, queue, batch_id), []).append([public_id, attempt])
    for (worker_name, queue, batch_id), batch in batches.items():
        with log_context(worker=worker_name, batch=batch_id, job=[public_id for public_id, _ in batch]):
            logger.warning("batch %s to %s not claimed after %.0f s while the worker runs nothing: sent again",
                           batch_id, worker_name, after.total_seconds())
            try:
                _publish(queue, batch)
            except Exception:  # noqa: BLE001 - the broker is still down: the dispatch timeout remains
                logger.exception("could not send batch %s to %s again", batch_id, worker_name)
    return sum(len(batch) for batch in batches.values())
