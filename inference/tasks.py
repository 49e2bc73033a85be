"""Celery tasks: thin shims over `inference.execution`.

The runtime (pipeline cache) belongs to the task object, which Celery instantiates once per
worker process: the documented place for per-process resources.
"""

from __future__ import annotations

from celery import Task, shared_task
from django.conf import settings

from inference.dispatch import RUN_BATCH_TASK
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


@shared_task(bind=True, base=RuntimeTask, name=RUN_BATCH_TASK, acks_late=True, reject_on_worker_lost=True)
def run_batch(self: RuntimeTask, jobs: list[list]) -> None:
    """`jobs`: [[public id, attempt], …], one pipeline batch."""
    from inference.execution import batch_execute

    batch = [(str(public_id), int(attempt)) for public_id, attempt in jobs]
    batch_execute(jobs=batch, worker_name=self.request.hostname, runtime=self.runtime)
