"""Runs one Extras job inside a worker process: claim, postprocess each image, store PNGs, finish.

An extras job needs no checkpoint, so any worker runs it (`inference/scheduler/policy.py`) and
nothing is loaded but the upscaler and restorer models it names, from the runtime's caches.
It reports one step per image and stops at the next image once cancelled (its outputs are then
discarded, as a cancelled generation's are). The PNGs go to the owner's outputs folder, under
`extras-images/` as A1111's do, named by job and index (a redelivered run overwrites its own files), with A1111's postprocessing
infotext in a `postprocessing` text chunk, where A1111 writes it.

The NSFW censor does not look at extras outputs, as in A1111: they are the member's own
images, resized and retouched, not something the platform's models invented.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.core.files.storage import default_storage

from a1111.pnginfo import PLATFORM_ZLIB_STRATEGY
from inference.runner.batch import png_bytes, store_png
from a1111.extras import (
    ExtrasRequest,
    extras_infotext,
    output_size,
    scaled_size,
    upscale_factor,
)
from inference.models import Job
from inference.transitions import (
    job_claim,
    job_fail,
    job_mark_cancelled,
    job_progress,
    job_succeed,
)
from inference.model_cache import ModelFiles
from inference.storage import member_file_discard, member_image_open
from runtime.engine import WorkerRuntime
from runtime.specs import PostprocessSpec, Resizer, RestoreStep, UpscaleStep
from tenants.workdirs import user_outputs_key

logger = logging.getLogger(__name__)

INFOTEXT_CHUNK = "postprocessing"  # A1111's key for the extras infotext in a PNG
EXTRAS_FOLDER = "extras-images"  # A1111's outputs/extras-images


def _local_path(model: dict[str, str], model_files: ModelFiles) -> str:
    """A resolved model's file on this machine: its storage key resolved here (jobs queued before
    keys were stored carry the submitting machine's path)."""
    return model_files.path_of(model) if "key" in model else model.get("path", "")


def _resizer(request: ExtrasRequest, slot: str, model_files: ModelFiles) -> Resizer:
    model = request.resolved_models.get(slot)
    name = getattr(request, slot)
    return Resizer(name, _local_path(model, model_files), model["sha256"]) if model else Resizer(name)


def postprocess_spec(request: ExtrasRequest, width: int, height: int, model_files: ModelFiles) -> PostprocessSpec:
    """What the worker does to one image of `width`×`height` (plain data for `WorkerRuntime.postprocess`)."""
    upscale = None
    if request.upscales:
        scaled_w, scaled_h = scaled_size(request, width, height)
        out_w, out_h = output_size(request, width, height)
        upscale = UpscaleStep(
            factor=upscale_factor(request, width, height), width=scaled_w, height=scaled_h,
            upscaler=_resizer(request, "upscaler_1", model_files),
            second=_resizer(request, "upscaler_2", model_files) if request.blends_upscaler_2 else None,
            second_visibility=request.extras_upscaler_2_visibility,
            crop=(out_w, out_h) if (out_w, out_h) != (scaled_w, scaled_h) else None,
        )
    models = request.resolved_models
    detector = models.get("detector", {})
    return PostprocessSpec(
        upscale=upscale,
        restore=tuple(
            RestoreStep(name, _local_path(models[name], model_files), models[name]["sha256"], request.visibility(name),
                        request.codeformer_weight)
            for name in request.restorers
        ),
        detector_path=_local_path(detector, model_files) if detector else "",
        detector_sha256=detector.get("sha256", ""),
    )


def extras_execute(
    *, job: Job, attempt: int, worker_name: str, runtime: WorkerRuntime, model_files: ModelFiles | None = None
) -> None:
    """Run one dispatched extras job (a stale or redelivered message for it does nothing)."""
    model_files = model_files or ModelFiles.from_settings()
    request = ExtrasRequest.from_json(job.params)
    claimed = job_claim(public_id=job.public_id, attempt=attempt, worker_name=worker_name, total_steps=len(request.images))
    if claimed is None:
        return
    job = claimed
    folder = f"{user_outputs_key(job.owner.get_username())}/{EXTRAS_FOLDER}/{job.created_at:%Y-%m-%d}"
    outputs: list[str] = []
    infotexts: list[str] = []
    started = time.perf_counter()
    try:
        for index, key in enumerate(request.images):
            image = member_image_open(key)
            result = runtime.postprocess(image, postprocess_spec(request, *image.size, model_files))
            infotext = extras_infotext(request, *image.size)
            data = png_bytes(
                result, infotext, INFOTEXT_CHUNK,
                compress_level=settings.ATELIER_PNG_COMPRESS_LEVEL, zlib_strategy=PLATFORM_ZLIB_STRATEGY,
            )
            outputs.append(store_png(f"{folder}/{job.public_id}-{index}.png", data))
            infotexts.append(infotext)
            if not job_progress(job=job, attempt=attempt, step=index + 1):  # cancelled, or not ours any more
                if job_mark_cancelled(job=job, attempt=attempt, gpu_seconds=time.perf_counter() - started):
                    for stored in outputs:  # a cancelled job leaves no images behind
                        default_storage.delete(stored)
                return
    except Exception as exc:  # noqa: BLE001 - a job's failure must never take the worker down
        logger.exception("extras job %s failed", job.public_id)
        job_fail(job=job, attempt=attempt, error=f"extras failed: {exc}", gpu_seconds=time.perf_counter() - started)
        return
    if not job_succeed(
        job=job, attempt=attempt, outputs=outputs, infotexts=infotexts, gpu_seconds=time.perf_counter() - started
    ):
        logger.warning("job %s finished here but was no longer ours: result discarded", job.public_id)
        member_file_discard(outputs)
