"""Every database write a GPU worker makes, in one place: its jobs' transitions and its own row.

The worker process (`inference/runner/batch.py`, `inference/runner/extras.py`,
`inference/runner/lifecycle.py`) writes through these functions only; the control plane keeps its
own writes (`inference/services.py`: submit, cancel; `inference/dispatch.py`: placement, reaping).

Job transitions (claim, progress, succeed, fail, cancelled) are compare-and-set UPDATEs on
(status, attempts): a stale or redelivered Celery message, a worker declared dead that comes
back, or a cancel racing a completion can never move a job twice or record two sets of images.

The worker's own row: `worker_register` at start, `worker_heartbeat` every few seconds (one
UPDATE, no scheduler pass), `worker_batch_done` after each batch (the heartbeat, then a wake of
the dispatcher, `manage.py sweeper`, which places its next batch), `worker_stopped` at shutdown.
A worker never runs a scheduler pass itself: it claims, reports and finishes.
"""

from __future__ import annotations

import logging
import os
import socket

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from inference.dispatch import requeue_or_fail, worker_queue_name
from inference.dispatch_wake import dispatch_wake
from inference.endings import job_ended
from inference.errors import member_error
from inference.events import job_event_publish
from inference.models import Job, Worker
from tenants.services import usage_record

logger = logging.getLogger(__name__)


# --- a job's life on the worker ------------------------------------------------------------


def job_claim(*, public_id: str, attempt: int, worker_name: str, total_steps: int) -> Job | None:
    """dispatched → running, only for the attempt this worker was handed. None: not ours (any more).

    `total_steps` is the steps this job will report, as the worker will run it (its images
    may span several pipeline calls).
    """
    claimed = Job.objects.filter(
        public_id=public_id,
        status=Job.Status.DISPATCHED,
        attempts=attempt,
        worker__name=worker_name,
        cancel_requested=False,
    ).update(status=Job.Status.RUNNING, started_at=timezone.now(), progress=0.0, step=0, total_steps=total_steps)
    if not claimed:
        logger.info("job %s attempt %s is not ours to run on %s: skipped", public_id, attempt, worker_name)
        return None
    job = Job.objects.select_related("owner").get(public_id=public_id)
    job_event_publish(job)
    return job


def job_progress(*, job: Job, attempt: int, step: int, preview: str | None = None) -> bool:
    """Record progress (and a live preview, base64 JPEG); False when the job must stop
    (cancelled, or taken away from us)."""
    total = max(job.total_steps, 1)
    fields: dict = {"step": step, "progress": min(step / total, 1.0)}
    if preview is not None:
        fields["preview"] = preview
    updated = Job.objects.filter(
        pk=job.pk, status=Job.Status.RUNNING, attempts=attempt, cancel_requested=False
    ).update(**fields)
    if updated:
        job.step, job.progress = step, min(step / total, 1.0)
        job_event_publish(job)
    return bool(updated)


def _finish(job: Job, attempt: int, status: str, **fields) -> bool:
    """running → `status`, and the job's usage record, in one transaction (never one without the other).
    `job` is the object `job_claim` returned (the worker's own, kept up to date as it ran)."""
    written = {"status": status, "finished_at": timezone.now(), "preview": "", **fields}  # the live preview is over
    with transaction.atomic():
        updated = Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, attempts=attempt).update(**written)
        if updated:
            # The row as this UPDATE left it, without reading it back: while the job ran, only this
            # worker wrote its other columns (progress through this same object), or a member's
            # cancel and skip requests (`cancel_requested`, `skip_requested`), which nothing after a finish reads.
            for name, value in written.items():
                setattr(job, name, value)
            usage_record(job=job)
    if updated:
        job_event_publish(job)
        if job.worker_id:
            Worker.objects.filter(pk=job.worker_id).update(jobs_done=F("jobs_done") + 1)
        job_ended(job)
    return bool(updated)


def job_succeed(
    *, job: Job, attempt: int, outputs: list[str], infotexts: list[str], gpu_seconds: float,
    censored: list[int] | None = None,
    control_maps: list[str] | None = None,
    texts: list[str] | None = None,
    seeds: list[int] | None = None,
) -> bool:
    """`censored`: positions in `outputs` the NSFW censor flagged (and the worker blurred);
    `texts`: a promptgen job's expanded prompts, an interrogate job's caption; `seeds`: the seeds of `outputs` when the job
    kept only some of its images (a skip dropped the others)."""
    kept = {"seeds": seeds} if seeds is not None else {}
    return _finish(
        job, attempt, Job.Status.SUCCEEDED, outputs=outputs, infotexts=infotexts, censored=censored or [],
        control_maps=control_maps or [], texts=texts or [],
        gpu_seconds=gpu_seconds, progress=1.0, step=job.total_steps, **kept,
    )


def job_fail(*, job: Job, attempt: int, error: str, gpu_seconds: float = 0.0) -> bool:
    """Record a failure; the error as the member sees it, without server paths (`member_error`)."""
    return _finish(job, attempt, Job.Status.FAILED, error=member_error(error)[:2000], gpu_seconds=gpu_seconds)


def job_mark_cancelled(*, job: Job, attempt: int, gpu_seconds: float = 0.0) -> bool:
    return _finish(job, attempt, Job.Status.CANCELLED, gpu_seconds=gpu_seconds)


# --- the worker's own row ------------------------------------------------------------------


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
            "active_networks": "",
            "started_at": now,
        },
    )
    requeue_or_fail(
        Job.objects.filter(worker=worker, status__in=[Job.Status.DISPATCHED, Job.Status.RUNNING]),
        f"worker {name} restarted",
    )
    dispatch_wake()  # a free worker, and maybe its previous life's jobs back in the queue
    return worker


def worker_heartbeat(
    *, name: str, loaded_models: list[str], cached_models: list[str] | None = None, active_networks: str = ""
) -> None:
    """Still alive, holding these checkpoints and (`active_networks`, a `Job.network_key`) the
    networks of its last batch. A worker wrongly declared dead (a long pause) comes back online.
    One UPDATE of its own row: a heartbeat runs no scheduler pass (see `inference/dispatch.py`)."""
    Worker.objects.filter(name=name).update(
        last_heartbeat=timezone.now(), loaded_models=loaded_models, cached_models=cached_models or [],
        active_networks=active_networks,
    )
    Worker.objects.filter(name=name, state=Worker.State.DEAD).update(state=Worker.State.ONLINE)


def worker_batch_done(
    *, name: str, loaded_models: list[str], cached_models: list[str] | None = None, active_networks: str = ""
) -> None:
    """A batch ended: report what the worker holds now, then wake the dispatcher so its next batch
    is placed at once (with what it holds now: the report comes first), not at the next beat."""
    worker_heartbeat(name=name, loaded_models=loaded_models, cached_models=cached_models, active_networks=active_networks)
    dispatch_wake()


def worker_stopped(*, name: str) -> None:
    Worker.objects.filter(name=name).exclude(state=Worker.State.DISABLED).update(state=Worker.State.OFFLINE)
    requeue_or_fail(
        Job.objects.filter(worker__name=name, status__in=[Job.Status.DISPATCHED, Job.Status.RUNNING]),
        f"worker {name} stopped",
    )
    dispatch_wake()  # what it held is queued again
