"""Applies the scheduler's decisions: the dispatcher side of the job lifecycle (reaping dead
workers lives in `inference/reaping.py`; its functions are importable from here too).

Where dispatch runs, and why there. A full pass (`dispatch_pending()`) reads every live worker,
locks their rows and the queued window, and runs the policy once over all of them. It runs:

* on submit, in the web process (`job_submit`), so a job meets a free worker at once;
* in ONE dispatcher loop, `manage.py sweeper` (started by `manage.py serve` and by the
  end-to-end harness), every `ATELIER_HEARTBEAT_SECONDS`: reap dead workers, then dispatch.
  That loop holds a PostgreSQL advisory lock for its pass (`sweep`), so a second sweeper
  replica (kept for availability) skips its pass instead of repeating it.

A worker is dead for dispatch when its heartbeat is `ATELIER_WORKER_DEAD_AFTER_SECONDS` old
(`workers_reap`), or at once when the supervisor that started it saw its process exit
(`worker_exited`, called by `manage.py serve`); both take its jobs back through `requeue_or_fail`
(`inference/reaping.py`: a job only dispatched goes back for free, a running one spends a started
attempt). Every dispatch gives a job a new dispatch number (`Job.attempts`), never reused: it
is the token of the message and of the worker's compare-and-set.

A GPU worker runs no full pass: its heartbeat only writes its own row (`inference/transitions.py`).
When it finishes a batch it must not wait up to a sweep period for the next one, so its
post-batch report asks for a *cheap* pass, `dispatch_pending(only_worker=name)`: the policy
sees every worker (busy ones for affinity), but only that worker is free in it and only its row
is locked, so N workers finishing batches no longer lock N×N rows. Before this, every worker
swept on every 2 s heartbeat and after every batch, i.e. N full passes every 2 s (see
`bench/dispatch_load.py` for the figures).

Any number of passes may still overlap (a submit, the sweeper, workers finishing): worker rows
are locked while a plan is applied, queued jobs are locked with SKIP LOCKED, and each job moves
queued → dispatched by compare-and-set, so a job is never handed out twice.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections import Counter
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F

from config.celery import app as celery_app
from inference.clock import database_now, live_since
from inference.endings import job_ended
from inference.events import job_event_publish
from inference.models import Job, Worker
from inference.reaping import ON_WORKER, requeue_or_fail, worker_exited, workers_reap  # noqa: F401 - their home was here
from inference.scheduler import (
    FairShareState,
    PendingJob,
    PolicyConfig,
    WorkerState,
    decayed_service,
    plan_assignments,
)
from tenants.quotas import Terms, dispatch_refusals, running_caps, terms_for_members

logger = logging.getLogger(__name__)

RUN_BATCH_TASK = "atelier.run_batch"
QUEUED_WINDOW = 5000  # queued jobs the policy sees per pass (oldest first)
UNKNOWN_REMAINING_SECONDS = 10.0  # a batch's expected remaining time before any progress


def worker_queue_name(worker_name: str) -> str:
    """`gpu0@host-1` → `atelier.worker.gpu0.host-1` (every broker accepts these characters)."""
    return "atelier.worker." + re.sub(r"[^A-Za-z0-9_-]", ".", worker_name)


def policy_config() -> PolicyConfig:
    return PolicyConfig(
        max_running_per_user=settings.ATELIER_MAX_RUNNING_PER_USER,
        max_running_per_tenant=settings.ATELIER_MAX_RUNNING_PER_TENANT,
        affinity_grace_s=settings.ATELIER_AFFINITY_GRACE_SECONDS,
        max_reorder_wait_s=settings.ATELIER_MAX_REORDER_WAIT_SECONDS,
        service_half_life_s=settings.ATELIER_SERVICE_HALF_LIFE_SECONDS,
    )


def fair_share_state(now: datetime, config: PolicyConfig) -> FairShareState:
    """Recent GPU time per user and tenant (finished jobs, and running ones so far), and what runs now."""
    horizon = now - timedelta(seconds=4 * config.service_half_life_s)
    charges = [
        (owner, tenant, gpu_seconds, finished.timestamp())
        for owner, tenant, gpu_seconds, finished in Job.objects.filter(finished_at__gte=horizon)
        .values_list("owner_id", "tenant_id", "gpu_seconds", "finished_at")
    ]
    active = list(Job.objects.filter(status__in=ON_WORKER).values_list("owner_id", "tenant_id", "started_at"))
    charges += [(owner, tenant, (now - started).total_seconds(), now.timestamp()) for owner, tenant, started in active if started]
    user_service, tenant_service = decayed_service(charges, now=now.timestamp(), half_life_s=config.service_half_life_s)
    return FairShareState(
        user_service=user_service,
        tenant_service=tenant_service,
        running_per_user=Counter(owner for owner, _, _ in active),
        running_per_tenant=Counter(tenant for _, tenant, _ in active),
    )


def _worker_state(worker: Worker, on_worker: list[Job], now: datetime, *, may_take: bool = True) -> WorkerState:
    busy_until = None
    running = [job for job in on_worker if job.status == Job.Status.RUNNING and job.started_at]
    if on_worker:
        remaining = UNKNOWN_REMAINING_SECONDS
        if running and running[0].progress > 0:
            elapsed = (now - running[0].started_at).total_seconds()
            remaining = elapsed / running[0].progress * (1 - running[0].progress)
        busy_until = now.timestamp() + remaining
    return WorkerState(
        worker_id=worker.pk,
        free=may_take and not on_worker,
        max_batch=worker.max_batch,
        resident_models=tuple(worker.loaded_models),
        cached_models=tuple(worker.cached_models),
        active_networks=worker.active_networks,
        busy_until=busy_until,
        busy_model=on_worker[0].model_key if on_worker else None,
    )


def pending_job(job: Job, terms: Terms | None = None) -> PendingJob:
    """A queued job as the scheduler sees it; `terms`, its owner's (`tenants.quotas`): their
    `user_running_jobs` / `tenant_running_jobs` caps hold it queued while they are full."""
    if job.kind == Job.Kind.EXTRAS:
        # No denoising: counted as one step per image at the input's size, a rough guess of an
        # upscaler pass (what the job really costs is charged when it finishes).
        sizes = job.params.get("sizes") or [[512, 512]]
        images, steps, pixels = len(sizes), 1, max(width * height for width, height in sizes)
    elif job.kind == Job.Kind.INTERROGATE:
        # One image through a captioning model and CLIP (or a tagger): about one upscaler pass.
        width, height = job.params.get("size") or [512, 512]
        images, steps, pixels = 1, 1, max(int(width) * int(height), 64 * 64)
    elif job.kind == Job.Kind.PROMPTGEN:
        # One batch row per job (the runtime samples its results side by side), one step per new
        # token; a token step of a small language model costs about what a 64×64 UNet step does.
        images, steps, pixels = 1, max(job.total_steps, 1), 64 * 64
    else:
        images, steps = len(job.seeds), job.params.get("steps", 20)
        pixels = job.params.get("width", 512) * job.params.get("height", 512)
    user_cap, tenant_cap = running_caps(terms.limits) if terms is not None else (None, None)
    return PendingJob(
        job_id=job.pk,
        owner_id=job.owner_id,
        tenant_id=job.tenant_id,
        submitted_at=job.created_at.timestamp(),
        model_key=job.model_key,
        network_key=job.network_key,
        batch_key=job.batch_key,
        images=images,
        steps=steps,
        pixels=pixels,
        priority=job.priority,
        tenant_weight=job.tenant.share_weight,
        user_running_cap=user_cap,
        tenant_running_cap=tenant_cap,
    )


def live_workers(now: datetime | None = None):
    """Online workers whose last heartbeat is recent by the database's clock (`inference/clock.py`)."""
    return Worker.objects.filter(state=Worker.State.ONLINE, last_heartbeat__gte=live_since(now))


def dispatch_pending(*, only_worker: str | None = None) -> int:
    """Place queued jobs on free live workers, as batches; returns how many jobs were dispatched.

    `only_worker`: the cheap pass a worker asks for when it finishes a batch: only that worker
    may be given work and only its row is locked (the others are read, for affinity).
    """
    now = database_now()  # one clock for dispatched_at and liveness, whichever host runs the pass
    over_quota: list[Job] = []
    with transaction.atomic():
        batches = _planned_batches(now, only_worker, over_quota)
    for job in over_quota:  # their ending, once their failure is committed
        job_event_publish(job)
        job_ended(job)
    for worker, jobs in batches:
        _send(worker, jobs)
    return sum(len(jobs) for _, jobs in batches)


def _planned_batches(now: datetime, only_worker: str | None, over_quota: list[Job]) -> list[tuple[Worker, list[Job]]]:
    """`dispatch_pending`'s transaction: lock, read, plan and move the jobs to dispatched (the
    jobs failed for a rate window are added to `over_quota`)."""
    batches: list[tuple[Worker, list[Job]]] = []
    if only_worker is None:
        workers = list(live_workers(now).select_for_update())
    else:
        workers = list(live_workers(now).select_for_update().filter(name=only_worker))
        if not workers:
            return batches
        workers += list(live_workers(now).exclude(name=only_worker))
    on_worker: dict[int, list[Job]] = {w.pk: [] for w in workers}
    for job in Job.objects.filter(worker__in=workers, status__in=ON_WORKER).order_by("started_at"):
        on_worker[job.worker_id].append(job)
    states = [
        _worker_state(w, on_worker[w.pk], now, may_take=only_worker is None or w.name == only_worker)
        for w in workers
    ]
    if not any(state.free for state in states):
        return batches
    queued = Job.objects.filter(status=Job.Status.QUEUED).select_related("tenant").order_by("created_at", "pk")
    if only_worker is not None and connection.features.has_select_for_update:
        # Workers finishing together wait for each other here (each locks the window in the same
        # order: no deadlock) and then see what is still queued; skipping would let the first
        # one's lock hide the whole queue from the others until the next sweep.
        queued = queued.select_for_update(of=("self",))
    elif connection.features.has_select_for_update_skip_locked:
        queued = queued.select_for_update(skip_locked=True, of=("self",))
    window = list(queued[:QUEUED_WINDOW])
    if not window:
        return batches
    # The owners' limits in force: running caps for the policy, and rate windows re-checked
    # (a limit lowered, or GPU time over its estimate, since the job was queued).
    terms = terms_for_members({job.owner_id for job in window}, at=now)
    refused = dispatch_refusals(window, terms, now=now)
    if refused:
        over_quota.extend(_fail_over_quota(window, refused, now))
        window = [job for job in window if job.pk not in refused]
        if not window:
            return batches
    pending = [pending_job(job, terms.get(job.owner_id)) for job in window]
    config = policy_config()
    plan = plan_assignments(pending, states, fair_share_state(now, config), now=now.timestamp(), config=config)
    by_id = {w.pk: w for w in workers}
    window_by_id = {job.pk: job for job in window}
    for assignment in plan:
        batch_id = secrets.token_hex(8)
        moved = [
            job_id
            for job_id in assignment.job_ids
            if Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).update(
                status=Job.Status.DISPATCHED,
                worker_id=assignment.worker_id,
                attempts=F("attempts") + 1,
                dispatched_at=now,
                batch_id=batch_id,
            )
        ]
        if moved:
            # The rows as the UPDATE left them, from the window read in this transaction (its
            # rows locked, or on SQLite the whole database): no second read before the send.
            jobs = [window_by_id[job_id] for job_id in moved]
            for job in jobs:
                job.status, job.worker_id, job.attempts = Job.Status.DISPATCHED, assignment.worker_id, job.attempts + 1
                job.dispatched_at, job.batch_id = now, batch_id
            batches.append((by_id[assignment.worker_id], sorted(jobs, key=lambda job: (job.created_at, job.pk))))
    return batches


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


def _send(worker: Worker, jobs: list[Job]) -> None:
    """Publish one task for the batch (`jobs`, as dispatched); if it cannot be sent, its jobs go
    back to the queue. Their dispatch numbers are not given back: the next dispatch takes a new
    one, so no two messages ever carry the same (job, number). No attempt was started: none is spent."""
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
        return
    for job in jobs:
        job_event_publish(job)


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


def dispatch_pending_safely(*, only_worker: str | None = None) -> None:
    """For callers that must not fail because of scheduling (a submit: the job is stored, a sweep will place it)."""
    try:
        dispatch_pending(only_worker=only_worker)
    except Exception:  # noqa: BLE001
        logger.exception("dispatch failed; the next sweep will retry")


# The advisory lock a dispatcher holds for its pass ("atelier" in ASCII, as a bigint).
DISPATCHER_LOCK = 0x61_74_65_6C_69_65_72


def sweep() -> bool:
    """The dispatcher's periodic pass: reap, then dispatch. False (nothing done) while another
    dispatcher is in its pass: on PostgreSQL the pass holds a session advisory lock. (It is not
    one transaction: a batch's message must leave only after its jobs are committed.)"""
    from inference.eas.bridge import eas_sweep_safely

    if connection.vendor != "postgresql":  # SQLite: the embedded default runs one sweeper
        workers_reap()
        eas_sweep_safely()  # EAS input items that may run now become queued jobs
        dispatch_pending()
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [DISPATCHER_LOCK])
        if not cursor.fetchone()[0]:
            return False
    try:
        workers_reap()
        eas_sweep_safely()
        dispatch_pending()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [DISPATCHER_LOCK])
    return True
