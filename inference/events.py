"""Job events to the job's owner: websocket clients (and, later, the workspace and EAS sinks).

Subscribers always listen on the channel layer group `job.<public id>`. How an event gets
there depends on where it is raised:

* in cluster mode the channel layer is Redis, shared by every process: publish directly;
* in the embedded default the layer is in-memory, inside the web process. A worker process
  POSTs the event to the web process (`/internal/events`, loopback, HMAC-signed with the
  SECRET_KEY both share), which publishes it. This needs no server and is the same
  code path for subscribers; `manage.py serve` tells its workers where to POST.

  The POSTs leave from one relay thread per process (`EventRelay`), in order, over one kept-alive
  connection, so a worker does not wait for the web process between claiming a job and starting
  its pipeline, nor between progress writes. A job's final event (succeeded, failed, cancelled)
  is still waited for, up to the same 2 s as before: when `job_event_publish` returns, the event
  has reached the web process (or failed to), as it always had.

In cluster mode the same holds for the Redis channel layer (`LayerRelay`): a publish from sync
code (a worker, a request thread) was `async_to_sync`, which ran each send on a new event loop
with a new Redis connection (~7 ms per event, measured in-process); the relay thread keeps one
loop, and so one connection pool, for the process.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import hmac
import http.client
import json
import logging
import os
import queue
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.urls import reverse

if TYPE_CHECKING:
    from inference.models import Job

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Atelier-Signature"
RELAY_TIMEOUT_SECONDS = 2.0  # one POST's socket timeout, and how long a final event is waited for
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})  # Job.FINISHED's values


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


async def group_publish_async(group: str, event: dict[str, Any]) -> None:
    """Publish on this process's channel layer, from its event loop: the one place a job event
    becomes a channel-layer message (`consumers.py` handles its `job.event` type)."""
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(group, {"type": "job.event", "event": event})


def group_publish(group: str, event: dict[str, Any]) -> None:
    """Publish on this process's channel layer, from sync code."""
    async_to_sync(group_publish_async)(group, event)


class _OrderedSender:
    """A thread of its own that sends queued items one at a time and in order. `_enqueue(item,
    wait=True)` returns once that item was sent (or could not be); `wait=False` returns at once.
    Best effort as every event: a failure is logged, never raised. `None` is a marker that
    `flush` waits for; subclasses send the rest (`_send`)."""

    thread_name = "event-relay"

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Any, threading.Event | None]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def _enqueue(self, item: Any, *, wait: bool) -> None:
        sent = threading.Event() if wait else None
        self._queue.put((item, sent))
        if sent is not None:
            sent.wait(RELAY_TIMEOUT_SECONDS)

    def flush(self) -> None:
        """Wait (up to the relay timeout) until every event published so far has been sent."""
        self._enqueue(None, wait=True)

    def _run(self) -> None:
        while True:
            item, sent = self._queue.get()
            try:
                if item is not None:
                    self._send(item)
            except Exception:  # noqa: BLE001 - events are advisory; the job row is the truth
                logger.warning("could not relay a job event (%s)", self.thread_name, exc_info=True)
            finally:
                if sent is not None:
                    sent.set()

    def _send(self, item: Any) -> None:
        raise NotImplementedError


class EventRelay(_OrderedSender):
    """POSTs signed events to the web process's `/internal/events`, one at a time and in order,
    from a thread of its own over one kept-alive connection (made again when the server closed it)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.url = url
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._path = parts.path or "/"
        self._connection: http.client.HTTPConnection | None = None
        super().__init__()

    def publish(self, body: bytes, *, wait: bool) -> None:
        self._enqueue(body, wait=wait)

    def _send(self, body: bytes) -> None:
        # http.client, not httpx: plain-HTTP loopback that builds no TLS context (httpx makes one
        # per client, which showed up as 5% of a worker's CPU during a job); never via a proxy.
        reused = self._connection is not None
        connection = self._connection or self._connect()
        try:
            response = self._post(connection, body)
        except (http.client.HTTPException, OSError):
            connection.close()
            self._connection = None
            if not reused:
                raise
            # The server closed the kept-alive connection while it was idle: once more, on a new one.
            connection = self._connect()
            response = self._post(connection, body)
        self._connection = connection
        if response.status >= 400:
            logger.warning("the web process refused a job event: HTTP %s", response.status)

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self._host, self._port, timeout=RELAY_TIMEOUT_SECONDS)

    def _post(self, connection: http.client.HTTPConnection, body: bytes) -> http.client.HTTPResponse:
        connection.request(
            "POST", self._path, body=body, headers={SIGNATURE_HEADER: sign(body), "Content-Type": "application/json"}
        )
        response = connection.getresponse()
        response.read()
        return response


class LayerRelay(_OrderedSender):
    """Sends events on the process's channel layer (Redis) from a thread with its own event loop,
    one at a time and in order; `publish(group, event, wait=…)` as `EventRelay.publish`.

    Not for the in-memory layer: its queues belong to the web server's own loop."""

    thread_name = "event-relay-layer"

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()  # used only by the relay's thread
        super().__init__()

    def publish(self, group: str, event: dict[str, Any], *, wait: bool) -> None:
        self._enqueue((group, event), wait=wait)

    def _send(self, item: tuple[str, dict[str, Any]]) -> None:
        group, event = item
        self._loop.run_until_complete(asyncio.wait_for(group_publish_async(group, event), RELAY_TIMEOUT_SECONDS))


_relays: dict[tuple[int, str], EventRelay | LayerRelay] = {}
_relays_lock = threading.Lock()


def event_relay(url: str) -> EventRelay:
    """This process's relay to `url` (a forked child makes its own: threads do not survive a fork)."""
    return _relay((os.getpid(), url), lambda: EventRelay(url))  # type: ignore[return-value]


def layer_relay() -> LayerRelay:
    """This process's relay onto its (Redis) channel layer."""
    return _relay((os.getpid(), "channel-layer"), LayerRelay)  # type: ignore[return-value]


def _relay(key: tuple[int, str], make) -> EventRelay | LayerRelay:
    with _relays_lock:
        relay = _relays.get(key)
        if relay is None:
            relay = _relays[key] = make()
            if len(_relays) == 1:
                atexit.register(_flush_relays)
        return relay


def _flush_relays() -> None:
    """At exit: what is still queued (a claim, a last progress step) is sent before the process goes."""
    for (pid, _), relay in list(_relays.items()):
        if pid == os.getpid():
            relay.flush()


def job_event_publish(job: Job) -> None:
    """Best effort: a lost event never fails a job (clients can always GET the job)."""
    group, event = job_group(job.public_id), job_event_payload(job)
    try:
        if settings.ATELIER_EVENT_TRANSPORT == "http" and settings.ATELIER_EVENTS_URL:
            body = json.dumps({"group": group, "event": event}).encode()
            event_relay(settings.ATELIER_EVENTS_URL).publish(body, wait=event["status"] in FINAL_STATUSES)
        elif settings.ATELIER_EVENT_TRANSPORT == "channel_layer":  # Redis, shared by every process
            layer_relay().publish(group, event, wait=event["status"] in FINAL_STATUSES)
        else:  # the in-memory layer, in the web process itself
            group_publish(group, event)
    except Exception:  # noqa: BLE001 - events are advisory; the job row is the truth
        logger.warning("could not publish event for job %s", job.public_id, exc_info=True)


def job_events_publish(jobs: Iterable[Job]) -> None:
    """Several jobs' events (a dispatch pass's batches), each as `job_event_publish` sends it; on
    the in-memory layer in one hop into the event loop rather than one `async_to_sync` per event
    (~1 ms each: 256 of them were a third of a cold dispatch pass, `bench/dispatch_scale.py`)."""
    jobs = list(jobs)
    transport = settings.ATELIER_EVENT_TRANSPORT
    if transport == "channel_layer" or (transport == "http" and settings.ATELIER_EVENTS_URL) or len(jobs) < 2:
        for job in jobs:
            job_event_publish(job)
        return
    try:
        events = [(job_group(job.public_id), job_event_payload(job)) for job in jobs]
        async_to_sync(_group_publish_all)(events)
    except Exception:  # noqa: BLE001 - events are advisory; the job row is the truth
        logger.warning("could not publish events for %d jobs", len(jobs), exc_info=True)


async def _group_publish_all(events: list[tuple[str, dict[str, Any]]]) -> None:
    for group, event in events:
        await group_publish_async(group, event)
