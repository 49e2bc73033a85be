"""The member's own images in the workspace: gallery items, "send to", and PNG info.

Images are read only through the owner-scoped selectors (`gallery_for_user`, `own_job`), so a
workspace can never show or hand on another member's image, whatever ids its browser sends.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractUser
from PIL import Image

from frontend.member_selectors import gallery_for_user
from frontend.workspace.jobs import WorkspaceError, own_job
from a1111.pnginfo import parse_generation_parameters, read_png_info
from inference.selectors import job_member_params
from inference.storage import member_image_open

GalleryRef = tuple[str, int]  # (job public id, image index)


def gallery_items(user: AbstractUser, limit: int = 60) -> tuple[list[tuple[Image.Image, str]], list[GalleryRef]]:
    """(image, caption) pairs for gr.Gallery, and the ref of each, in the same order."""
    items, refs = [], []
    for entry in gallery_for_user(user, limit=limit):
        try:
            image = member_image_open(entry.storage_key)
        except OSError:  # a file removed from storage: skip it rather than fail the whole gallery
            continue
        caption = entry.prompt if len(entry.prompt) <= 60 else entry.prompt[:59] + "…"
        items.append((image, caption))
        refs.append((entry.job_id, entry.index))
    return items, refs


def image_and_params(user: AbstractUser, ref: Any) -> tuple[Image.Image, dict[str, Any], str]:
    """The referenced image of the member's own job, its request params and its infotext."""
    try:
        public_id, index = str(ref[0]), int(ref[1])
    except (TypeError, ValueError, IndexError):
        raise WorkspaceError("Pick an image first.") from None
    job = own_job(user, public_id)
    if job is None or not 0 <= index < len(job.outputs):
        raise WorkspaceError("That image is not in your gallery.")
    infotext = job.infotexts[index] if index < len(job.infotexts) else ""
    params = job_member_params(job)
    if index < len(job.seeds):
        params["seed"] = job.seeds[index]
    params["checkpoint"] = job.checkpoint_title
    return member_image_open(job.outputs[index]), params, infotext


def png_info(data: bytes) -> tuple[str | None, dict[str, str]]:
    """The infotext of an uploaded image and its parsed fields (A1111's png-info)."""
    parameters, _items = read_png_info(data)
    if not parameters:
        return None, {}
    return parameters, parse_generation_parameters(parameters)


def params_from_pnginfo(fields: dict[str, str]) -> dict[str, Any]:
    """Parsed infotext fields → the workspace's form values (only those present)."""
    def number(key: str, cast: type) -> Any:
        try:
            return cast(fields[key])
        except (KeyError, ValueError):
            return None

    values = {
        "prompt": fields.get("Prompt"),
        "negative_prompt": fields.get("Negative prompt"),
        "steps": number("Steps", int),
        "sampler_name": fields.get("Sampler"),
        "scheduler": fields.get("Schedule type"),
        "cfg_scale": number("CFG scale", float),
        "seed": number("Seed", int),
        "width": number("Size-1", int),
        "height": number("Size-2", int),
    }
    return {key: value for key, value in values.items() if value is not None}
