"""`/sdapi/v1/interrogate`: A1111's image captioning ("clip") and danbooru tagging ("deepdanbooru") over `interrogate_submit`.

The body is A1111's `InterrogateRequest` `{"image", "model"}`; the image is decoded as Extras'
`image` is (base64, data URI or http(s) URL through the SSRF-safe fetcher, the same byte and
pixel limits). The call becomes one `Job` of kind "interrogate", run on a worker (never here:
the web process loads no torch) and held open until it is finished, as `extra-single-image`
is. The answer is A1111's `{"caption": str}`, read from the job's `texts`.

Errors, in A1111's shape: no image 422 naming `image` (A1111 answers 404 "Image not found"; a
missing field is a validation error everywhere else on this API), a model name other than "clip" or
"deepdanbooru" 404 naming `model` (A1111's "Model not found"), models not installed 404 naming
`model` with what to install where, checked before anything is queued; a job the worker could
not run 500 with its error, as A1111 answers an exception; an interrupted one `{"caption": ""}`.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest

from a1111.images import ImageInputError
from a1111.interrogate import parse_interrogate_model
from inference.inputs.images import read_extras_images
from inference.models import Job
from inference.sdapi.adapter import SdapiError, json_object, sdapi
from inference.sdapi.generate import wait_for_job
from inference.services import interrogate_submit


def interrogate_answer(job: Job) -> dict[str, str]:
    """A1111's response for a finished interrogate job (`SdapiError` 500 for a failed one)."""
    if job.status == Job.Status.FAILED:
        raise SdapiError(500, f"job {job.public_id} failed: {job.error}", "InterrogateFailed")
    return {"caption": job.texts[0] if job.status == Job.Status.SUCCEEDED and job.texts else ""}


@sdapi("POST")
async def interrogate(request: HttpRequest, user) -> dict[str, Any]:
    body = json_object(request)
    model = parse_interrogate_model(body)
    try:
        inputs = await sync_to_async(read_extras_images, thread_sensitive=False)(body, batch=False)
    except ImageInputError as exc:  # its message starts "image: "; `body` names the field too
        raise ImageInputError(exc.message.removeprefix("image: "), field="image") from None
    job = await sync_to_async(interrogate_submit)(user=user, model=model, image=inputs.images[0], size=inputs.sizes[0])
    return interrogate_answer(await wait_for_job(job.public_id))
