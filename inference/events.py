"""Job events to the job's owner: websocket clients (and, later, the workspace and EAS sinks).

Subscribers always listen on the channel layer group `job.<public id>`. How an event gets
there depends on where it is raised:

* in cluster mode the channel layer is Redis, shared by every process: publish directly;
* in the embedded default the layer is in-memory, inside the web process. A worker process
  POSTs the event to the web process (`/internal/events`, loopback, HMAC-signed with the
  SECRET_KEY both share), which publishes it. This needs no server and is the same
  code path for subscribers; `manage.py serve` tells its workers where to POST.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import urllib.request
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.urls import reverse

if TYPE_CHECKING:
    from inference.models import Job

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Atelier-Signature"


def job_group(public_id: str) -> str:
    return f"job.{public_id}"


def job_image_urls(job: Job) -> list[str]:
    return [reverse("api-job-image", args=[job.public_id, index]) for index in range(len(job.outputs))]


def job_event_payload(job: Job) -> dict[str, Any]:
    return {
        "type": "job",
        "id": job.public_id,
        "kind": job.kind,
        "status": job.status,
        "progress": round(job.progress, 4),
        "step": job.step,
        "total_steps": job.total_steps,
        "error": job.error or None,
        "images": job_image_urls(job),
        "censored": list(job.censored),  # images the NSFW censor flagged and blurred
        # the expanded prompts (Job.Kind.PROMPTGEN), the caption (Job.Kind.INTERROGATE)
        **({"texts": list(job.texts)} if job.kind in ("promptgen", "interrogate") else {}),
    }


def sign(body: bytes) -> str:
    return hmac.new(settings.SECRET_KEY.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(body), signature or "")


def group_publish(group: str, event: dict[str, Any]) -> None:
    """Publish on this process's channel layer."""
    layer = get_channel_layer()
    if layer is not None:
        async_to_sync(layer.group_send)(group, {"type": "job.event", "event": event})


def job_event_publish(job: Job) -> None:
    """Best effort: a lost event never fails a job (clients can always GET the job)."""
    group, event = job_group(job.public_id), job_event_payload(job)
    try:
        if settings.ATELIER_EVENT_TRANSPORT == "http" and settings.ATELIER_EVENTS_URL:
            body = json.dumps({"group": group, "event": event}).encode()
            # urllib, not httpx: a plain-HTTP loopback call that builds no TLS context (httpx
            # makes one per call, which showed up as 5% of a worker's CPU during a job).
            request = urllib.request.Request(
                settings.ATELIER_EVENTS_URL,
                data=body,
                headers={SIGNATURE_HEADER: sign(body), "Content-Type": "application/json"},
                method="POST",
            )
            loopback = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
            with loopback.open(request, timeout=2.0) as response:
                response.read()
        else:
            group_publish(group, event)
    except Exception:  # noqa: BLE001 - events are advisory; the job row is the truth
        logger.warning("could not publish event for job %s", job.public_id, exc_info=True)
