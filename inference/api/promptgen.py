"""Prompt expansion over the native API: `POST /api/v1/promptgen`, `GET /api/v1/promptgen/models`.

Thin adapters over `promptgen_submit` (`inference/services.py`): the body is a
`PromptgenRequest` (`a1111/promptgen.py`: `prompt`, `model`, the sampling settings, `seed`), plus
`"wait"` (default true). Waiting, the call holds the request open (an async view: no thread)
until the job finishes or `ATELIER_PROMPTGEN_WAIT_SECONDS` pass, then answers with the job as
`GET /api/v1/jobs/<id>` shows it, `texts` included (200 when finished, 202 while still queued or
running, with `poll`). Without waiting it answers 201 with the job's id at once. Errors are the
native API's (`inference/api/errors.py`): a 400 naming the field, a 404 naming `model`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, JsonResponse

from a1111.fields import read_bool
from a1111.promptgen import parse_promptgen_request
from inference.api.errors import api_view, json_body
from inference.api.native import job_json
from inference.limits import promptgen_limits
from inference.models import Job
from inference.selectors import promptgen_models_for_user
from inference.services import promptgen_submit


def _submit(user, body: Any) -> tuple[Job, bool]:
    request = parse_promptgen_request(body, promptgen_limits())
    wait = read_bool(body, "wait", True)
    return promptgen_submit(user=user, request=request), wait


def _poll_url(job: Job) -> str:
    return f"/api/v1/jobs/{job.public_id}"


@api_view("POST")
async def promptgen(request: HttpRequest, user) -> JsonResponse:
    body = await sync_to_async(json_body)(request)
    job, wait = await sync_to_async(_submit)(user, body)
    if not wait:
        return JsonResponse({"id": job.public_id, "status": job.status, "poll": _poll_url(job)}, status=201)
    from inference.sdapi.generate import wait_for_job

    try:
        job = await asyncio.wait_for(wait_for_job(job.public_id), timeout=settings.ATELIER_PROMPTGEN_WAIT_SECONDS)
    except asyncio.TimeoutError:
        job = await Job.objects.aget(pk=job.pk)
    data = await sync_to_async(job_json)(job, viewer=user)
    if not job.is_finished:
        return JsonResponse({**data, "poll": _poll_url(job)}, status=202)
    return JsonResponse(data)


@api_view("GET")
def promptgen_models(request: HttpRequest, user) -> JsonResponse:
    """The prompt-generation models this member may run: their own, their team's, then the public ones."""
    return JsonResponse({
        "models": [
            {"name": e.name, "title": e.title, "hash": e.hash10, "sha256": e.sha256, "scope": e.scope,
             "model_type": e.model_type}
            for e in promptgen_models_for_user(user)
        ]
    })
