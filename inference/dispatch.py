"""Applies the scheduler's decisions, registers workers and reaps the dead ones.

`dispatch_pending` runs on submit, when a job finishes, and on every sweep (each worker's
heartbeat, and `manage.py serve`'s / `manage.py sweeper`'s loop). Any number may run at once:
worker rows are locked while a plan is applied, and each job moves queued → dispatched by
compare-and-set, so a job is never handed out twice.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
from collections import Counter
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from config.celery import app as celery_app
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
        busy_until=busy_until,
        busy_model=on_worker[0].model_key if on_worker else None,
    )


def _pending(job: Job) -> PendingJob:
    if job.kind == Job.Kind.EXTRAS:
        # No denoising: counted as one step per image at the input's size, a rough guess of an
        # upscaler pass (what the job really costs is charged when it finishes).
        sizes = job.params.get("sizes") or [[512, 512]]
        images, steps, pixels = len(sizes), 1, max(width * height for width, height in sizes)
    else:
        images, steps = len(job.seeds), job.params.get("steps", 20)
        pixels = job.params.get("width", 512) * job.params.get("height", 512)
    return PendingJob(
        job_id=job.pk,
        owner_id=job.owner_id,
        tenant_id=job.tenant_id,
        submitted_at=job.created_at.timestamp(),
        model_key=job.model_key,
        lora_key=job.lora_key,
        batch_key=job.batch_key,
        images=images,
        steps=steps,
        pixels=pixels,
        priority=job.priority,
        tenant_weight=job.tenant.share_weight,
    )


def dispatch_pending() -> int:
    """Place queued jobs on free live workers, as batches; returns how many jobs were dispatched."""
    now = timezone.now()
    batches: list[tuple[Worker, list[int]]] = []
    with transaction.atomic():
        workers = list(
            Worker.objects.select_for_update().filter(state=Worker.State.ONLINE, last_heartbeat__gte=_live_since())
        )
        on_worker: dict[int, list[Job]] = {w.pk: [] for w in workers}
        for job in Job.objects.filter(worker__in=workers, status__in=ON_WORKER).order_by("started_at"):
            on_worker[job.worker_id].append(job)
        states = [_worker_state(w, on_worker[w.pk], now) for w in workers]
        if not any(state.free for state in states):
            return 0
        queued = Job.objects.filter(status=Job.Status.QUEUED).select_related("tenant").order_by("created_at", "pk")
        if connection.features.has_select_for_update_skip_locked:
            queued = queued.select_for_update(skip_locked=True, of=("self",))
        pending = [_pending(job) for job in queued[:QUEUED_WINDOW]]
        if not pending:
            return 0
        config = policy_config()
        plan = plan_assignments(pending, states, fair_share_state(now, config), now=now.timestamp(), config=config)
        by_id = {w.pk: w for w in workers}
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
                batches.append((by_id[assignment.worker_id], moved))
    for worker, job_ids in batches:
        _send(worker, job_ids)
    return sum(len(job_ids) for _, job_ids in batches)


def _send(worker: Worker, job_ids: list[int]) -> None:
    """Publish one task for the batch; if it cannot be sent, its jobs go back to the queue."""
    jobs = list(Job.objects.filter(pk__in=job_ids).order_by("created_at", "pk"))
    try:
        # A connection of our own: the shared producer pool is not safe across the web
        # server's worker threads with every transport.
        with celery_app.connection_for_write() as broker:
            celery_app.send_task(
                RUN_BATCH_TASK, args=[[[job.public_id, job.attempts] for job in jobs]], queue=worker.queue,
                connection=broker,
            )
    except Exception:  # noqa: BLE001 - the broker is down: leave the jobs for the next sweep
        logger.exception("could not send %s to %s: back to the queue", [j.public_id for j in jobs], worker.name)
        for job in jobs:
            Job.objects.filter(pk=job.pk, status=Job.Status.DISPATCHED, attempts=job.attempts).update(
                status=Job.Status.QUEUED, worker=None, attempts=F("attempts") - 1, dispatched_at=None, batch_id=""
            )
        return
    for job in jobs:
        job_event_publish(job)


def dispatch_pending_safely() -> None:
    """For callers that must not fail because of scheduling (a submit: the job is stored, a sweep will place it)."""
    try:
        dispatch_pending()
    except Exception:  # noqa: BLE001
        logger.exception("dispatch failed; the next sweep will retry")


def _requeue_or_fail(jobs, reason: str) -> int:
    """Send interrupted jobs back to the queue, or fail them at the attempt cap."""
    changed = 0
    for job in jobs:
        base = Job.objects.filter(pk=job.pk, status=job.status, attempts=job.attempts)
        if job.attempts >= settings.ATELIER_JOB_MAX_ATTEMPTS:
            moved = base.update(
                status=Job.Status.FAILED,
                finished_at=timezone.now(),
                error=f"{reason}; gave up after {job.attempts} attempts",
            )
        else:
            moved = base.update(
                status=Job.Status.QUEUED, worker=None, progress=0.0, step=0, dispatched_at=None, batch_id=""
            )
        if moved:
            changed += 1
            logger.warning("job %s: %s (attempt %s)", job.public_id, reason, job.attempts)
            job.refresh_from_db()
            job_event_publish(job)
    return changed


def workers_reap() -> int:
    """Declare silent workers dead and take their jobs back; requeue dispatches never started."""
    reaped = 0
    for worker in Worker.objects.filter(
        state__in=[Worker.State.ONLINE, Worker.State.DRAINING], last_heartbeat__lt=_live_since()
    ):
        if Worker.objects.filter(pk=worker.pk, last_heartbeat=worker.last_heartbeat).update(state=Worker.State.DEAD):
            logger.warning("worker %s missed its heartbeats: declared dead", worker.name)
            reaped += _requeue_or_fail(
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
    reaped += _requeue_or_fail(orphans, "its worker stopped before finishing it")
    return reaped


def sweep() -> None:
    """The periodic pass: reap, then dispatch."""
    workers_reap()
    dispatch_pending()


def worker_register(*, name: str, device: str, device_memory_bytes: int | None, max_batch: int = 8) -> Worker:
    """A worker process starting up. Jobs its previous life held cannot be running any more."""
    now = timezone.now()
    worker, _ = Worker.objects.update_or_create(
        name=name,
        defaults={
            "queue": worker_queue_name(name),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "device": device,
            "device_memory_bytes": device_memory_bytes,
            "max_batch": max_batch,
            "state": Worker.State.ONLINE,
            "last_heartbeat": now,
            "loaded_models": [],
            "cached_models": [],
            "started_at": now,
        },
    )
    _requeue_or_fail(
        Job.objects.filter(worker=worker, status__in=[Job.Status.DISPATCHED, Job.Status.RUNNING]),
        f"worker {name} restarted",
    )
    return worker


def worker_heartbeat(*, name: str, loaded_models: list[str], cached_models: list[str] | None = None) -> None:
    """Still alive, holding these checkpoints. A worker wrongly declared dead (a long pause) comes back online."""
    Worker.objects.filter(name=name).update(
        last_heartbeat=timezone.now(), loaded_models=loaded_models, cached_models=cached_models or []
    )
    Worker.objects.filter(name=name, state=Worker.State.DEAD).update(state=Worker.State.ONLINE)


def worker_stopped(*, name: str) -> None:
    Worker.objects.filter(name=name).exclude(state=Worker.State.DISABLED).update(state=Worker.State.OFFLINE)
    _requeue_or_fail(
        Job.objects.filter(worker__name=name, status__in=[Job.Status.DISPATCHED, Job.Status.RUNNING]),
        f"worker {name} stopped",
    )
