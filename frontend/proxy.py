"""The reverse proxy in front of the members' Gradio workspaces: everything under `/ui/`.

Every request is authenticated with the Django session cookie; anonymous HTTP is sent to the
login page and anonymous websockets are closed. There is no way to name another member's
workspace: the caller's own process is the only upstream. Before forwarding, the proxy

* refuses Gradio routes the workspace does not use and that have had vulnerabilities
  (`frontend.workspace.guard.blocked_route`), paths with `..` segments, and file URLs outside
  the caller's own servable folders (all 404, so nothing says whether a file exists);
* refuses a Host that is not in ALLOWED_HOSTS (400), and cross-site writes (an `Origin` whose
  scheme, host or port is not this site's: 403);
* reads request bodies other than uploads whole and refuses one that names a file outside the
  caller's own folders (`frontend.workspace.file_policy`: 403), as the workspace process does again;
* strips the client's `X-Atelier-*`, forwarding and identity headers, the Django session and
  CSRF cookies, and injects the workspace's secret;
* caps request bodies (uploads at ATELIER_MAX_UPLOAD_BYTES, anything else at
  ATELIER_MAX_REQUEST_BYTES) while streaming them: 413 with a message.

Responses lose every internal header (the workspace secret, forwarding headers, CORS) and gain
the platform's security headers (nosniff, Referrer-Policy, a Content-Security-Policy).
Responses stream back as they come (Gradio's server-sent events), and a client that goes away
closes the upstream request, so Gradio sees the disconnect. While the member's process boots,
a page load gets the "starting your workspace" page and other requests wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, unquote

import httpx
import websockets
from django.conf import settings
from django.contrib.auth import aget_user
from django.http.cookie import parse_cookie
from django.template.loader import render_to_string
from django.utils.module_loading import import_string

from frontend.origins import host_allowed, origin_allowed, request_scheme
from frontend.sessions.manager import CRASHED, RUNNING, STARTING, CapacityFull, Workspace, WorkspaceManager
from frontend.sessions.paths import WorkspacePaths
from frontend.workspace.file_policy import BodyRefused, FilePolicy, check_body
from frontend.workspace.guard import BODY_METHODS, SECRET_HEADER, blocked_route, normalise

logger = logging.getLogger(__name__)

MOUNT = "/ui"
STATUS_PATH = "/_atelier/status"
SMALL_RESPONSE_BYTES = 256 * 1024  # read whole and sent at once; bigger or unsized ones stream
MULTIPART_ALLOWANCE = 64 * 1024  # part headers and boundaries around one file of the upload cap
UPLOAD_ROUTES = ("/gradio_api/upload", "/gradio_api/component_server")
HEARTBEAT_PREFIX = "/gradio_api/heartbeat/"
FILE_PREFIX = "/gradio_api/file="
HOP_BY_HOP = {
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"trailers",
    b"transfer-encoding", b"upgrade", b"host", b"content-length",
}
# Headers a client could use to claim an identity or a route; the workspace never sees them.
_STRIPPED_PREFIXES = (b"x-atelier-", b"x-forwarded-", b"x-remote-", b"x-user", b"remote-")
_STRIPPED = {b"authorization", b"proxy-authorization", b"forwarded", b"x-real-ip", b"cookie", b"sec-websocket-key",
             b"sec-websocket-version", b"sec-websocket-extensions", b"sec-websocket-protocol"}
# CORS is the platform's (default deny); internal and forwarding headers never go back out
# (Gradio copies request headers, the workspace secret among them, into ranged responses).
_RESPONSE_STRIPPED_PREFIXES = (b"access-control-", b"x-atelier-", b"x-forwarded-", b"x-real-ip", b"x-remote-")
_RESPONSE_STRIPPED = {b"server", b"forwarded", SECRET_HEADER.encode()}
# The workspace page is Gradio's: it needs inline and eval'd script, but nothing from elsewhere,
# no framing by other sites, no plugins and no form posts away from the site.
WORKSPACE_CSP = (
    b"default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    b"img-src 'self' data: blob:; media-src 'self' data: blob:; font-src 'self' data:; "
    b"connect-src 'self'; worker-src 'self' blob:; frame-ancestors 'self'; object-src 'none'; "
    b"base-uri 'self'; form-action 'self'"
)
_SECURITY_HEADER_NAMES = {b"x-content-type-options", b"referrer-policy", b"content-security-policy"}
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"content-security-policy", WORKSPACE_CSP),
)


class BodyTooLarge(Exception):
    pass


class UpstreamUnavailable(Exception):
    """No response from the workspace process (it died, or a pooled connection was stale)."""

    def __init__(self, *, body_sent: bool) -> None:
        super().__init__("workspace unreachable")
        self.body_sent = body_sent


@dataclass(frozen=True)
class Caller:
    user_id: int
    username: str


class SessionAuthenticator:
    """Django session cookie → active user, with a short cache (a Gradio page load is ~40 requests)."""

    def __init__(self, cache_seconds: float) -> None:
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Caller]] = {}
        self._engine = import_string(settings.SESSION_ENGINE)

    def session_key(self, scope: dict[str, Any]) -> str | None:
        for name, value in scope.get("headers", ()):
            if name == b"cookie":
                key = parse_cookie(value.decode("latin-1")).get(settings.SESSION_COOKIE_NAME)
                if key:
                    return key
        return None

    async def caller(self, scope: dict[str, Any]) -> Caller | None:
        key = self.session_key(scope)
        if not key:
            return None
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        request = SimpleNamespace(session=self._engine.SessionStore(key))
        user = await aget_user(request)
        if not user.is_authenticated or not user.is_active:
            self._cache.pop(key, None)
            return None
        caller = Caller(user_id=user.pk, username=user.get_username())
        if len(self._cache) > 10_000:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        self._cache[key] = (now + self._cache_seconds, caller)
        return caller


def _headers_in(scope: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    return list(scope.get("headers", ()))


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _forwarded_cookie(scope: dict[str, Any]) -> str | None:
    """The client's cookies minus the platform's own (the workspace needs neither)."""
    private = {settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME}
    kept = []
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                cookie_name = part.split("=", 1)[0].strip()
                if cookie_name and cookie_name not in private:
                    kept.append(part.strip())
    return "; ".join(kept) or None


def upstream_headers(scope: dict[str, Any], secret: str) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for name, value in _headers_in(scope):
        if name in HOP_BY_HOP or name in _STRIPPED or name.startswith(_STRIPPED_PREFIXES):
            continue
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    host = _header(scope, b"host")
    if host:
        headers.append(("host", host))  # Gradio builds its file URLs from it
    cookie = _forwarded_cookie(scope)
    if cookie:
        headers.append(("cookie", cookie))
    client = scope.get("client")
    if client:
        headers.append(("x-forwarded-for", str(client[0])))
    headers.append(("x-forwarded-proto", request_scheme(scope)))
    headers.append((SECRET_HEADER, secret))
    return headers


def _has_dotdot(text: str) -> bool:
    return any(part == ".." for part in text.replace("\\", "/").split("/"))


def file_route_allowed(relative: str, paths: WorkspacePaths) -> bool:
    """Whether a `/gradio_api/file=<absolute path>` names a file inside the member's own folders."""
    target = relative[len(FILE_PREFIX):]
    decoded = target
    for _ in range(3):  # %2e%2e, %252e%252e, …
        if _has_dotdot(decoded) or "\x00" in decoded or "\\" in decoded:
            return False
        decoded = unquote(decoded)
    if not target.startswith("/"):
        return False
    resolved = Path(os.path.realpath(target))
    return any(resolved.is_relative_to(root) for root in _resolved_roots(paths))


def _resolved_roots(paths: WorkspacePaths) -> list[Path]:
    return [Path(os.path.realpath(root)) for root in paths.servable_roots()]


class WorkspaceProxy:
    """ASGI app for `/ui` and everything under it."""

    def __init__(self, manager: WorkspaceManager) -> None:
        self.manager = manager
        self.auth = SessionAuthenticator(settings.ATELIER_WORKSPACE_AUTH_CACHE_SECONDS)
        self.upload_cap = settings.ATELIER_MAX_UPLOAD_BYTES
        self.request_cap = settings.ATELIER_MAX_REQUEST_BYTES

    async def __call__(self, scope, receive, send) -> None:
        self.manager.prewarm()
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self._http(scope, receive, send)

    # --- HTTP ---------------------------------------------------------------------------
    async def _http(self, scope, receive, send) -> None:
        path: str = scope["path"]
        if not host_allowed(scope):
            await _respond(send, 400, b"Bad Request: this Host is not served here.")
            return
        if path == MOUNT:
            query = scope.get("query_string", b"").decode("latin-1")
            await _respond(send, 301, b"", location=MOUNT + "/" + (f"?{query}" if query else ""))
            return
        caller = await self.auth.caller(scope)
        if caller is None:
            await _respond(send, 302, b"", location=f"{settings.LOGIN_URL}?next={quote(path)}")
            return
        relative = normalise(path[len(MOUNT):])
        if _has_dotdot(relative) or blocked_route(relative, component_server_allowed=True):
            # The component server is refused inside the process unless its Blocks use it.
            await _respond(send, 404, b"Not Found")
            return
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and not origin_allowed(scope):
            await _respond(send, 403, b"Cross-site request refused.")
            return
        is_file = relative.startswith(FILE_PREFIX)
        if is_file and not file_route_allowed(relative, WorkspacePaths.for_username(caller.username)):
            await _respond(send, 404, b"Not Found")
            return
        body: bytes | None = None
        if scope["method"] in BODY_METHODS and not _is_multipart(scope):
            # Read whole (small: JSON), and refused here if it names a file that is not the
            # caller's; the workspace process checks again (frontend.workspace.guard).
            cap = self._cap(relative)
            declared = _header(scope, b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > cap:
                await self._too_large(send, cap)
                return
            try:
                body = await _read_body(receive, cap)
                paths = WorkspacePaths.for_username(caller.username)
                check_body(body, _header(scope, b"content-type"), FilePolicy.for_roots(paths.servable_roots()))
            except BodyTooLarge:
                await self._too_large(send, cap)
                return
            except BodyRefused as refused:
                payload = json.dumps({"error": str(refused), "detail": str(refused)}).encode()
                await _respond(send, refused.status, payload, content_type=b"application/json")
                return
            except ClientGone:
                return
        try:
            workspace = await self.manager.workspace_for(user_id=caller.user_id, username=caller.username)
        except CapacityFull:
            await self._page(send, 503, "busy", caller)
            return
        if relative == STATUS_PATH:
            body = json.dumps({"status": workspace.status}).encode()
            await _respond(send, 200, body, content_type=b"application/json")
            return
        if workspace.status != RUNNING:
            if scope["method"] == "GET" and relative == "/" and workspace.status in (STARTING, CRASHED):
                await self._page(send, 503, workspace.status, caller)
                return
            if not await self.manager.wait_ready(workspace):
                await _respond(send, 503, b"Your workspace is not running; reload the page to start it.")
                return
        counts = not relative.startswith(HEARTBEAT_PREFIX)
        for attempt in (1, 2):
            try:
                with workspace.activity(counts=counts):
                    await self._forward(scope, receive, send, workspace, relative, is_file=is_file, body=body)
                return
            except UpstreamUnavailable as unavailable:
                await self.manager.connection_failed(workspace)
                if attempt == 2 or unavailable.body_sent:
                    break
                # Nothing was sent upstream that cannot be sent again: restart if it died, retry once.
                workspace = await self.manager.workspace_for(user_id=caller.user_id, username=caller.username)
                if not await self.manager.wait_ready(workspace):
                    break
        await _respond(send, 502, b"Your workspace stopped; reload the page to restart it.")

    async def _forward(
        self, scope, receive, send, workspace: Workspace, relative: str, *, is_file: bool, body: bytes | None
    ) -> None:
        cap = self._cap(relative)
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            await self._too_large(send, cap)
            return
        if body is not None:  # read and checked already
            declared = str(len(body))
            has_body = bool(body)
        else:
            has_body = declared not in (None, "0") or _header(scope, b"transfer-encoding") is not None
        url = workspace.base_url + quote(MOUNT + relative, safe="/=:@!$&'()*+,;~")
        query = scope.get("query_string", b"")
        if query:
            url += "?" + query.decode("latin-1")
        headers = upstream_headers(scope, workspace.secret)
        if declared is not None and has_body:
            headers.append(("content-length", declared))
        body_done = asyncio.Event()
        if body is not None:
            content = body if has_body else None
            body_done.set()
        else:
            content = _body(receive, cap, body_done) if has_body else None
            if not has_body:
                body_done.set()
        request = self.manager.client.build_request(scope["method"], url, headers=headers, content=content)
        try:
            response = await self.manager.client.send(request, stream=True)
        except BodyTooLarge:
            await self._too_large(send, cap)
            return
        except httpx.TransportError as error:
            logger.warning("workspace of %s unreachable: %r", workspace.username, error)
            raise UpstreamUnavailable(body_sent=has_body) from error
        try:
            if is_file and response.status_code in (403, 404):
                await _respond(send, 404, b"Not Found")
                return
            headers = _response_headers(response)
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) <= SMALL_RESPONSE_BYTES:
                # Most requests (config, info, assets, JSON): one read, one send, no watcher tasks.
                body = b"".join([chunk async for chunk in response.aiter_raw()])  # as sent: no decoding
                await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
            await _stream_back(response, receive, send, body_done)
        finally:
            await response.aclose()

    def _cap(self, relative: str) -> int:
        """The most bytes a request body to this route may have."""
        return self.upload_cap + MULTIPART_ALLOWANCE if relative.rstrip("/") in UPLOAD_ROUTES else self.request_cap

    async def _too_large(self, send, cap: int) -> None:
        limit = cap - MULTIPART_ALLOWANCE if cap > self.upload_cap else cap
        message = f"Request too large: uploads are limited to {limit / 1024 / 1024:.1f} MB ({limit} bytes)."
        await _respond(send, 413, message.encode())

    async def _page(self, send, status: int, state: str, caller: Caller) -> None:
        body = render_to_string(
            "frontend/workspace_starting.html",
            {"state": state, "status_url": MOUNT + STATUS_PATH, "username": caller.username},
        ).encode()
        await _respond(send, status, body, content_type=b"text/html; charset=utf-8",
                       extra=[(b"retry-after", b"1"), (b"cache-control", b"no-store")])

    # --- websockets ---------------------------------------------------------------------
    async def _websocket(self, scope, receive, send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        caller = await self.auth.caller(scope)
        relative = normalise(scope["path"][len(MOUNT):])
        if (
            not host_allowed(scope)
            or caller is None
            or not origin_allowed(scope)
            or _has_dotdot(relative)
            or blocked_route(relative, component_server_allowed=True)
        ):
            await send({"type": "websocket.close", "code": 1008})
            return
        try:
            workspace = await self.manager.workspace_for(user_id=caller.user_id, username=caller.username)
        except CapacityFull:
            await send({"type": "websocket.close", "code": 1013})
            return
        if not await self.manager.wait_ready(workspace):
            await send({"type": "websocket.close", "code": 1013})
            return
        url = workspace.base_url.replace("http://", "ws://") + quote(MOUNT + relative, safe="/=:@!$&'()*+,;~")
        query = scope.get("query_string", b"")
        if query:
            url += "?" + query.decode("latin-1")
        headers = [(k, v) for k, v in upstream_headers(scope, workspace.secret) if k not in ("host",)]
        try:
            upstream = await websockets.connect(
                url, additional_headers=headers, subprotocols=scope.get("subprotocols") or None,
                max_size=self.request_cap, open_timeout=10, compression=None,
            )
        except (OSError, websockets.InvalidHandshake, TimeoutError):
            await send({"type": "websocket.close", "code": 1008})
            return
        with workspace.activity():
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
            await _relay_websocket(upstream, receive, send)


class ClientGone(Exception):
    """The client went away before its request body had arrived."""


def _is_multipart(scope: dict[str, Any]) -> bool:
    """Uploads: their parts are file contents (and, for the image editor's blobs, plain fields),
    never server paths, so they stream through unread."""
    content_type = _header(scope, b"content-type") or ""
    return content_type.split(";")[0].strip().lower() == "multipart/form-data"


async def _read_body(receive, cap: int) -> bytes:
    """The client's whole request body, refusing it past `cap` bytes."""
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > cap:
            raise BodyTooLarge()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _body(receive, cap: int, done: asyncio.Event):
    """The client's request body as it arrives, refusing it past `cap` bytes."""
    received = 0
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise httpx.ReadError("client went away")
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > cap:
                raise BodyTooLarge()
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return
    finally:
        done.set()


def _response_headers(response: httpx.Response) -> list[tuple[bytes, bytes]]:
    private = (settings.SESSION_COOKIE_NAME + "=").encode(), (settings.CSRF_COOKIE_NAME + "=").encode()
    headers = []
    for name, value in response.headers.raw:
        lower = name.lower()
        if lower in HOP_BY_HOP and lower != b"content-length":
            continue
        if lower.startswith(_RESPONSE_STRIPPED_PREFIXES) or lower in _RESPONSE_STRIPPED:
            continue
        if lower in _SECURITY_HEADER_NAMES:
            continue  # the platform's own, below
        if lower == b"set-cookie" and value.lstrip().startswith(private):
            continue
        headers.append((lower, value))
    if not any(name == b"x-frame-options" for name, _ in headers):
        headers.append((b"x-frame-options", b"SAMEORIGIN"))
    headers.extend(SECURITY_HEADERS)
    return headers


async def _stream_back(response: httpx.Response, receive, send, body_done: asyncio.Event) -> None:
    """Copy the response body chunk by chunk; stop (closing upstream) if the client leaves."""

    async def pump() -> None:
        async for chunk in response.aiter_raw():
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def client_gone() -> None:
        await body_done.wait()
        while (await receive())["type"] != "http.disconnect":
            pass

    pumping = asyncio.ensure_future(pump())
    watching = asyncio.ensure_future(client_gone())
    try:
        await asyncio.wait({pumping, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pumping, watching):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError, OSError):
            await pumping
        with contextlib.suppress(asyncio.CancelledError):
            await watching


async def _relay_websocket(upstream, receive, send) -> None:
    async def client_to_upstream() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                await upstream.close()
                return
            if message.get("bytes") is not None:
                await upstream.send(message["bytes"])
            elif message.get("text") is not None:
                await upstream.send(message["text"])

    async def upstream_to_client() -> None:
        try:
            async for data in upstream:
                key = "bytes" if isinstance(data, bytes) else "text"
                await send({"type": "websocket.send", key: data})
        except websockets.ConnectionClosed:
            pass
        await send({"type": "websocket.close", "code": upstream.close_code or 1000})

    tasks = [asyncio.ensure_future(client_to_upstream()), asyncio.ensure_future(upstream_to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await upstream.close()


async def _respond(
    send, status: int, body: bytes, *, content_type: bytes = b"text/plain; charset=utf-8",
    location: str | None = None, extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *SECURITY_HEADERS]
    if location is not None:
        headers.append((b"location", location.encode("latin-1")))
    headers.extend(extra or [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


