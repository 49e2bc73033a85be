"""The native jobs API (`/api/v1/jobs`): thin adapters over the job services."""

from __future__ import annotations

from typing import Any

from django.http import FileResponse, HttpRequest, HttpResponseRedirect, JsonResponse

from a1111.extras import EXTRAS_KIND, parse_extras_request
from a1111.generation import parse_generation_request
from inference.api.errors import api_view, error, json_body
from inference.events import job_event_payload
from inference.inputs.controlnet import with_controlnet_inputs
from inference.inputs.images import read_extras_images, read_input_images
from inference.limits import generation_limits
from inference.model_files import model_file_info
from inference.model_registry import model_list_for_user
from inference.models import Job
from a1111.errors import RequestValidationError
from inference.selectors import (
    job_get_for_user,
    job_list_for_user,
    job_member_params,
    worker_list,
)
from inference.services import extras_submit, job_cancel, job_submit
from inference.storage import member_file_open, member_file_url
from inference.waiting import queue_state
from tenants.selectors import usage_this_month



def job_json(job: Job, *, viewer=None) -> dict[str, Any]:
    data = {
        **job_event_payload(job),
        "attempts": job.attempts_started,
        "checkpoint": job.checkpoint_title,
        "seeds": job.seeds,
        "infotexts": job.infotexts,
        "params": job_member_params(job),
        "control_maps": [f"/api/v1/jobs/{job.public_id}/control-maps/{i}" for i in range(len(job.control_maps))],
        "preview": f"data:image/jpeg;base64,{job.preview}" if job.preview else None,  # while running
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "gpu_seconds": round(job.gpu_seconds, 3),
    }
    if viewer is not None and viewer.is_staff:
        data["worker"] = job.worker.name if job.worker else None
        data["batch_id"] = job.batch_id or None
        data["attempt"] = job.attempts or None
    return data


def _not_found() -> JsonResponse:
    return error(404, "job not found")


@api_view("GET", "POST")
def jobs(request: HttpRequest, user) -> JsonResponse:
    if request.method == "GET":
        limit = request.GET.get("limit", "50")
        if not limit.isdigit() or not 1 <= int(limit) <= 500:
            raise RequestValidationError("limit", "must be an integer from 1 to 500")
        return JsonResponse({"jobs": [job_json(job) for job in job_list_for_user(user, limit=int(limit))]})
    body = json_body(request)
    if isinstance(body, dict) and body.get("kind") == EXTRAS_KIND:  # `image` or `imageList`, base64 only
        extras = parse_extras_request(body)
        inputs = read_extras_images(body, batch="imageList" in body, fetcher_factory=None)
        job = extras_submit(user=user, request=extras, inputs=inputs, degrade_missing_models=True)
        return JsonResponse({"id": job.public_id, "status": job.status}, status=201)
    generation = parse_generation_request(body, limits=generation_limits())
    inputs = None
    if generation.kind == "img2img":  # base64 only here; /sdapi/v1/img2img also fetches URLs
        inputs = read_input_images(body, max_images=generation.batch_size, fetcher_factory=None)
    generation, inputs = with_controlnet_inputs(body, generation, inputs, fetcher_factory=None)
    job = job_submit(user=user, request=generation, inputs=inputs, degrade_missing_models=True)
    return JsonResponse({"id": job.public_id, "status": job.status}, status=201)


@api_view("GET")
def job_detail(request: HttpRequest, user, public_id: str) -> JsonResponse:
    job = job_get_for_user(user, public_id)
    if job is None:
        return _not_found()
    state = queue_state(job)  # why a queued job waits, and its place in line
    return JsonResponse({**job_json(job, viewer=user), "queue": state.as_json() if state else None})


@api_view("POST")
def job_cancel_view(request: HttpRequest, user, public_id: str) -> JsonResponse:
    job = job_get_for_user(user, public_id)
    if job is None:
        return _not_found()
    return JsonResponse(job_json(job_cancel(job=job), viewer=user))


@api_view("GET")
def job_image(request: HttpRequest, user, public_id: str, index: int):
    job = job_get_for_user(user, public_id)
    if job is None:
        return _not_found()
    if index >= len(job.outputs):
        return error(404, f"job {public_id} has {len(job.outputs)} image(s)")
    return _png_response(job.outputs[index], what=f"image {index} of job {public_id}")


@api_view("GET")
def job_control_map(request: HttpRequest, user, public_id: str, index: int):
    """A ControlNet detect map of the caller's own job (PAI's `image_mask_url`)."""
    job = job_get_for_user(user, public_id)
    if job is None:
        return _not_found()
    if index >= len(job.control_maps):
        return error(404, f"job {public_id} has {len(job.control_maps)} ControlNet map(s)")
    return _png_response(job.control_maps[index], what=f"ControlNet map {index} of job {public_id}")


def _png_response(key: str, *, what: str) -> FileResponse | HttpResponseRedirect | JsonResponse:
    """The stored PNG, or a 404 when its file is gone (cleaned up, or removed by its owner).

    The caller has checked the job is the caller's own. On object storage the answer is a 302 to
    a short-lived signed URL of the image where it really is (clients that follow redirects, as
    `requests`, `httpx`'s `follow_redirects` and browsers do, get the PNG); locally the file is
    streamed from here."""
    gone = error(404, f"{what} is no longer stored (its file was removed): generate it again")
    try:
        url = member_file_url(key)
        if url is not None:
            response = HttpResponseRedirect(url)
            response["Cache-Control"] = "private, no-store"  # the signed URL is a short-lived credential
            return response
        handle = member_file_open(key)
    except FileNotFoundError:
        return gone
    response = FileResponse(handle, content_type="image/png")
    response["Content-Disposition"] = f'inline; filename="{key.rsplit("/", 1)[-1]}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


@api_view("GET")
def models(request: HttpRequest, user) -> JsonResponse:
    """The checkpoints this user may use: their own, their team's, then the public ones, each with
    its size and architecture read from its header (`inference.model_files`)."""
    entries = []
    for e in model_list_for_user(user):
        info = model_file_info(e.path, with_hash=False)
        entries.append({
            "title": e.title, "model_name": e.model_name, "hash": e.hash10, "sha256": e.sha256, "scope": e.scope,
            "format": info.format, "size": info.size, "architecture": info.architecture,
            "architecture_title": info.architecture_title,
        })
    return JsonResponse({"models": entries})


@api_view("GET")
def usage(request: HttpRequest, user) -> JsonResponse:
    """The caller's usage this month (their tenant's time zone, by end time): one record per
    finished job or adjustment, and the totals. Periods and exports: `/api/v1/usage/records`."""
    records = usage_this_month(user)
    return JsonResponse(
        {
            "gpu_seconds": round(sum(r.gpu_seconds for r in records), 3),
            "images": sum(r.images for r in records),
            "texts": sum(r.texts for r in records),  # prompts generated by prompt expansion
            "records": [
                {"job": r.job.public_id if r.job else None, "kind": r.kind, "gpu_seconds": round(r.gpu_seconds, 3),
                 "images": r.images, "texts": r.texts, "status": r.status, "created_at": r.created_at.isoformat(),
                 "ended_at": r.ended_at.isoformat()}
                for r in records
            ],
        }
    )


@api_view("GET")
def workers(request: HttpRequest, user) -> JsonResponse:
    """Operators only: the worker pool and each worker's state."""
    if not user.is_staff:
        return error(403, "only platform operators may list workers")
    return JsonResponse(
        {
            "workers": [
                {
                    "name": w.name,
                    "state": w.state,
                    "host": w.host,
                    "pid": w.pid,
                    "device": w.device,
                    "last_heartbeat": w.last_heartbeat.isoformat(),
                    "loaded_models": w.loaded_models,
                    "cached_models": w.cached_models,
                    "jobs_done": w.jobs_done,
                }
                for w in worker_list()
            ]
        }
    )
