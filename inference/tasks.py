"""Celery tasks: thin shims over `inference.execution`.

The runtime (pipeline cache) belongs to the task object, which Celery instantiates once per
worker process: the documented place for per-process resources.
"""

from __future__ import annotations

from celery import Task, shared_task
from django.conf import settings

from inference.dispatch import RUN_JOB_TASK
from inference.worker.runtime import WorkerRuntime


class RuntimeTask(Task):
    _runtime: WorkerRuntime | None = None

    @property
    def runtime(self) -> WorkerRuntime:
        if self._runtime is None:
            self._runtime = WorkerRuntime(
                device=settings.ATELIER_DEVICE,
                cache_size=settings.ATELIER_PIPELINE_CACHE_SIZE,
                config_cache_dir=settings.ATELIER_MODEL_CACHE_DIR,
            )
        return self._runtime


@shared_task(bind=True, base=RuntimeTask, name=RUN_JOB_TASK, acks_late=True, reject_on_worker_lost=True)
def run_job(self: RuntimeTask, public_id: str, attempt: int) -> None:
    from inference.execution import job_execute

    job_execute(public_id=public_id, attempt=attempt, worker_name=self.request.hostname, runtime=self.runtime)
