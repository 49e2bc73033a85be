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
import socket
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from config.celery import app as celery_app
from inference.events import job_event_publish
from inference.models import Job, Worker
from inference.scheduler import PendingJob, WorkerSlot, plan_assignments

logger = logging.getLogger(__name__)

RUN_JOB_TASK = "atelier.run_job"
DISPATCH_BATCH = 200


def worker_queue_name(worker_name: str) -> str:
    """`gpu0@host-1` → `atelier.worker.gpu0.host-1` (every broker accepts these characters)."""
    return "atelier.worker." + re.sub(r"[^A-Za-z0-9_-]", ".", worker_name)


def _live_since():
    return timezone.now() - timedelta(seconds=settings.ATELIER_WORKER_DEAD_AFTER_SECONDS)


def dispatch_pending() -> int:
    """Place queued jobs on free live workers; returns how many were dispatched."""
    now = timezone.now()
    dispatched: list[tuple[int, Worker]] = []
    with transaction.atomic():
        workers = list(
            Worker.objects.select_for_update().filter(state=Worker.State.ONLINE, last_heartbeat__gte=_live_since())
        )
        busy = dict(
            Job.objects.filter(worker__in=workers, status__in=[Job.Status.DISPATCHED, Job.Status.RUNNING])
            .values_list("worker")
            .annotate(n=Count("pk"))
        )
        slots = [
            WorkerSlot(w.pk, w.slots - busy.get(w.pk, 0), frozenset(w.loaded_models))
            for w in workers
            if w.slots > busy.get(w.pk, 0)
        ]
        if not slots:
            return 0
        queued = Job.objects.filter(status=Job.Status.QUEUED).order_by("created_at", "pk")
        if connection.features.has_select_for_update_skip_locked:
            queued = queued.select_for_update(skip_locked=True, of=("self",))
        pending = [
            PendingJob(
                job_id=job.pk,
                owner_id=job.owner_id,
                tenant_id=job.tenant_id,
                checkpoint=job.checkpoint_sha256,
                submitted_at=job.created_at.timestamp(),
                priority=job.priority,
            )
            for job in queued[:DISPATCH_BATCH]
        ]
        by_id = {w.pk: w for w in workers}
        for assignment in plan_assignments(pending, slots):
            moved = Job.objects.filter(pk=assignment.job_id, status=Job.Status.QUEUED).update(
                status=Job.Status.DISPATCHED,
                worker_id=assignment.worker_id,
                attempts=F("attempts") + 1,
                dispatched_at=now,
            )
            if moved:
                dispatched.append((assignment.job_id, by_id[assignment.worker_id]))
    if dispatched:
        _send(dispatched)
    return len(dispatched)


def _send(dispatched: list[tuple[int, Worker]]) -> None:
    """Publish one task per dispatched job; a job whose message cannot be sent goes back to the queue."""
    # A connection of our own per batch: the shared producer pool is not safe across the
    # web server's worker threads with every transport.
    with celery_app.connection_for_write() as connection:
        for job_id, worker in dispatched:
            job = Job.objects.get(pk=job_id)
            try:
                celery_app.send_task(
                    RUN_JOB_TASK, args=[job.public_id, job.attempts], queue=worker.queue, connection=connection
                )
            except Exception:  # noqa: BLE001 - the broker is down: leave the job for the next sweep
                logger.exception("could not send job %s to %s: back to the queue", job.public_id, worker.name)
                Job.objects.filter(pk=job.pk, status=Job.Status.DISPATCHED, attempts=job.attempts).update(
                    status=Job.Status.QUEUED, worker=None, attempts=F("attempts") - 1, dispatched_at=None
                )
                continue
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
            moved = base.update(status=Job.Status.QUEUED, worker=None, progress=0.0, step=0, dispatched_at=None)
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
            "started_at": now,
        },
    )
    _requeue_or_fail(
        Job.objects.filter(worker=worker, status__in=[Job.Status.DISPATCHED, Job.Status.RUNNING]),
        f"worker {name} restarted",
    )
    return worker


def worker_heartbeat(*, name: str, loaded_models: list[str]) -> None:
    """Still alive. A worker wrongly declared dead (a long pause) comes back online."""
    Worker.objects.filter(name=name).update(last_heartbeat=timezone.now(), loaded_models=loaded_models)
    Worker.objects.filter(name=name, state=Worker.State.DEAD).update(state=Worker.State.ONLINE)


def worker_stopped(*, name: str) -> None:
    Worker.objects.filter(name=name).exclude(state=Worker.State.DISABLED).update(state=Worker.State.OFFLINE)
    _requeue_or_fail(
        Job.objects.filter(worker__name=name, status__in=[Job.Status.DISPATCHED, Job.Status.RUNNING]),
        f"worker {name} stopped",
    )
