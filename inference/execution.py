"""Runs one dispatched job inside a worker process: claim, generate, store PNGs, finish.

Output files are named by job and image index and written atomically, so a job run twice
(a redelivered message after a worker was wrongly declared dead) overwrites its own files
instead of adding a second set; only one run can record them (see `inference/services.py`).
"""

from __future__ import annotations

import io
import logging
import threading
import time

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import connection as db_connection
from django.core.files.storage import default_storage
from PIL import Image, PngImagePlugin

from inference.dispatch import dispatch_pending_safely
from inference.generation import GenerationRequest
from inference.infotext import txt2img_infotext
from inference.models import Job
from inference.samplers import resolve_sampler
from inference.services import job_claim, job_fail, job_mark_cancelled, job_progress, job_succeed
from inference.worker.runtime import Txt2ImgSpec, WorkerRuntime
from tenants.workdirs import user_outputs_key

logger = logging.getLogger(__name__)


class JobStopped(Exception):
    """Raised from the step callback: the job was cancelled or taken away from this worker."""


def png_bytes(image: Image.Image, infotext: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", infotext)  # tEXt, or iTXt for non-Latin-1 prompts
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def store_png(key: str, data: bytes) -> str:
    if default_storage.exists(key):
        default_storage.delete(key)
    return default_storage.save(key, ContentFile(data))


def _spec(job: Job, request: GenerationRequest) -> Txt2ImgSpec:
    sampler = resolve_sampler(request.sampler_name, request.scheduler)
    return Txt2ImgSpec(
        checkpoint_path=job.checkpoint_path,
        checkpoint_sha256=job.checkpoint_sha256,
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        steps=request.steps,
        cfg_scale=request.cfg_scale,
        width=request.width,
        height=request.height,
        seeds=list(job.seeds),
        batch_size=request.batch_size,
        scheduler_class=sampler.scheduler_class,
        scheduler_kwargs=sampler.scheduler_kwargs,
    )


def _infotexts(job: Job, request: GenerationRequest) -> list[str]:
    sampler = resolve_sampler(request.sampler_name, request.scheduler)
    model_name, _, hash_part = job.checkpoint_title.rpartition(" [")
    return [
        txt2img_infotext(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            steps=request.steps,
            sampler_name=sampler.name,
            schedule_label=sampler.schedule_label,
            cfg_scale=request.cfg_scale,
            seed=seed,
            width=request.width,
            height=request.height,
            model_hash=hash_part.rstrip("]") or None,
            model_name=model_name.rsplit(".", 1)[0] or None,
        )
        for seed in job.seeds
    ]


def job_execute(*, public_id: str, attempt: int, worker_name: str, runtime: WorkerRuntime) -> None:
    job = job_claim(public_id=public_id, attempt=attempt, worker_name=worker_name)
    if job is None:
        return
    started = time.perf_counter()
    try:
        _run(job, attempt, runtime, started)
    finally:
        dispatch_pending_safely()


class ProgressReporter(threading.Thread):
    """Records progress and publishes events off the denoising loop.

    The loop only hands over its step number (no I/O between steps); this thread writes the
    latest one at most every `interval` seconds (a progress bar needs no more, and on a small
    machine each write costs the web process CPU the model could use), and raises the
    `stopped` flag when the write finds the job cancelled or no longer ours. The loop checks
    that flag at every step, so a cancel takes effect within one interval plus one step.
    """

    def __init__(self, job: Job, attempt: int, interval: float) -> None:
        super().__init__(name=f"progress-{job.public_id}", daemon=True)
        self.job, self.attempt = job, attempt
        self.interval = interval
        self.stopped = threading.Event()
        self._latest = 0
        self._reported = 0
        self._closing = False
        self._changed = threading.Condition()

    def report(self, step: int) -> None:
        if self.stopped.is_set():
            raise JobStopped
        with self._changed:
            self._latest = step
            self._changed.notify()

    def close(self) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify()
        self.join()

    def run(self) -> None:
        try:
            while True:
                with self._changed:
                    self._changed.wait_for(lambda: self._latest != self._reported or self._closing)
                    step, closing = self._latest, self._closing
                if step != self._reported and not self.stopped.is_set():
                    self._reported = step
                    if not job_progress(job=self.job, attempt=self.attempt, step=step):
                        self.stopped.set()
                if closing:
                    return
                with self._changed:
                    self._changed.wait_for(lambda: self._closing, timeout=self.interval)
        finally:
            db_connection.close()  # this thread's own connection


def _run(job: Job, attempt: int, runtime: WorkerRuntime, started: float) -> None:
    request = GenerationRequest.from_json(job.params)
    reporter = ProgressReporter(job, attempt, interval=settings.ATELIER_PROGRESS_INTERVAL_SECONDS)
    reporter.start()
    try:
        images = runtime.txt2img(_spec(job, request), on_step=reporter.report)
    except JobStopped:
        reporter.close()
        job_mark_cancelled(job=job, attempt=attempt, gpu_seconds=time.perf_counter() - started)
        return
    except Exception as exc:  # noqa: BLE001 - a job's failure must never take the worker down
        reporter.close()
        logger.exception("job %s failed", job.public_id)
        job_fail(job=job, attempt=attempt, error=f"generation failed: {exc}", gpu_seconds=time.perf_counter() - started)
        return
    gpu_seconds = time.perf_counter() - started
    reporter.close()
    if reporter.stopped.is_set():  # cancelled during the last step
        job_mark_cancelled(job=job, attempt=attempt, gpu_seconds=gpu_seconds)
        return

    infotexts = _infotexts(job, request)
    folder = f"{user_outputs_key(job.owner.get_username())}/{job.created_at:%Y-%m-%d}"
    outputs = [
        store_png(f"{folder}/{job.public_id}-{index}.png", png_bytes(image, infotext))
        for index, (image, infotext) in enumerate(zip(images, infotexts, strict=True))
    ]
    if not job_succeed(job=job, attempt=attempt, outputs=outputs, infotexts=infotexts, gpu_seconds=gpu_seconds):
        logger.warning("job %s finished here but was no longer ours: result discarded", job.public_id)
