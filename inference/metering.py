"""What a job's work amounts to, before and after it runs: its pixel-steps (pure, no database).

A job's pixel-steps are Σ width × height × denoising steps over its images: the unit the batch
runner shares a batch's measured GPU time by (`inference/runner/batch.py`), a usage record
carries (`UsageRecord.pixel_steps`) and a quota estimates an unfinished job's GPU-seconds from
(`tenants/quotas/`). Read from the job's stored params (`Job.params`, a `JobSpec`'s request at
the top level, or an Extras / interrogate request), never from the worker's files.

- txt2img: each image's first pass (width × height × steps), plus with the hires fix its second
  pass at the hires size (`hr_width × hr_height × hr_steps`);
- img2img: width × height × the steps it samples (`sampling_steps`: steps × denoising strength);
  SD upscale: every tile of every upscaled image (tile size × steps each);
- Extras: the pixels of its input images, one "step" each (no denoising); interrogate: its one
  image's pixels; promptgen: 0 (no pixels).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from a1111.generation import GenerationRequest
from a1111.sd_upscale import SdUpscale

GENERATION_KINDS = ("txt2img", "img2img")


def request_pixel_steps(request: GenerationRequest) -> int:
    """Σ width × height × steps over the images `request` makes (see the module docstring)."""
    if request.sd_upscale:
        tiles = max(request.sd_upscale.tiles, 1)
        return request.n_iter * tiles * request.width * request.height * request.sampling_steps
    per_image = request.width * request.height * (request.sampling_steps - request.hr_steps)
    if request.hires:
        per_image += request.hr_width * request.hr_height * request.hr_steps
    return request.image_count * per_image


# The request fields `request_pixel_steps` reads: a quota reading many queued jobs' params builds
# requests of these alone (a whole `GenerationRequest.from_json` cost ~0.1 ms a job).
PIXEL_FIELDS = (
    "kind", "width", "height", "steps", "batch_size", "n_iter", "denoising_strength", "img2img_fix_steps",
    "hr_width", "hr_height", "hr_second_pass_steps", "sd_upscale",
)


def job_pixel_steps(kind: str, params: Mapping[str, Any] | None) -> int:
    """The pixel-steps of a job of `kind` whose `Job.params` are `params` (0 when unreadable)."""
    if not isinstance(params, Mapping):
        return 0
    try:
        if kind in GENERATION_KINDS:
            values = {name: params[name] for name in PIXEL_FIELDS if name in params}
            if values.get("sd_upscale"):
                values["sd_upscale"] = SdUpscale.from_json(values["sd_upscale"])
            return request_pixel_steps(GenerationRequest(**values))
        if kind == "extras":
            return sum(int(width) * int(height) for width, height in params.get("sizes") or [])
        if kind == "interrogate":
            width, height = params.get("size") or (0, 0)
            return int(width) * int(height)
    except (TypeError, ValueError):
        return 0
    return 0
