"""`/sdapi/v1/*` routes other than generation: lists, options, progress, interrupt, png-info.

Every route needs a member's token (Bearer, bare EAS-style, or HTTP Basic `username:token`
as A1111 clients send for --api-auth). Everything is scoped to the caller: the models they
may use, their own options, their own progress and interrupt. Generation (`txt2img`,
`img2img`) lives in `inference/sdapi/generate.py`, Extras (`extra-single-image`,
`extra-batch-images`) in `inference/sdapi/extras.py`.
"""

from __future__ import annotations

import os

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone

from inference.sdapi.adapter import json_object, sdapi
from a1111.images import ImageInputError, decode_image_bytes
from a1111.pnginfo import parse_generation_parameters, read_png_info
from inference.model_registry import FACE_RESTORER_KINDS, face_restorers_for_user, model_list_for_user, upscalers_for_user
from inference.models import Job
from a1111.errors import RequestValidationError
from a1111.samplers import SAMPLERS, SCHEDULES
from a1111 import scripts as a1111_scripts
from a1111.generation import parse_task_id
from inference.selectors import job_for_client_task, jobs_active_for_owner, user_options_get
from inference.services import job_cancel, job_skip, user_options_update
from inference.waiting import queue_state
from tenants.selectors import prompt_styles_for_user

# --- lists: exactly what the caller may use ------------------------------------------------


@sdapi("GET")
def samplers(request: HttpRequest, user) -> list[dict]:
    return [{"name": s.name, "aliases": list(s.aliases), "options": {}} for s in SAMPLERS]


@sdapi("GET")
def schedulers(request: HttpRequest, user) -> list[dict]:
    return [
        {"name": s.name, "label": s.label, "aliases": None, "default_rho": -1, "need_inner_model": False}
        for s in SCHEDULES
    ]


@sdapi("GET")
def sd_models(request: HttpRequest, user) -> list[dict]:
    return [
        {
            "title": e.title, "model_name": e.model_name, "hash": e.hash10, "sha256": e.sha256,
            "filename": f"{e.scope}/{e.name}",  # never a server path
            "config": None,
        }
        for e in model_list_for_user(user, "Stable-diffusion")
    ]


def _files(user, kind: str) -> list[dict]:
    return [{"name": e.model_name, "filename": f"{e.scope}/{e.name}"} for e in model_list_for_user(user, kind)]


@sdapi("GET")
def sd_vae(request: HttpRequest, user) -> list[dict]:
    return [{"model_name": f["name"], "filename": f["filename"]} for f in _files(user, "VAE")]


@sdapi("GET")
def loras(request: HttpRequest, user) -> list[dict]:
    return [{"name": f["name"], "alias": f["name"], "path": f["filename"], "metadata": {}} for f in _files(user, "Lora")]


@sdapi("GET")
def hypernetworks(request: HttpRequest, user) -> list[dict]:
    return [{"name": f["name"], "path": f["filename"]} for f in _files(user, "hypernetworks")]


@sdapi("GET")
def embeddings(request: HttpRequest, user) -> dict:
    loaded = {
        f["name"]: {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": None, "vectors": None}
        for f in _files(user, "embeddings")
    }
    return {"loaded": loaded, "skipped": {}}


@sdapi("POST")
def refresh(request: HttpRequest, user) -> None:
    """refresh-checkpoints / -loras / -vae / -embeddings: folders are read on every request."""
    return None


@sdapi("GET")
def upscalers(request: HttpRequest, user) -> list[dict]:
    """The built-in resizers, then the ESRGAN-family files the member may use (by A1111's name where it has one)."""
    builtin = [
        {"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4.0}
        for name in ("None", "Lanczos", "Nearest")
    ]
    return builtin + [
        {"name": name, "model_name": "ESRGAN", "model_path": entry.name, "model_url": None, "scale": 4.0}
        for name, entry in upscalers_for_user(user)
    ]



@sdapi("GET")
def realesrgan_models(request: HttpRequest, user) -> list[dict]:
    """The member's ESRGAN-family files in A1111's RealESRGAN list shape."""
    return [{"name": name, "path": entry.name, "scale": None} for name, entry in upscalers_for_user(user)]


@sdapi("GET")
def face_restorers(request: HttpRequest, user) -> list[dict]:
    """The face restorers the member has (A1111's shape; `cmd_dir` names the folder, not a server path)."""
    return [
        {"name": name, "cmd_dir": f"models/{FACE_RESTORER_KINDS[name]}/{entry.name}"}
        for name, entry in face_restorers_for_user(user).items()
    ]


@sdapi("GET")
def latent_upscale_modes(request: HttpRequest, user) -> list[dict]:
    return [{"name": name} for name in ("Latent", "Latent (antialiased)", "Latent (bicubic)",
                                        "Latent (bicubic antialiased)", "Latent (nearest)", "Latent (nearest-exact)")]


@sdapi("GET")
def script_info(request: HttpRequest, user) -> list[dict]:
    """The selectable scripts per tab with A1111 1.10's argument layout (`a1111/scripts.py`).
    (The installed extensions are listed by `frontend/extensions_api.py`.)"""
    return a1111_scripts.script_info()


@sdapi("GET")
def prompt_styles(request: HttpRequest, user) -> list[dict]:
    """The styles the caller may name in `styles`: their own, their team's and the public ones,
    one per name (their own shadows a team or public style of the same name), in A1111's shape."""
    return [
        {"name": style.name, "prompt": style.prompt, "negative_prompt": style.negative_prompt}
        for style in prompt_styles_for_user(user)
    ]


@sdapi("GET")
def scripts(request: HttpRequest, user) -> dict:
    # The selectable scripts (lower-cased titles, as A1111), then ControlNet's alwayson units; no
    # "controlnet m2m" script, no ADetailer/AnimateDiff: webuiapi then sends none of their arguments.
    return a1111_scripts.scripts_list()


@sdapi("GET")
def cmd_flags(request: HttpRequest, user) -> dict:
    # Only harmless flags: A1111 leaks every argparse value, secrets included (#17411).
    return {"api": True, "nowebui": False, "xformers": False, "enable_insecure_extension_access": False,
            "api_auth": None, "gradio_auth": None, "ckpt_dir": None, "lora_dir": None}


@sdapi("GET")
def memory(request: HttpRequest, user) -> dict:
    pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    available = os.sysconf("SC_AVPHYS_PAGES") * page_size
    total = pages * page_size
    return {
        "ram": {"free": available, "used": total - available, "total": total},
        "cuda": {"error": "GPU memory is per worker: see the workers in administration"},
    }


@sdapi("POST")
def acknowledged(request: HttpRequest, user) -> dict:
    """unload-checkpoint / reload-checkpoint: workers manage their own model caches."""
    return {}


# --- options: per member, never global -----------------------------------------------------


@sdapi("GET", "POST")
def options(request: HttpRequest, user) -> dict | None:
    if request.method == "GET":
        return user_options_get(user)
    user_options_update(user=user, values=json_object(request))
    return None


# --- progress, interrupt, skip: the caller's own jobs only ----------------------------------


@sdapi("GET")
def progress(request: HttpRequest, user) -> dict:
    skip = request.GET.getlist("skip_current_image")
    if any(value.lower() not in ("true", "false", "1", "0") for value in skip):
        raise RequestValidationError("skip_current_image", "must be true or false")
    active = jobs_active_for_owner(user)
    running = [job for job in active if job.status == Job.Status.RUNNING]
    current = running[0] if running else None
    fraction, eta = 0.0, 0.0
    if current is not None and current.started_at:
        fraction = current.progress
        if fraction > 0:
            elapsed = (timezone.now() - current.started_at).total_seconds()
            eta = elapsed / fraction * (1 - fraction)
    job_count = len(active)
    textinfo = f"{job_count} job(s) queued or running" if job_count else None
    if current is None and active:  # nothing of theirs runs yet: say why the next one waits (A1111: "Waiting...")
        waiting = queue_state(min(active, key=lambda job: (job.created_at, job.pk)))
        textinfo = waiting.message if waiting else textinfo
    return {
        "progress": round(min(0.01 + fraction, 1.0) if current else 0.0, 4),
        "eta_relative": round(eta, 2),
        "state": {
            # a skip was asked of the running job (it drops the images being made, then goes on)
            "skipped": bool(current and current.skip_requested), "interrupted": bool(current and current.cancel_requested),
            "stopping_generation": False, "job": current.public_id if current else "",
            "job_count": job_count, "job_timestamp": f"{current.created_at:%Y%m%d%H%M%S}" if current else "0",
            "job_no": 0, "sampling_step": current.step if current else 0,
            "sampling_steps": current.total_steps if current else 0,
        },
        "current_image": (current.preview or None) if current else None,  # base64 JPEG, every few steps
        "textinfo": textinfo,
    }


@sdapi("POST")
def internal_progress(request: HttpRequest, user) -> dict:
    """A1111's `/internal/progress`: the progress of the caller's own job that was submitted with
    `force_task_id` = `id_task` (as A1111's UI polls it), with its live preview when it changed
    since `id_live_preview` (the step it was taken at). An id the caller has not used answers as
    A1111 answers an unknown task: not active, not queued, "Waiting..."."""
    body = json_object(request)
    task_id = parse_task_id(body.get("id_task"), "id_task")
    if task_id is None:
        raise RequestValidationError("id_task", "required: the force_task_id the job was submitted with")
    seen = body.get("id_live_preview", -1)
    if isinstance(seen, bool) or not isinstance(seen, int):
        raise RequestValidationError("id_live_preview", "must be an integer (-1: none seen yet)")
    wants_preview = body.get("live_preview", True)
    if not isinstance(wants_preview, bool):
        raise RequestValidationError("live_preview", "must be true or false")
    job = job_for_client_task(user, task_id)
    answer: dict = {"active": False, "queued": False, "completed": False, "progress": None, "eta": None,
                    "live_preview": None, "id_live_preview": -1, "textinfo": "Waiting..."}
    if job is None:
        return answer
    if job.is_finished:
        return {**answer, "completed": True}
    if job.status != Job.Status.RUNNING:
        waiting = queue_state(job)
        return {**answer, "queued": True, "textinfo": waiting.message if waiting else "In queue..."}
    elapsed = (timezone.now() - job.started_at).total_seconds() if job.started_at else 0.0
    eta = elapsed / job.progress * (1 - job.progress) if job.progress > 0 else None
    preview = None
    if wants_preview and job.preview and seen != job.step:
        preview = f"data:image/jpeg;base64,{job.preview}"
    return {**answer, "active": True, "progress": round(job.progress, 4), "eta": None if eta is None else round(eta, 2),
            "live_preview": preview, "id_live_preview": job.step if job.preview else -1,
            "textinfo": f"Sampling step {job.step}/{job.total_steps}"}


def _cancel_running(user) -> None:
    for job in jobs_active_for_owner(user):
        if job.status == Job.Status.RUNNING:
            job_cancel(job=job)


@sdapi("POST")
def interrupt(request: HttpRequest, user) -> dict:
    """Stop the caller's running generation (A1111's interrupt is global; ours is not)."""
    _cancel_running(user)
    return {}


@sdapi("POST")
def skip(request: HttpRequest, user) -> None:
    """A1111's Skip, on the caller's running jobs only: each drops the images it is making now
    (its current batch-count iteration) and goes on with the rest (`job_skip`)."""
    for job in jobs_active_for_owner(user):
        if job.status == Job.Status.RUNNING:
            job_skip(job=job)
    return None


# --- png-info ------------------------------------------------------------------------------


@sdapi("POST")
def png_info(request: HttpRequest, user) -> dict:
    """The infotext of a PNG (ours or A1111's; JPEG/WebP EXIF too), raw and parsed."""
    image = json_object(request).get("image")
    if not isinstance(image, str) or not image:
        raise RequestValidationError("image", "a base64 or data-URI image is required")
    try:
        text, items = read_png_info(decode_image_bytes(image, max_bytes=settings.ATELIER_MAX_UPLOAD_BYTES))
    except ImageInputError as exc:
        raise ImageInputError(exc.message, field="image") from None
    return {"info": text or "", "items": items, "parameters": parse_generation_parameters(text) if text else {}}
