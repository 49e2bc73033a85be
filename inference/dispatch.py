"""Applies the scheduler's decisions, and reaps dead workers: the dispatcher side of the job lifecycle.

Where dispatch runs: in ONE place, `manage.py sweeper` (started by `manage.py serve`, the
end-to-end harness and docker/). A pass (`dispatch_pending()`) reads every live worker, locks
their rows and the queued window, and runs the policy once over all of them. The sweeper runs
`sweep()`: every `ATELIER_HEARTBEAT_SECONDS` a full pass (reap dead workers, the EAS pump, then
dispatch), and in between a dispatch-only pass as soon as it is woken.

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
(`worker_exited`, called by `manage.py serve`); both take its jobs back through `requeue_or_fail`.

Passes may still overlap (a test calling `dispatch_pending()` beside a sweeper, two sweepers on
SQLite): worker rows are locked while a plan is applied, queued jobs are locked with SKIP LOCKED,
and each job moves queued → dispatched by compare-and-set, so a job is never handed out twice.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections import Counter
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from config.celery import app as celery_app
from inference.dispatch_wake import dispatch_wake
from inference.endings import job_ended
from inference.events import job_event_publish
from inference.models import Job, Worker
from inference.scheduler import (
    FairShareState,
    PendingJob,
    PolicyConfig,
    WorkerState,
    decayed_service,
    plan_assignments,
)
from tenants.quotas import Terms, dispatch_refusals, running_caps, terms_for_members
from tenants.services import usage_record

logger = logging.getLogger(__name__)

RUN_BATCH_TASK = "atelier.run_batch"
QUEUED_WINDOW = 5000  # queued jobs the policy sees per pass (oldest first)
ON_WORKER = (Job.Status.DISPATCHED, Job.Status.RUNNING)
UNKNOWN_REMAINING_SECONDS = 10.0  # a batch's expected remaining time before any progress


def worker_queue_name(worker_name: str) -> str:
    """`gpu0@host-1` → `atelier.worker.gpu0.host-1` (every broker accepts these characters)."""
    return "atelier.worker." + re.sub(r"[^A-Za-z0-9_-]", ".", worker_name)


def _live_since():
    return timezone.now() - timedelta(seconds=settings.ATELIER_WORKER_DEAD_AFTER_SECONDS)


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


def _worker_state(worker: Worker, on_worker: list[Job], now: datetime) -> WorkerState:
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
        free=not on_worker,
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


def live_workers():
    return Worker.objects.filter(state=Worker.State.ONLINE, last_heartbeat__gte=_live_since())


def dispatch_pending() -> int:
    """Place queued jobs on free live workers, as batches; returns how many jobs were dispatched.
    The dispatcher's pass (`sweep`); everyone else calls `dispatch_wake()` instead."""
    now = timezone.now()
    over_quota: list[Job] = []
    with transaction.atomic():
        batches = _planned_batches(now, over_quota)
    for job in over_quota:  # their ending, once their failure is committed
        job_event_publish(job)
        job_ended(job)
    for worker, jobs in batches:
        _send(worker, jobs)
    return sum(len(jobs) for _, jobs in batches)


def _planned_batches(now: datetime, over_quota: list[Job]) -> list[tuple[Worker, list[Job]]]:
    """`dispatch_pending`'s transaction: lock, read, plan and move the jobs to dispatched (the
    jobs failed for a rate window are added to `over_quota`)."""
    batches: list[tuple[Worker, list[Job]]] = []
    workers = list(live_workers().select_for_update())
    on_worker: dict[int, list[Job]] = {w.pk: [] for w in workers}
    for job in Job.objects.filter(worker__in=workers, status__in=ON_WORKER).order_by("started_at"):
        on_worker[job.worker_id].append(job)
    states = [_worker_state(w, on_worker[w.pk], now) for w in workers]
    if not any(state.free for state in states):
        return batches
    queued = Job.objects.filter(status=Job.Status.QUEUED).select_related("tenant").order_by("created_at", "pk")
    if connection.features.has_select_for_update_skip_locked:
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
    """Publish one task for the batch (`jobs`, as dispatched); if it cannot be sent, its jobs go back to the queue."""
    try:
        _publish(worker.queue, [[job.public_id, job.attempts] for job in jobs])
    except Exception:  # noqa: BLE001 - the broker is down: leave the jobs for the next sweep
        logger.exception("could not send %s to %s: back to the queue", [j.public_id for j in jobs], worker.name)
        for job in jobs:
            Job.objects.filter(pk=job.pk, status=Job.Status.DISPATCHED, attempts=job.attempts).update(
                status=Job.Status.QUEUED, worker=None, attempts=F("attempts") - 1, dispatched_at=None, batch_id=""
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


def dispatch_pending_safely() -> None:
    """A pass for callers that must not fail because of scheduling (the next sweep will retry)."""
    try:
        dispatch_pending()
    except Exception:  # noqa: BLE001
        logger.exception("dispatch failed; the next sweep will retry")


def requeue_or_fail(jobs, reason: str) -> int:
    """Send interrupted jobs back to the queue, or fail them at the attempt cap."""
    changed = 0
    for job in jobs:
        base = Job.objects.filter(pk=job.pk, status=job.status, attempts=job.attempts)
        if job.attempts >= settings.ATELIER_JOB_MAX_ATTEMPTS:
            with transaction.atomic():  # a job that had started ends with its usage record, as any other
                moved = base.update(
                    status=Job.Status.FAILED,
                    finished_at=timezone.now(),
                    error=f"{reason}; gave up after {job.attempts} attempts",
                )
                if moved and job.started_at is not None:
                    job.refresh_from_db()
                    usage_record(job=job)
        else:
            moved = base.update(
                status=Job.Status.QUEUED, worker=None, progress=0.0, step=0, dispatched_at=None, batch_id=""
            )
        if moved:
            changed += 1
            logger.warning("job %s: %s (attempt %s)", job.public_id, reason, job.attempts)
            job.refresh_from_db()
            job_event_publish(job)
            if job.status == Job.Status.FAILED:
                job_ended(job)
    return changed


def workers_reap() -> int:
    """Declare silent workers dead and take their jobs back; requeue dispatches never started."""
    reaped = 0
    for worker in Worker.objects.filter(
        state__in=[Worker.State.ONLINE, Worker.State.DRAINING], last_heartbeat__lt=_live_since()
    ):
        if Worker.objects.filter(pk=worker.pk, last_heartbeat=worker.last_heartbeat).update(state=Worker.State.DEAD):
            logger.warning("worker %s missed its heartbeats: declared dead", worker.name)
            reaped += requeue_or_fail(
                Job.objects.filter(worker=worker, status__in=[Job.Status.DISPATCHED, Job.Status.RUNNING]),
                f"worker {worker.name} was lost",
            )
    # Jobs assigned to a worker that is gone, or that never picked them up.
    stale_dispatch = timezone.now() - timedelta(seconds=settings.ATELIER_DISPATCH_TIMEOUT_SECONDS)
    orphans = Job.objects.filter(status__in=[Job.Status.DISPATCHED, Job.Status.RUNNING]).filter(
        Q(worker__isnull=True)
        | Q(worker__state__in=[Worker.State.DEAD, Worker.State.OFFLINE])
        | Q(status=Job.Status.DISPATCHED, dispatched_at__lt=stale_dispatch)
    )
    reaped += requeue_or_fail(orphans, "its worker stopped before finishing it")
    return reaped


def worker_exited(*, name: str, pid: int) -> int:
    """The process supervising a worker (`manage.py serve`) saw it exit: declare it offline now,
    not after `ATELIER_WORKER_DEAD_AFTER_SECONDS` of silence, so no pass sends it more work, and
    take back what it held the way the reaper does (`requeue_or_fail`: requeued, or failed at the
    attempt cap). Only the life with this pid: a restarted life that registered already (a new
    pid) is left alone. Returns how many jobs were requeued or failed."""
    exited_at = timezone.now()
    worker = Worker.objects.filter(name=name, pid=pid, state__in=[Worker.State.ONLINE, Worker.State.DRAINING]).first()
    if worker is None:  # it stopped cleanly (`worker_stopped`), was reaped, or a new life registered
        return 0
    if not Worker.objects.filter(pk=worker.pk, pid=pid, state=worker.state).update(state=Worker.State.OFFLINE):
        return 0
    logger.warning("worker %s (pid %s) exited: offline", name, pid)
    dispatch_wake()  # on commit: its jobs are requeued below, placed by the next pass
    return requeue_or_fail(
        # Dispatched to this life (a new life registering meanwhile may already hold newer jobs).
        Job.objects.filter(worker=worker, status__in=ON_WORKER).filter(
            Q(dispatched_at__isnull=True) | Q(dispatched_at__lte=exited_at)
        ),
        f"worker {name} exited",
    )


# The advisory lock a dispatcher holds for its pass ("atelier" in ASCII, as a bigint).
DISPATCHER_LOCK = 0x61_74_65_6C_69_65_72


def sweep(*, reap: bool = True) -> bool:
    """One dispatcher pass: reap (the periodic pass; `reap=False` for a wake's), then dispatch.
    False (nothing done) while another dispatcher is in its pass: on PostgreSQL the pass holds a
    session advisory lock, so of two sweepers (failover) only one decides at a time, and one
    killed mid-pass loses the lock with its connection. (It is not one transaction: a batch's
    message must leave only after its jobs are committed.)"""
    from inference.eas.bridge import eas_sweep_safely

    if connection.vendor != "postgresql":  # SQLite: the embedded default runs one sweeper
        _pass(reap, eas_sweep_safely)
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [DISPATCHER_LOCK])
        if not cursor.fetchone()[0]:
            return False
    try:
        _pass(reap, eas_sweep_safely)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [DISPATCHER_LOCK])
    return True


def _pass(reap: bool, eas_sweep_safely) -> None:
    if reap:
        workers_reap()
        eas_sweep_safely()  # EAS input items that may run now become queued jobs
    dispatch_pending()
