"""`/sdapi/v1/extra-single-image` and `/sdapi/v1/extra-batch-images`: A1111's Extras over `extras_submit`.

Each call becomes one `Job` of kind "extras" (billed and scheduled like a generation, run on a
worker, never here) and holds the request open until it is finished, as `txt2img` does. The
body is A1111's `ExtrasBaseRequest` (see `a1111/extras.py`) plus `image` (raw base64, data
URI or http(s) URL, fetched off the event loop by the SSRF-safe fetcher) or
`imageList: [{"data", "name"}]`. Responses are A1111's: `{"html_info", "image"}` and
`{"html_info", "images"}`, base64 PNGs carrying the postprocessing infotext.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest

from inference.sdapi.adapter import SdapiError, json_object, sdapi
from inference.sdapi.generate import read_job_images, wait_for_job
from a1111.extras import ExtrasRequest, parse_extras_request, plaintext_to_html
from inference.inputs.images import read_extras_images
from inference.models import Job
from inference.services import extras_submit

INTERRUPTED = "interrupted before every image was finished"


async def _run(request: HttpRequest, user, *, batch: bool) -> tuple[list[str], str]:
    """(the base64 PNGs, html_info) of a finished extras job."""
    body = json_object(request)
    extras = parse_extras_request(body)
    inputs = await sync_to_async(read_extras_images, thread_sensitive=False)(body, batch=batch)
    job = await sync_to_async(extras_submit)(user=user, request=extras, inputs=inputs, degrade_missing_models=True)
    job = await wait_for_job(job.public_id)
    if job.status == Job.Status.FAILED:  # the worker could not do it: A1111 answers 500 too
        raise SdapiError(500, f"job {job.public_id} failed: {job.error}", "ExtrasFailed")
    if job.status == Job.Status.CANCELLED:  # interrupted: nothing comes back, as for txt2img
        return [], plaintext_to_html(INTERRUPTED)
    images = await sync_to_async(read_job_images)(job, job.outputs)
    # A1111 shows the last image's infotext (every image has the same settings); then what could
    # not run for want of a model, and what to install
    missing = ExtrasRequest.from_json(job.params).missing_models
    return images, plaintext_to_html("\n".join([job.infotexts[-1] if job.infotexts else "", *missing]).strip())


@sdapi("POST")
async def extra_single_image(request: HttpRequest, user) -> dict[str, Any]:
    images, html_info = await _run(request, user, batch=False)
    return {"html_info": html_info, "image": images[0] if images else ""}


@sdapi("POST")
async def extra_batch_images(request: HttpRequest, user) -> dict[str, Any]:
    images, html_info = await _run(request, user, batch=True)
    return {"html_info": html_info, "images": images}
