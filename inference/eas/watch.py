"""`ws://…/api/predict/<service>/sink?_watch_=true&…`: the EAS queue's watch websocket.

What the official SDK's `Watcher` expects (shared/reference/eas_queue.md §2.3, §4, §9.2):

* the handshake carries the service token, raw (or "Bearer <token>"), in `Authorization`; a wrong
  token, an unknown service, the input queue (the platform itself consumes it) or a nonsense
  parameter refuses the handshake (the socket is never accepted: the client sees HTTP 403);
* query parameters: `_index_` (start index; 0 = from the head, -1 = only items put from now on),
  `_window_` (default 1, at most `MAX_WINDOW`), `_index_only_` and `_auto_commit_` (`true` /
  `false`); other parameters (tags) are accepted and not used for filtering;
* the consumer is `"<gid>.<uid>"` from the `X-EAS-QueueService-Redis-Gid` / `-Uid` headers
  (gid "eas" and a fresh uid when missing): the window is counted, and uncommitted items are
  redelivered, per consumer;
* every server→client message is ONE binary frame holding one `DataFrameProto`
  (`inference.eas.frames`); never a text or empty frame (the SDK would reconnect in a tight loop,
  or hand the user a bogus item). Pings are answered by the ASGI server (daphne), not here.

The consumer polls `queue_deliver` every `POLL_SECONDS` (which claims items atomically, so
consumers in several web processes share a queue), refreshes its `consumer_seen` registration
every `SEEN_SECONDS`, and on any disconnect, a TCP abort without a close frame included, releases
its uncommitted items to the next consumer (`queue_release`) and marks itself gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from inference.eas.frames import UINT64_MAX, encode_frame
from inference.eas.queues import (
    EasAuthError,
    consumer_seen,
    queue_deliver,
    queue_release,
    queue_tail_index,
    service_authenticate,
)

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.2
SEEN_SECONDS = 30.0  # well inside the queue's consumer expiry
MAX_WINDOW = 1000
MAX_ID_LENGTH = 64  # each of gid and uid
DEFAULT_GROUP = "eas"
SINK = "sink"


class WatchRequestError(ValueError):
    """A parameter of the watch handshake that makes no sense (the handshake is refused)."""


@dataclass(frozen=True)
class WatchRequest:
    """What the handshake asks for."""

    service_name: str
    queue: str
    authorization: str
    consumer: str
    start_index: int  # -1: from the queue's tail at connect time
    window: int
    index_only: bool
    auto_commit: bool


def _boolean(query: dict[str, list[str]], name: str) -> bool:
    value = query.get(name, ["false"])[-1].strip().lower()
    if value not in ("true", "false"):
        raise WatchRequestError(f"{name} must be true or false, not {value[:20]!r}")
    return value == "true"


def _integer(query: dict[str, list[str]], name: str, default: int) -> int:
    raw = query.get(name, [str(default)])[-1].strip()
    try:
        return int(raw)
    except ValueError:
        raise WatchRequestError(f"{name} must be an integer, not {raw[:20]!r}") from None


def _identity(value: str | None, name: str) -> str | None:
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > MAX_ID_LENGTH or not value.isprintable():
        raise WatchRequestError(f"{name} must be at most {MAX_ID_LENGTH} printable characters")
    return value


def parse_watch_request(scope: dict) -> WatchRequest:
    """The watch parameters of a websocket scope; `WatchRequestError` for nonsense."""
    kwargs = scope["url_route"]["kwargs"]
    rest = (kwargs.get("rest") or "").strip("/")
    headers = {key.lower(): value.decode("latin-1") for key, value in scope.get("headers", ())}
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)

    if query.get("_watch_", ["true"])[-1].strip().lower() != "true":
        raise WatchRequestError("_watch_ must be true on a websocket")
    start_index = _integer(query, "_index_", 0)
    if start_index < -1 or start_index > UINT64_MAX:
        raise WatchRequestError("_index_ must be -1 (new items only), 0 (from the head) or an index")
    window = _integer(query, "_window_", 1)
    if window < 1:
        raise WatchRequestError("_window_ must be at least 1")
    group = _identity(headers.get(b"x-eas-queueservice-redis-gid"), "the group header") or DEFAULT_GROUP
    user = _identity(headers.get(b"x-eas-queueservice-redis-uid"), "the user header") or uuid.uuid4().hex
    return WatchRequest(
        service_name=kwargs["service"],
        queue=SINK if rest == SINK else "input",
        authorization=headers.get(b"authorization", ""),
        consumer=f"{group}.{user}",
        start_index=start_index,
        window=min(window, MAX_WINDOW),
        index_only=_boolean(query, "_index_only_"),
        auto_commit=_boolean(query, "_auto_commit_"),
    )


class QueueWatchConsumer(AsyncWebsocketConsumer):
    """One watcher of one service's sink queue (see the module docstring)."""

    # It polls the database and is sent nothing over the channel layer: no Redis channel (and no
    # receive loop) per watcher.
    channel_layer_alias = None

    async def connect(self) -> None:
        self.service = None
        self.pump: asyncio.Task | None = None
        self.stopping = asyncio.Event()
        try:
            self.request = parse_watch_request(self.scope)
        except WatchRequestError:
            await self.close()  # before accept: the handshake is refused
            return
        if self.request.queue != SINK:
            await self.close()  # the input queue's consumer is the platform itself
            return
        try:
            self.service = await database_sync_to_async(service_authenticate)(
                name=self.request.service_name, authorization=self.request.authorization
            )
        except EasAuthError:
            await self.close()
            return
        self.start_index = self.request.start_index
        if self.start_index == -1:
            self.start_index = await database_sync_to_async(queue_tail_index)(service=self.service, queue=SINK)
        await self._seen(connected=True)
        await self.accept()
        self.pump = asyncio.create_task(self._pump())

    async def _seen(self, *, connected: bool) -> None:
        await database_sync_to_async(consumer_seen)(
            service=self.service, queue=SINK, consumer=self.request.consumer, window=self.request.window,
            auto_commit=self.request.auto_commit, connected=connected,
        )

    async def _pump(self) -> None:
        try:
            await self._deliver_until_stopped()
        except Exception:
            # A database or server error: close (the SDK reconnects with the same URL); the
            # disconnect that follows releases what this consumer held.
            logger.exception("EAS watch of %s by %s failed", self.request.service_name, self.request.consumer)
            self.stopping.set()
            with contextlib.suppress(Exception):
                await self.close()

    async def _deliver_until_stopped(self) -> None:
        deliver = database_sync_to_async(queue_deliver)
        last_seen = time.monotonic()
        while not self.stopping.is_set():
            frames = await deliver(
                service=self.service, queue=SINK, consumer=self.request.consumer, window=self.request.window,
                start_index=self.start_index, auto_commit=self.request.auto_commit,
            )
            for frame in frames:
                if self.stopping.is_set():
                    break  # gone: queue_release hands the rest to the next consumer
                data = b"" if self.request.index_only else frame.data
                raw = encode_frame(frame.index, frame.tags, data, frame.message)
                if raw:  # an empty frame would reach the SDK's user as a bogus item 0
                    await self.send(bytes_data=raw)
            if time.monotonic() - last_seen >= SEEN_SECONDS:
                await self._seen(connected=True)
                last_seen = time.monotonic()
            if not frames:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), POLL_SECONDS)

    async def disconnect(self, code: int) -> None:
        if self.service is None:
            return  # refused at the handshake
        self.stopping.set()
        if self.pump is not None:
            # Let a delivery already claimed in its thread finish first, so that the release
            # below also covers what it claimed.
            with contextlib.suppress(Exception):
                await self.pump
        await database_sync_to_async(queue_release)(service=self.service, queue=SINK, consumer=self.request.consumer)
        await self._seen(connected=False)

    async def receive(self, text_data=None, bytes_data=None) -> None:
        pass  # the SDK sends nothing but pings (answered by the server); commits come over HTTP
