"""Runs one interrogate job inside a worker process: claim, caption or tag the image, finish with the text.

An interrogate job needs no checkpoint, so any worker runs it (as an Extras job). Its models are
the public folders `interrogate_submit` resolved to storage keys (`inference/interrogate_models.py`),
found here on this machine, and its category phrase files are read here, cut to the member's
`interrogate_clip_dict_limit`. The runtime (`runtime/interrogate.py`) returns raw scores;
A1111's text rules (`a1111/interrogate.py`) write the caption, which is stored in `Job.texts`
(one entry) as promptgen stores its prompts: no image is written. One step; a cancel before the
models finish leaves the job cancelled without a caption.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from a1111.interrogate import CLIP, InterrogateRequest, category_phrases, clip_caption, deepbooru_caption
from inference.models import Job
from inference.model_cache import ModelFiles
from inference.storage import member_image_open
from inference.transitions import job_claim, job_fail, job_mark_cancelled, job_progress, job_succeed
from runtime.engine import WorkerRuntime
from runtime.specs import ClipInterrogateSpec, ModelFolder, PhraseCategory, TaggerSpec

logger = logging.getLogger(__name__)


def _folder(model: dict[str, Any], model_files: ModelFiles) -> ModelFolder:
    return ModelFolder(path=model_files.path_of(model), sha256=str(model["sha256"]))


def clip_spec(request: InterrogateRequest, model_files: ModelFiles) -> ClipInterrogateSpec:
    """The runtime's spec of a clip interrogation: model folders on this machine, the phrase files read."""
    models, settings = request.resolved_models, request.settings
    categories = tuple(
        PhraseCategory(
            name=str(category["name"]), sha256=str(category["sha256"]), topn=int(category["topn"]),
            phrases=tuple(category_phrases(
                Path(model_files.path_of(category)).read_text(encoding="utf-8", errors="replace"),
                settings.clip_dict_limit,
            )),
        )
        for category in models.get("categories", [])
    )
    return ClipInterrogateSpec(
        blip=_folder(models["blip"], model_files), clip=_folder(models["clip"], model_files), categories=categories,
        num_beams=settings.clip_num_beams, min_length=settings.clip_min_length, max_length=settings.clip_max_length,
    )


def interrogate_text(request: InterrogateRequest, runtime: WorkerRuntime, model_files: ModelFiles) -> str:
    """A1111's caption of the request's image (the image and models read on this machine)."""
    image = member_image_open(request.image).convert("RGB")
    if request.model == CLIP:
        result = runtime.interrogate.clip(image, clip_spec(request, model_files))
        return clip_caption(result.caption, result.ranked, return_ranks=request.settings.return_ranks)
    scores = runtime.interrogate.tags(image, TaggerSpec(model=_folder(request.resolved_models["tagger"], model_files)))
    return deepbooru_caption(scores, request.settings)


def interrogate_execute(
    *, job: Job, attempt: int, worker_name: str, runtime: WorkerRuntime, model_files: ModelFiles | None = None
) -> None:
    """Run one dispatched interrogate job (a stale or redelivered message for it does nothing)."""
    model_files = model_files or ModelFiles.from_settings()
    claimed = job_claim(public_id=job.public_id, attempt=attempt, worker_name=worker_name, total_steps=1)
    if claimed is None:
        return
    job = claimed
    started = time.perf_counter()
    try:
        request = InterrogateRequest.from_json(job.params)
        caption = interrogate_text(request, runtime, model_files)
    except Exception as exc:  # noqa: BLE001 - a job's failure must never take the worker down
        logger.exception("interrogate job %s failed", job.public_id)
        job_fail(job=job, attempt=attempt, error=f"interrogate failed: {exc}", gpu_seconds=time.perf_counter() - started)
        return
    elapsed = time.perf_counter() - started
    if not job_progress(job=job, attempt=attempt, step=1):  # cancelled meanwhile, or not ours any more
        job_mark_cancelled(job=job, attempt=attempt, gpu_seconds=elapsed)
        return
    if not job_succeed(job=job, attempt=attempt, outputs=[], infotexts=[], texts=[caption], gpu_seconds=elapsed):
        logger.warning("job %s finished here but was no longer ours: result discarded", job.public_id)
