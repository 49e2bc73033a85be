"""Celery tasks: thin shims over `inference.runner.batch`.

The runtime (pipeline cache) and the model files (the local cache of the blob store) belong to
the task object, which Celery instantiates once per worker process: the documented place for
per-process resources.
"""

from __future__ import annotations

from celery import Task, shared_task
from django.conf import settings

from inference.dispatch import RUN_BATCH_TASK
from inference.model_cache import ModelFiles
from runtime.acceleration import Acceleration
from runtime.engine import WorkerRuntime


def acceleration_from_settings() -> Acceleration:
    """The worker's speed switches; a bad value stops the worker at start with the setting's name."""
    return Acceleration(
        attention=settings.ATELIER_WORKER_ATTENTION,
        channels_last=settings.ATELIER_WORKER_CHANNELS_LAST,
        compile_mode=settings.ATELIER_WORKER_COMPILE,
        vae_slicing_from_batch=settings.ATELIER_VAE_SLICING_FROM_BATCH,
        vae_tiling_from_pixels=settings.ATELIER_VAE_TILING_FROM_PIXELS,
    )


class RuntimeTask(Task):
    _runtime: WorkerRuntime | None = None
    _model_files: ModelFiles | None = None

    @property
    def model_files(self) -> ModelFiles:
        """The worker process's model files: its cache of the blob store's models, if one is set."""
        if self._model_files is None:
            self._model_files = ModelFiles.from_settings()
        return self._model_files

    @property
    def runtime(self) -> WorkerRuntime:
        if self._runtime is None:
            self._runtime = WorkerRuntime(
                device=settings.ATELIER_DEVICE,
                dtype=settings.ATELIER_WORKER_DTYPE,
                cache_size=settings.ATELIER_PIPELINE_CACHE_SIZE,
                config_cache_dir=settings.ATELIER_MODEL_CACHE_DIR,
                acceleration=acceleration_from_settings(),
                host_cache_size=settings.ATELIER_HOST_CACHE_SIZE,
                min_ram_reserved=int(settings.ATELIER_MIN_RAM_RESERVED_GIB * 2**30),
                safety_checker_dir=settings.ATELIER_SAFETY_CHECKER_DIR if settings.ATELIER_NSFW_CENSOR else None,
                preview_every=settings.ATELIER_PREVIEW_EVERY_STEPS,
            )
        return self._runtime


@shared_task(bind=True, base=RuntimeTask, name=RUN_BATCH_TASK, acks_late=True, reject_on_worker_lost=True)
def run_batch(self: RuntimeTask, jobs: list[list]) -> None:
    """`jobs`: [[public id, attempt], …], one pipeline batch."""
    from inference.runner.batch import batch_execute

    batch = [(str(public_id), int(attempt)) for public_id, attempt in jobs]
    batch_execute(jobs=batch, worker_name=self.request.hostname, runtime=self.runtime, model_files=self.model_files)
