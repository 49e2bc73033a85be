"""Writes for jobs: submit, cancel, and the worker-side transitions.

Every transition is a compare-and-set UPDATE on (status, attempts): a stale or redelivered
Celery message, a worker declared dead that comes back, or a cancel racing a completion can
never move a job twice or record two sets of images.
"""

from __future__ import annotations

import logging

from django.contrib.auth.models import AbstractUser
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from inference.events import job_event_publish
from inference.generation import GenerationRequest, batch_key
from inference.model_registry import checkpoint_resolve_for_user
from inference.models import Job, Worker
from tenants.selectors import tenant_for_user
from tenants.services import usage_record

logger = logging.getLogger(__name__)


class NotAMember(PermissionError):
    """Only members of a tenant submit jobs: their tenant is billed for them."""


def job_submit(*, user: AbstractUser, request: GenerationRequest) -> Job:
    """Store a validated request as a queued job and ask the scheduler to place it.

    Raises `ModelNotFound` for a checkpoint the user may not use, `NotAMember` for a user
    outside any tenant.
    """
    from inference.dispatch import dispatch_pending_safely

    tenant = tenant_for_user(user)
    if tenant is None:
        raise NotAMember(f"{user.get_username()} is not a member of any tenant, so cannot generate")
    checkpoint = checkpoint_resolve_for_user(user, request.checkpoint)
    model_key, lora_key = checkpoint.sha256, ""  # VAE overrides and LoRAs join these keys
    job = Job.objects.create(
        owner=user,
        tenant=tenant,
        kind=request.kind,
        params=request.to_json(),
        checkpoint_title=checkpoint.title,
        checkpoint_path=str(checkpoint.path),
        checkpoint_sha256=checkpoint.sha256,
        model_key=model_key,
        lora_key=lora_key,
        batch_key=batch_key(request, model_key=model_key, lora_key=lora_key),
        total_steps=request.steps * request.n_iter,
        seeds=request.all_seeds(),
    )
    transaction.on_commit(dispatch_pending_safely)
    return job


def job_cancel(*, job: Job) -> Job:
    """Cancel: a queued or dispatched job never starts; a running one stops at its next step."""
    now = timezone.now()
    stopped = Job.objects.filter(pk=job.pk, status__in=[Job.Status.QUEUED, Job.Status.DISPATCHED]).update(
        status=Job.Status.CANCELLED, finished_at=now, cancel_requested=True
    )
    if not stopped:
        Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING).update(cancel_requested=True)
    job.refresh_from_db()
    if stopped:
        job_event_publish(job)
    return job


# --- worker-side transitions ----------------------------------------------------------


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


def job_progress(*, job: Job, attempt: int, step: int) -> bool:
    """Record progress; False when the job must stop (cancelled, or taken away from us)."""
    total = max(job.total_steps, 1)
    updated = Job.objects.filter(
        pk=job.pk, status=Job.Status.RUNNING, attempts=attempt, cancel_requested=False
    ).update(step=step, progress=min(step / total, 1.0))
    if updated:
        job.step, job.progress = step, min(step / total, 1.0)
        job_event_publish(job)
    return bool(updated)


def _finish(job: Job, attempt: int, status: str, **fields) -> bool:
    now = timezone.now()
    updated = Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, attempts=attempt).update(
        status=status, finished_at=now, **fields
    )
    if updated:
        job.refresh_from_db()
        usage_record(job=job)
        job_event_publish(job)
        if job.worker_id:
            Worker.objects.filter(pk=job.worker_id).update(jobs_done=F("jobs_done") + 1)
    return bool(updated)


def job_succeed(
    *, job: Job, attempt: int, outputs: list[str], infotexts: list[str], gpu_seconds: float
) -> bool:
    return _finish(
        job, attempt, Job.Status.SUCCEEDED,
        outputs=outputs, infotexts=infotexts, gpu_seconds=gpu_seconds, progress=1.0, step=job.total_steps,
    )


def job_fail(*, job: Job, attempt: int, error: str, gpu_seconds: float = 0.0) -> bool:
    return _finish(job, attempt, Job.Status.FAILED, error=error[:2000], gpu_seconds=gpu_seconds)


def job_mark_cancelled(*, job: Job, attempt: int, gpu_seconds: float = 0.0) -> bool:
    return _finish(job, attempt, Job.Status.CANCELLED, gpu_seconds=gpu_seconds)
