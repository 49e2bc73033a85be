"""The Extras tab's path to the workers: the same `extras_submit` service the API's Extras use.

The tab's form becomes an A1111 Extras body (`/sdapi/v1/extra-single-image` and
`extra-batch-images` take the same one), parsed by `a1111.extras.parse_extras_request`, its
images decoded by `inference.inputs.images.read_extras_images` with the API's byte and pixel
limits, and queued as one "extras" job with `inference.services.extras_submit`. The images come
from one of three places:

- **Single image**: an upload.
- **Batch from Gallery**: images of the member's own gallery, named by (job, index) refs and read
  through `gallery.image_and_params` (owner-scoped: another member's ref is "not in your gallery").
- **Batch from folder**: a folder inside the member's own working directory, given relative to
  it. Absolute paths, `..`, symlinks anywhere on the way and anything the workspace's
  `FilePolicy` would not serve are refused with a message; only image files directly inside it
  are read (no symlinked files, none too large).

The outputs land in the member's outputs folder, under `extras-images/` as A1111's (the worker writes them,
`inference/runner/extras.py`), with A1111's postprocessing infotext.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path, PurePosixPath
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from PIL import Image

from a1111.errors import RequestError
from a1111.extras import parse_extras_request
from frontend.workspace.file_policy import FilePolicy
from frontend.workspace.gallery import image_and_params
from frontend.workspace.jobs import WorkspaceError, member_errors
from inference.inputs.images import read_extras_images
from inference.models import Job
from inference.services import extras_submit
from tenants.workdirs import user_workdir

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
SOURCES = ("single", "gallery", "folder")

# The form's fields, in the order the callbacks receive them (after the source and its inputs).
FIELDS = (
    "resize_mode", "upscaling_resize", "upscaling_resize_w", "upscaling_resize_h", "upscaling_crop",
    "upscaler_1", "upscaler_2", "extras_upscaler_2_visibility",
    "gfpgan_visibility", "codeformer_visibility", "codeformer_weight",
)


def max_images() -> int:
    """How many images one Extras request may hold (the API's `imageList` limit)."""
    return settings.ATELIER_MAX_BATCH_SIZE * settings.ATELIER_MAX_N_ITER


def extras_body(values: dict[str, Any]) -> dict[str, Any]:
    """The form as A1111's Extras body (the settings only; the images are added by the caller)."""
    resize_mode = values.get("resize_mode")
    return {
        "resize_mode": 1 if resize_mode in (1, "1", "to") else 0,
        "upscaling_resize": values.get("upscaling_resize", 2),
        "upscaling_resize_w": int(values.get("upscaling_resize_w") or 512),
        "upscaling_resize_h": int(values.get("upscaling_resize_h") or 512),
        "upscaling_crop": bool(values.get("upscaling_crop", True)),
        "upscaler_1": values.get("upscaler_1") or "None",
        "upscaler_2": values.get("upscaler_2") or "None",
        "extras_upscaler_2_visibility": values.get("extras_upscaler_2_visibility") or 0,
        "gfpgan_visibility": values.get("gfpgan_visibility") or 0,
        "codeformer_visibility": values.get("codeformer_visibility") or 0,
        "codeformer_weight": values.get("codeformer_weight") or 0,
    }


def _data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def gallery_images(user: AbstractUser, refs: list[Any]) -> list[dict[str, str]]:
    """The picked gallery images as `imageList` entries; each ref ("<job>:<index>") must be the member's own."""
    if not refs:
        raise WorkspaceError("Batch from Gallery: pick at least one image of your gallery.")
    if len(refs) > max_images():
        raise WorkspaceError(f"Batch from Gallery: {len(refs)} images picked; at most {max_images()} at a time.")
    entries = []
    for ref in refs:
        public_id, _, index = str(ref).rpartition(":")
        try:
            image, _params, _info = image_and_params(user, (public_id, int(index)))
        except ValueError:
            raise WorkspaceError("That image is not in your gallery.") from None
        entries.append({"data": _data_uri(image), "name": f"{public_id}-{index}"})
    return entries


def member_folder(user: AbstractUser, folder: str | None) -> Path:
    """The folder `folder` names inside the member's working directory, or `WorkspaceError` saying why not."""
    raw = (folder or "").strip()
    if not raw:
        raise WorkspaceError("Input folder: name a folder inside your working directory, e.g. inputs/faces.")
    if "\x00" in raw or os.path.isabs(raw) or raw.startswith(("\\", "~")) or PurePosixPath(raw).is_absolute():
        raise WorkspaceError("Input folder: give a path relative to your working directory, not an absolute one.")
    parts = PurePosixPath(raw.replace("\\", "/")).parts
    if ".." in parts:
        raise WorkspaceError("Input folder: '..' is not allowed; name a folder inside your working directory.")
    root = user_workdir(user.get_username()).resolve()
    path = root
    for part in parts:
        if part in ("", "."):
            continue
        path = path / part
        if path.is_symlink():
            raise WorkspaceError(f"Input folder: {raw} goes through a symbolic link, which is not allowed.")
    if not FilePolicy.for_roots([root]).allows(str(path)):
        raise WorkspaceError("Input folder: it must be inside your working directory.")
    if not path.is_dir():
        raise WorkspaceError(f"Input folder: there is no folder {raw} in your working directory.")
    return path


def folder_images(user: AbstractUser, folder: str | None) -> list[dict[str, str]]:
    """The image files directly inside the member's folder as `imageList` entries, by name."""
    path = member_folder(user, folder)
    files = sorted(
        entry for entry in path.iterdir()
        if entry.suffix.lower() in IMAGE_SUFFIXES and not entry.is_symlink() and entry.is_file()
    )
    if not files:
        raise WorkspaceError(f"Input folder: no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}.")
    if len(files) > max_images():
        raise WorkspaceError(f"Input folder: {len(files)} images in {folder}; at most {max_images()} at a time.")
    entries = []
    for file in files:
        if file.stat().st_size > settings.ATELIER_MAX_UPLOAD_BYTES:
            raise WorkspaceError(f"Input folder: {file.name} is larger than the upload limit.")
        entries.append({"data": base64.b64encode(file.read_bytes()).decode(), "name": file.stem})
    return entries


def workspace_extras_submit(
    *, user: AbstractUser, source: str, values: dict[str, Any],
    image: Image.Image | None = None, gallery_refs: list[Any] | None = None, folder: str | None = None,
) -> Job:
    """Validate the Extras form and queue its job as `user`; `WorkspaceError` naming what to fix."""
    with member_errors():
        body = extras_body(values)
        if source == "single":
            if image is None:
                raise WorkspaceError("Single image: upload an image first.")
            body["image"] = _data_uri(image)
        elif source == "gallery":
            body["imageList"] = gallery_images(user, gallery_refs or [])
        elif source == "folder":
            body["imageList"] = folder_images(user, folder)
        else:
            raise WorkspaceError(f"source: one of {', '.join(SOURCES)}")
        try:
            request = parse_extras_request(body)
            if not request.upscales and not request.restorers:
                raise WorkspaceError("Pick an upscaler, or a GFPGAN or CodeFormer visibility over 0: nothing to do.")
            inputs = read_extras_images(body, batch=source != "single", fetcher_factory=None)
            return extras_submit(user=user, request=request, inputs=inputs)
        except RequestError as exc:
            raise WorkspaceError(str(exc)) from None
