"""Usage records with chosen numbers and end times, for the usage pages' tests: each is a real job
(submitted through `job_submit` once per member, then copied as a finished job) and its record."""

from __future__ import annotations

from datetime import datetime

from a1111.generation import parse_generation_request
from inference.models import Job, Worker, new_job_id
from inference.services import job_submit
from tenants.models import UsageRecord


class Recorder:
    """`recorder.add(alice, ended_at=..., gpu_seconds=..., images=...)` → the record."""

    def __init__(self) -> None:
        self._templates: dict[int, int] = {}

    def job(self, user, *, status: str = Job.Status.SUCCEEDED, worker: Worker | None = None,
            gpu_seconds: float = 0.0, finished_at: datetime | None = None, kind: str = Job.Kind.TXT2IMG) -> Job:
        if user.pk not in self._templates:
            request = parse_generation_request({"prompt": "x", "steps": 2, "width": 64, "height": 64})
            template = job_submit(user=user, request=request, dispatch=False)
            Job.objects.filter(pk=template.pk).update(status=Job.Status.CANCELLED)  # not counted as queued
            self._templates[user.pk] = template.pk
        job = Job.objects.get(pk=self._templates[user.pk])
        job.pk = None
        job.public_id = new_job_id()
        job.status, job.worker, job.gpu_seconds, job.finished_at, job.kind = status, worker, gpu_seconds, finished_at, kind
        job.save()
        return job

    def add(self, user, *, ended_at: datetime, gpu_seconds: float, images: int, kind: str = Job.Kind.TXT2IMG,
            checkpoint_title: str = "tiny.safetensors", queue_wait_seconds: float = 0.0) -> UsageRecord:
        job = self.job(user, gpu_seconds=gpu_seconds, finished_at=ended_at, kind=kind)
        return UsageRecord.objects.create(
            job=job, user=user, tenant=user.membership.tenant, kind=kind, checkpoint_title=checkpoint_title,
            gpu_seconds=gpu_seconds, images=images, status="succeeded", ended_at=ended_at,
            queue_wait_seconds=queue_wait_seconds,
        )

    @staticmethod
    def adjust(user, *, ended_at: datetime, gpu_seconds: float, images: int, by) -> UsageRecord:
        return UsageRecord.objects.create(
            job=None, user=user, tenant=user.membership.tenant, kind=UsageRecord.ADJUSTMENT, gpu_seconds=gpu_seconds,
            images=images, status="adjustment", ended_at=ended_at, reason="refund", created_by=by,
        )
