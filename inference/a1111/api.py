"""`/sdapi/v1/*`: AUTOMATIC1111's HTTP API, per member, as thin adapters over the job services.

Every route needs a member's token (Bearer, bare EAS-style, or HTTP Basic `username:token`
as A1111 clients send for --api-auth). Everything is scoped to the caller: the models they
may use, their own options, their own progress and interrupt. Generation goes through
`job_submit` like every other client; `txt2img` holds the request open until the job is done
(an async view: waiting costs no thread), and a client that disconnects does not cancel.

Errors use A1111's shape: `{"error", "detail", "body", "errors"}`.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.files.storage import default_storage
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from inference.a1111.images import ImageInputError, decode_image_bytes
from inference.a1111.pnginfo import parse_generation_parameters, read_png_info
from inference.api import generation_limits
from inference.events import job_group
from inference.generation import RequestValidationError, parse_generation_request
from inference.infotext import VERSION
from inference.model_registry import ModelNotFound, model_list_for_user
from inference.models import Job
from inference.prompts import parse_prompt
from inference.samplers import SAMPLERS, SCHEDULES
from inference.selectors import jobs_active_for_owner, user_options_get
from inference.services import NotAMember, job_cancel, job_submit, user_options_update
from tenants.auth import request_user

# How often a waiting txt2img call re-reads its job if no event arrives (events can be lost).
WAIT_POLL_SECONDS = 1.0


class SdapiError(Exception):
    def __init__(self, status: int, detail: str, error: str = "HTTPException") -> None:
        super().__init__(detail)
        self.status, self.detail, self.error = status, detail, error


def error_response(status: int, detail: str, error: str = "HTTPException", body: str = "") -> JsonResponse:
    return JsonResponse({"error": error, "detail": detail, "body": body, "errors": detail}, status=status)


def sdapi(*methods: str) -> Callable:
    """An /sdapi/v1 route: method check, token auth, A1111 error shape. Sync or async views."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Awaitable[HttpResponse]]:
        is_async = asyncio.iscoroutinefunction(view)

        @csrf_exempt
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                return error_response(405, f"Method Not Allowed: use {', '.join(methods)}")
            user = await sync_to_async(request_user)(request)
            if user is None:
                response = error_response(401, "Not authenticated: send your API token (Bearer, or Basic username:token)")
                response["WWW-Authenticate"] = 'Basic realm="atelier"'
                return response
            try:
                if is_async:
                    result = await view(request, user, *args, **kwargs)
                else:
                    result = await sync_to_async(view)(request, user, *args, **kwargs)
            except RequestValidationError as exc:
                return error_response(422, str(exc), "RequestValidationError", body=exc.field)
            except ModelNotFound as exc:
                return error_response(404, str(exc), "ModelNotFound")
            except NotAMember as exc:
                return error_response(403, str(exc), "PermissionDenied")
            except SdapiError as exc:
                return error_response(exc.status, exc.detail, exc.error)
            return result if isinstance(result, HttpResponse) else JsonResponse(result, safe=False)

        wrapper.csrf_exempt = True  # type: ignore[attr-defined]
        return wrapper

    return decorator


def _json_body(request: HttpRequest) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SdapiError(422, f"the body is not valid JSON: {exc}", "JSONDecodeError") from None
    if not isinstance(body, dict):
        raise SdapiError(422, "the body must be a JSON object", "RequestValidationError")
    return body


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
    return [
        {"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4.0}
        for name in ("None", "Lanczos", "Nearest")
    ]


@sdapi("GET")
def latent_upscale_modes(request: HttpRequest, user) -> list[dict]:
    return [{"name": name} for name in ("Latent", "Latent (antialiased)", "Latent (bicubic)",
                                        "Latent (bicubic antialiased)", "Latent (nearest)", "Latent (nearest-exact)")]


@sdapi("GET")
def empty_list(request: HttpRequest, user) -> list:
    """Features not installed on this platform yet: face restorers, styles, RealESRGAN, extensions, script info."""
    return []


@sdapi("GET")
def scripts(request: HttpRequest, user) -> dict:
    # Advertise no ControlNet/ADetailer/AnimateDiff: clients then do not send their arguments.
    return {"txt2img": [], "img2img": []}


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
    user_options_update(user=user, values=_json_body(request))
    return None


# --- progress, interrupt, skip: the caller's own jobs only ----------------------------------


@sdapi("GET")
def progress(request: HttpRequest, user) -> dict:
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
    return {
        "progress": round(min(0.01 + fraction, 1.0) if current else 0.0, 4),
        "eta_relative": round(eta, 2),
        "state": {
            "skipped": False, "interrupted": bool(current and current.cancel_requested),
            "stopping_generation": False, "job": current.public_id if current else "",
            "job_count": job_count, "job_timestamp": f"{current.created_at:%Y%m%d%H%M%S}" if current else "0",
            "job_no": 0, "sampling_step": current.step if current else 0,
            "sampling_steps": current.total_steps if current else 0,
        },
        "current_image": None,
        "textinfo": f"{job_count} job(s) queued or running" if job_count else None,
    }


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
    """A1111 skips the current image of a batch; a batch here is one pipeline call, so this
    stops the caller's running generation like interrupt."""
    _cancel_running(user)
    return None


# --- png-info ------------------------------------------------------------------------------


@sdapi("POST")
def png_info(request: HttpRequest, user) -> dict:
    """The infotext of a PNG (ours or A1111's; JPEG/WebP EXIF too), raw and parsed."""
    image = _json_body(request).get("image")
    if not isinstance(image, str) or not image:
        raise SdapiError(422, "image: a base64 or data-URI image is required", "RequestValidationError")
    try:
        text, items = read_png_info(decode_image_bytes(image, max_bytes=settings.ATELIER_MAX_UPLOAD_BYTES))
    except ImageInputError as exc:
        raise SdapiError(422, f"image: {exc}", "ImageInputError") from None
    return {"info": text or "", "items": items, "parameters": parse_generation_parameters(text) if text else {}}


# --- txt2img -------------------------------------------------------------------------------

TXT2IMG_ECHO_DEFAULTS: dict[str, Any] = {
    "prompt": "", "negative_prompt": "", "styles": None, "seed": -1, "subseed": -1, "subseed_strength": 0,
    "seed_resize_from_h": -1, "seed_resize_from_w": -1, "sampler_name": None, "scheduler": None,
    "batch_size": 1, "n_iter": 1, "steps": 50, "cfg_scale": 7.0, "width": 512, "height": 512,
    "restore_faces": None, "tiling": None, "do_not_save_samples": False, "do_not_save_grid": False,
    "eta": None, "denoising_strength": None, "s_min_uncond": None, "s_churn": None, "s_tmax": None,
    "s_tmin": None, "s_noise": None, "override_settings": None, "override_settings_restore_afterwards": True,
    "refiner_checkpoint": None, "refiner_switch_at": None, "disable_extra_networks": False,
    "firstpass_image": None, "comments": None, "enable_hr": False, "firstphase_width": 0,
    "firstphase_height": 0, "hr_scale": 2.0, "hr_upscaler": None, "hr_second_pass_steps": 0,
    "hr_resize_x": 0, "hr_resize_y": 0, "hr_checkpoint_name": None, "hr_sampler_name": None,
    "hr_scheduler": None, "hr_prompt": "", "hr_negative_prompt": "", "force_task_id": None,
    "sampler_index": "Euler", "script_name": None, "script_args": [], "send_images": True,
    "save_images": False, "alwayson_scripts": {}, "infotext": None,
}

NOT_YET = {  # accepted, answered with a note in `info` (the generation-features issue adds them)
    "enable_hr": "hires fix", "restore_faces": "face restoration", "tiling": "tiling",
    "refiner_checkpoint": "SDXL refiner", "styles": "prompt styles", "script_name": "scripts",
}


async def wait_for_job(public_id: str) -> Job:
    """Until the job is finished: woken by its events, re-reading the row at least every second."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(job_group(public_id), channel)
    try:
        while True:
            job = await Job.objects.aget(public_id=public_id)
            if job.is_finished:
                return job
            try:
                await asyncio.wait_for(layer.receive(channel), timeout=WAIT_POLL_SECONDS)
            except asyncio.TimeoutError:
                pass
    finally:
        await layer.group_discard(job_group(public_id), channel)


def _submit_txt2img(user, body: dict[str, Any]) -> tuple[Job, list[str]]:
    generation = parse_generation_request(
        {**body, "kind": "txt2img"}, limits=generation_limits(), lenient_sampler=True
    )
    if generation.checkpoint is None:  # the member's own option, as A1111's loaded model
        chosen = user_options_get(user)["sd_model_checkpoint"]
        if chosen:
            generation = dataclasses.replace(generation, checkpoint=str(chosen))
    job = job_submit(user=user, request=generation)  # validates the prompts' extra networks too
    notes = [f"{label} is not available yet and was not applied" for key, label in NOT_YET.items() if body.get(key)]
    parsed = [parse_prompt(generation.prompt), parse_prompt(generation.negative_prompt)]
    if any(p.extra_networks for p in parsed):
        notes.append("LoRAs and hypernetworks are validated but not applied by the workers yet")
    notes += [f"{feature} is kept as plain text (not honoured yet)" for p in parsed for feature in p.unsupported]
    return job, notes


def _read_images(job: Job) -> list[str]:
    encoded = []
    for key in job.outputs:
        with default_storage.open(key, "rb") as handle:
            encoded.append(base64.b64encode(handle.read()).decode())
    return encoded


def _info(job: Job, notes: list[str]) -> str:
    params = job.params
    model_name, _, hash_part = job.checkpoint_title.rpartition(" [")
    seeds = list(job.seeds)
    count = len(seeds)
    return json.dumps({
        "prompt": params["prompt"], "all_prompts": [params["prompt"]] * count,
        "negative_prompt": params["negative_prompt"], "all_negative_prompts": [params["negative_prompt"]] * count,
        "seed": seeds[0] if seeds else params["seed"], "all_seeds": seeds,
        "subseed": params["subseed"], "all_subseeds": [params["subseed"] + i for i in range(count)],
        "subseed_strength": params["subseed_strength"],
        "width": params["width"], "height": params["height"], "sampler_name": params["sampler_name"],
        "cfg_scale": params["cfg_scale"], "steps": params["steps"], "batch_size": params["batch_size"],
        "restore_faces": False, "face_restoration_model": None,
        "sd_model_name": model_name.rsplit(".", 1)[0], "sd_model_hash": hash_part.rstrip("]"),
        "sd_vae_name": None, "sd_vae_hash": None, "seed_resize_from_w": -1, "seed_resize_from_h": -1,
        "denoising_strength": None, "extra_generation_params": {"Schedule type": params["scheduler"]},
        "index_of_first_image": 0, "infotexts": list(job.infotexts), "styles": [],
        "job_timestamp": f"{job.created_at:%Y%m%d%H%M%S}", "clip_skip": 1,
        "is_using_inpainting_conditioning": False, "version": VERSION,
        "id_task": job.public_id, "notes": notes,
    })


@sdapi("POST")
async def txt2img(request: HttpRequest, user) -> dict:
    body = _json_body(request)
    job, notes = await sync_to_async(_submit_txt2img)(user, body)
    job = await wait_for_job(job.public_id)
    if job.status == Job.Status.FAILED:  # the worker could not generate: A1111 answers 500 too
        raise SdapiError(500, f"job {job.public_id} failed: {job.error}", "GenerationFailed")
    if job.status == Job.Status.CANCELLED:  # interrupted: A1111 returns 200 with what it has
        notes.append("interrupted before any image was finished")
    send_images = body.get("send_images", True) is not False
    images = await sync_to_async(_read_images)(job) if send_images else []
    echo = {**TXT2IMG_ECHO_DEFAULTS, **{k: v for k, v in body.items() if k in TXT2IMG_ECHO_DEFAULTS}}
    return {"images": images, "parameters": echo, "info": _info(job, notes)}
