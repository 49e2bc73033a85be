"""The workspace's path to the GPU: the same `job_submit` / `job_cancel` services every API uses.

The workspace never runs a pipeline. It validates the form into a `GenerationRequest` with the
API's own parser and limits, submits it as the logged-in member, and then follows the job the
way any client can: by reading the member's own Job row (progress, step, status) a few times a
second. Polling the row, rather than subscribing to `/ws/jobs/<id>`, works in every deployment:
in the embedded default the channel layer is in-memory inside the web process, which the
workspace (a separate process per member) cannot reach; the row is the source of truth anyway.

ControlNet units from the panel (`frontend/workspace/controlnet.py`) travel the same way: as
`alwayson_scripts.controlnet.args` in the body, read by the APIs' own `with_controlnet_inputs`.

Every error a member can cause (quota, a model they may not use, a bad value, a bad image) is a
`RequestError` (`a1111/errors.py`, the hierarchy the APIs map through one table)
and becomes `WorkspaceError` with its message naming the field to fix (`cfg_scale: must be a
number…`; a ControlNet unit named as its tab is); anything else is logged and shown as a
generic message, never as a traceback.
"""

from __future__ import annotations

import base64
import io
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from html import escape
from typing import Any

from django.contrib.auth.models import AbstractUser
from PIL import Image

from frontend.member_selectors import extension_enabled_for_user
from frontend.workspace.controlnet import enabled_units, threshold_sliders
from frontend.workspace.extensions import PROMPT_STYLES
from frontend.workspace.i18n import text
from inference.limits import generation_limits, xyz_max_cells
from inference.inputs.controlnet import with_controlnet_inputs
from a1111.generation import GenerationRequest, parse_generation_request
from a1111.xyz import parse_xyz
from inference.inputs.images import InputImages, read_input_images
from inference.job_groups import job_group_submit
from inference.models import Job, JobGroup
from inference.selectors import job_newest_active_for_owner
from a1111.errors import RequestError
from a1111.styles import with_styles_applied
from inference.services import job_cancel, job_skip, job_submit
from inference.waiting import REFRESH_SECONDS as QUEUE_REFRESH_SECONDS
from inference.waiting import QueueState, queue_state
from tenants.selectors import prompt_style_texts_for_user

logger = logging.getLogger(__name__)

class WorkspaceError(Exception):
    """Something the member can fix; the message says what."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# Exceptions whose message is written for the member: every client error (its `str()` names
# the field), and PermissionErrors of other services.
_MEMBER_ERRORS: tuple[type[BaseException], ...] = (RequestError, PermissionError)


def as_workspace_error(exc: Exception, language: str = "en") -> WorkspaceError:
    """The message a member sees for `exc`: the services' own wording for refusals they can
    fix; for anything else a generic sentence (the exception is logged for operators)."""
    if isinstance(exc, WorkspaceError):
        return exc
    if isinstance(exc, _MEMBER_ERRORS):
        return WorkspaceError(str(exc) or type(exc).__name__)
    logger.error("workspace callback failed", exc_info=exc)
    return WorkspaceError(text(language, "unexpected_error"))


@contextmanager
def member_errors(language: str = "en") -> Iterator[None]:
    """Turn the services' refusals (and anything unexpected) into `WorkspaceError`."""
    try:
        yield
    except Exception as exc:
        raise as_workspace_error(exc, language) from None


def _png_data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def request_body(kind: str, values: dict[str, Any]) -> dict[str, Any]:
    """The workspace form as an A1111 API body (the shape every other client sends)."""
    body: dict[str, Any] = {
        "kind": kind,
        "prompt": values.get("prompt") or "",
        "negative_prompt": values.get("negative_prompt") or "",
        "sampler_name": values.get("sampler_name") or "Euler a",
        "scheduler": values.get("scheduler") or "Automatic",
        "steps": values.get("steps"),
        "cfg_scale": values.get("cfg_scale"),
        "width": values.get("width"),
        "height": values.get("height"),
        "seed": values.get("seed") if values.get("seed") not in (None, "") else -1,
        "n_iter": values.get("n_iter"),
        "batch_size": values.get("batch_size"),
        "tiling": bool(values.get("tiling", False)),
        "restore_faces": bool(values.get("restore_faces", False)),
        "override_settings": {
            "sd_model_checkpoint": values.get("checkpoint") or None,
            "sd_vae": values.get("vae") or "Automatic",
        },
    }
    if kind == "txt2img" and values.get("enable_hr"):
        body.update({
            "enable_hr": True,
            "hr_upscaler": values.get("hr_upscaler") or "Latent",
            "hr_scale": values.get("hr_scale", 2),
            "hr_second_pass_steps": values.get("hr_second_pass_steps", 0),
            "denoising_strength": values.get("hr_denoising_strength", 0.7),
        })
    if kind == "img2img":
        body.update({
            "denoising_strength": values.get("denoising_strength"),
            "mask_blur": values.get("mask_blur", 4),
            "inpainting_fill": values.get("inpainting_fill", 1),
            "inpaint_full_res": bool(values.get("inpaint_full_res", False)),
        })
    units = [_controlnet_unit(unit) for _number, unit in enabled_units(values.get("controlnet_units"))]
    if units:
        body["alwayson_scripts"] = {"controlnet": {"args": units}}
    return {key: value for key, value in body.items() if value is not None}


def _controlnet_unit(unit: dict[str, Any]) -> dict[str, Any]:
    """One enabled unit of the panel as an sd-webui-controlnet API unit. No image: none is sent
    (img2img then uses its init image, as the extension does; txt2img is refused by the parser)."""
    module = unit.get("module") or "none"
    slider_a, slider_b = threshold_sliders(module)
    api_unit: dict[str, Any] = {
        "enabled": True,
        "module": module,
        "model": unit.get("model") or "None",
        "weight": unit.get("weight", 1.0),
        "guidance_start": unit.get("guidance_start", 0.0),
        "guidance_end": unit.get("guidance_end", 1.0),
        "control_mode": int(unit.get("control_mode") or 0),
        "resize_mode": 1 if unit.get("resize_mode") is None else int(unit["resize_mode"]),  # Crop and Resize
        "pixel_perfect": bool(unit.get("pixel_perfect", False)),
        # -1: the preprocessor's defaults (the extension's API convention), for sliders not shown
        "processor_res": int(unit.get("processor_res") or -1) if module != "none" else -1,
        "threshold_a": unit.get("threshold_a", -1) if slider_a else -1,
        "threshold_b": unit.get("threshold_b", -1) if slider_b else -1,
    }
    if unit.get("image") is not None:
        api_unit["image"] = _png_data_uri(unit["image"])
    return api_unit


_UNIT_FIELD = re.compile(r"alwayson_scripts\.controlnet\.args\[(\d+)\]")


def _named_units(message: str, numbers: list[int]) -> str:
    """An API message about `alwayson_scripts.controlnet.args[i]` naming the unit as the tabs do
    (only enabled units are sent, so `args[0]` may be "ControlNet Unit 2")."""

    def name(match: re.Match) -> str:
        index = int(match[1])
        return f"ControlNet Unit {numbers[index]}" if index < len(numbers) else match[0]

    return _UNIT_FIELD.sub(name, message)


def _styled(user: AbstractUser, values: dict[str, Any]) -> dict[str, Any]:
    """Merge the chosen prompt styles in (the member's own, team and public ones, as the API
    does), when the member has the extension on; a style no longer there is an error naming it."""
    if not values.get("styles") or not extension_enabled_for_user(user, PROMPT_STYLES):
        return values
    values = {**values, "styles": list(values["styles"])}  # Gradio may hand a tuple
    limits = generation_limits()
    return with_styles_applied(values, prompt_style_texts_for_user(user), max_prompt_chars=limits.max_prompt_chars)


def _parsed_form(
    user: AbstractUser, kind: str, values: dict[str, Any], init_image: Image.Image | None, mask: Image.Image | None
) -> tuple[GenerationRequest, InputImages | None]:
    """The form parsed as the APIs parse a body: the request and its decoded images."""
    body = request_body(kind, _styled(user, values))
    request = parse_generation_request(body, limits=generation_limits())
    inputs = None
    if kind == "img2img":
        if init_image is None:
            raise WorkspaceError("img2img needs an image: upload one, or send one from your gallery")
        body["init_images"] = [_png_data_uri(init_image)]
        if mask is not None:
            body["mask"] = _png_data_uri(mask)
        inputs = read_input_images(body, max_images=request.batch_size, fetcher_factory=None)
    # The ControlNet units: validated and decoded as the APIs do (no URLs: the images are uploads).
    return with_controlnet_inputs(body, request, inputs, fetcher_factory=None)


def workspace_submit(
    *, user: AbstractUser, kind: str, values: dict[str, Any],
    init_image: Image.Image | None = None, mask: Image.Image | None = None,
) -> Job:
    """Validate and submit one generation as `user`; raises `WorkspaceError`."""
    numbers = [number for number, _unit in enabled_units(values.get("controlnet_units"))]
    with member_errors():
        try:
            request, inputs = _parsed_form(user, kind, values, init_image, mask)
            return job_submit(user=user, request=request, inputs=inputs)
        except RequestError as exc:
            raise WorkspaceError(_named_units(str(exc), numbers)) from None


def workspace_submit_plot(*, user: AbstractUser, values: dict[str, Any], axes: dict[str, Any]) -> JobGroup:
    """Validate and submit a txt2img X/Y/Z plot (`axes`: the API's `xyz` object) as `user`, one
    job per cell, all or none (`inference/job_groups.py`); raises `WorkspaceError`."""
    numbers = [number for number, _unit in enabled_units(values.get("controlnet_units"))]
    with member_errors():
        try:
            request, inputs = _parsed_form(user, "txt2img", values, None, None)
            plot = parse_xyz(axes, limits=generation_limits(), max_cells=xyz_max_cells())
            return job_group_submit(user=user, request=request, plot=plot, inputs=inputs)
        except RequestError as exc:
            raise WorkspaceError(_named_units(str(exc), numbers)) from None


def own_job(user: AbstractUser, public_id: str) -> Job | None:
    """The member's own job. Stricter than `job_get_for_user` (which lets a tenant admin see
    the team's jobs): a workspace follows, cancels and shows only its member's own work."""
    if not public_id:
        return None
    return Job.objects.filter(owner=user, public_id=public_id).first()


def workspace_cancel(*, user: AbstractUser, public_id: str, kind: str | None = None) -> Job | None:
    """Cancel the member's job `public_id` while it runs; without one (a reloaded page, a second
    browser tab), the member's newest running or queued job of `kind`, found in the database.
    None when nothing of theirs runs: another member's job is never found."""
    job = own_job(user, public_id)
    if (job is None or job.is_finished) and kind:
        job = job_newest_active_for_owner(user, kind)
    if job is None or job.is_finished:
        return None
    return job_cancel(job=job)


def workspace_skip(*, user: AbstractUser, public_id: str, kind: str | None = None) -> Job | None:
    """Skip (A1111's): the member's running job `public_id` (else their newest running job of
    `kind`) drops the images it is making now and goes on with the rest. None when nothing of
    theirs runs: another member's job is never found."""
    job = own_job(user, public_id)
    if (job is None or job.status != Job.Status.RUNNING) and kind:
        job = job_newest_active_for_owner(user, kind)
    if job is None or job.status != Job.Status.RUNNING:
        return None
    return job_skip(job=job)


def preview_image(encoded: str) -> Image.Image:
    """A running job's live preview (base64 JPEG, written by the worker every few steps)."""
    image = Image.open(io.BytesIO(base64.b64decode(encoded)))
    image.load()
    return image


def progress_error_html(message: str) -> str:
    """The bar when a job could not even be submitted: the reason, in place of the previous job's state."""
    return (
        '<div class="atelier-progress" data-status="error" data-job="">'
        f'<div class="atelier-progress-error">{escape(message)}</div></div>'
    )


def queue_label(state: QueueState | None, language: str) -> str:
    """Why a queued job waits, in the member's language ("" when unknown)."""
    if state is None:
        return ""
    if state.reason == "in_line":
        key = "queue_next" if state.position == 1 else "queue_in_line"
    else:
        key = f"queue_{state.reason}"
    ahead = (state.position or 1) - 1
    return text(language, key).format(running=state.running, limit=state.limit, ahead=ahead)


# How often a workspace tab re-reads the job it follows (its progress bar moves at this rate).
POLL_SECONDS = 0.25


def watch_job(user: AbstractUser, public_id: str, *, poll_seconds: float) -> Iterator[tuple[Job, QueueState | None]]:
    """The member's own job, each time what they see of it changes (status, step, a cancel, why it
    waits), until it ends: the last item is the finished job. `WorkspaceError` when it is gone.

    Why a queued job waits costs a few queries, so it is re-read every `REFRESH_SECONDS` only.
    """
    seen: tuple | None = None
    state: QueueState | None = None
    checked = 0.0
    while True:
        current = own_job(user, public_id)
        if current is None:
            raise WorkspaceError("This job is gone.")
        if current.status == Job.Status.QUEUED:
            if time.monotonic() - checked >= QUEUE_REFRESH_SECONDS:
                state, checked = queue_state(current), time.monotonic()
        else:
            state = None
        shown = (current.status, current.step, current.cancel_requested, state)
        if shown != seen or current.is_finished:
            seen = shown
            yield current, state
        if current.is_finished:
            return
        time.sleep(poll_seconds)


def progress_html(job: Job | None, language: str, queue: QueueState | None = None) -> str:
    """A progress bar a browser (and a test) can read: `data-status`, `aria-valuenow`, and for a
    queued job `data-queue` (why it waits) with the reason in its label."""
    if job is None:
        return '<div class="atelier-progress" data-status="idle"></div>'
    percent = 100 if job.status == Job.Status.SUCCEEDED else int(round(job.progress * 100))
    # A cancel the worker has not acted on yet (it stops at its next step) says so.
    cancelling = job.cancel_requested and not job.is_finished
    cancelling_attr = ' data-cancelling="1"' if cancelling else ""
    label = text(language, "cancel_requested" if cancelling else f"status_{job.status}")
    detail = f" · {job.step}/{job.total_steps}" if job.status == Job.Status.RUNNING and job.total_steps else ""
    waiting = queue_label(queue, language) if job.status == Job.Status.QUEUED and not cancelling else ""
    if waiting:
        detail = f" · {waiting}"
    queue_attr = f' data-queue="{escape(queue.reason)}"' if waiting and queue else ""
    colour = {"failed": "#dc2626", "cancelled": "#9ca3af"}.get(job.status, "#f97316")
    error = f'<div class="atelier-progress-error">{escape(job.error)}</div>' if job.error else ""
    return (
        f'<div class="atelier-progress" data-status="{job.status}" data-job="{escape(job.public_id)}"'
        f'{cancelling_attr}{queue_attr} role="progressbar" '
        f'aria-valuemin="0" aria-valuemax="100" aria-valuenow="{percent}">'
        f'<div style="background:#e5e7eb;border-radius:6px;height:12px;overflow:hidden">'
        f'<div class="atelier-progress-fill" style="width:{percent}%;height:100%;background:{colour};'
        f'transition:width .2s"></div></div>'
        f'<div style="font-size:.85rem;margin-top:.25rem">{escape(label)}{detail} · {percent}%</div>{error}</div>'
    )

