"""`/internal/events`: where worker processes hand job events to the web process (embedded default).

A plain ASGI app, which `config.asgi.AtelierApplication` serves before Django sees the request:
the event's signature (HMAC-SHA256 of the body with the SECRET_KEY web and workers share) and
shape are checked and it is published on the channel layer from the server's own event loop. As
a Django view every event took a request thread, the eleven middlewares and a hop back to the
loop for the publish (~3.5 ms a POST on the 2-core bench machine against 1.5 ms for `/healthz`),
on the path of every job's final event (`bench/e2e_overhead.py`'s notify stage).

It answers as that view did: 204 published, 403 a missing or wrong signature, 400 a body that is
not the `{"group": "job.<id>", "event": {...}}` object, 405 another method than POST, and 413 a
body over `ATELIER_MAX_REQUEST_BYTES`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

from inference.api.errors import JsonBodyError, parse_json
from inference.events import SIGNATURE_HEADER, group_publish_async, verify

EVENTS_PATH = "/internal/events"
_SIGNATURE = SIGNATURE_HEADER.lower().encode("latin-1")
_SHAPE = "expected {group: 'job.<id>', event: {...}}"

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def events_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """The ASGI app of `EVENTS_PATH` (HTTP only)."""
    if scope["method"] != "POST":
        await _answer(send, 405, {"error": "method not allowed; use POST"}, [(b"allow", b"POST")])
        return
    body = await _read_body(receive, settings.ATELIER_MAX_REQUEST_BYTES)
    if body is None:  # the client went away, or sent more than any event is
        await _answer(send, 413, {"error": "the event is too large"})
        return
    signature = next((value for name, value in scope["headers"] if name.lower() == _SIGNATURE), b"")
    if not verify(body, signature.decode("latin-1")):
        await _answer(send, 403, {"error": "bad signature"})
        return
    try:
        message = parse_json(body)
    except JsonBodyError as exc:
        await _answer(send, 400, {"error": exc.message})
        return
    group, event = (message.get("group"), message.get("event")) if isinstance(message, dict) else (None, None)
    if not isinstance(group, str) or not group.startswith("job.") or not isinstance(event, dict):
        await _answer(send, 400, {"error": _SHAPE})
        return
    await group_publish_async(group, event)
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None past `limit` bytes or when the client disconnects first."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


async def _answer(send: Send, status: int, payload: dict[str, str], headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(payload).encode()
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])],
    })
    await send({"type": "http.response.body", "body": body})
