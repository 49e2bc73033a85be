"""The workspace process's front door, and the list of Gradio routes nobody may reach.

`SecretGuard` is pure ASGI middleware around the member's Gradio app: every HTTP request and
websocket must carry `X-Atelier-Workspace-Secret` equal to the secret this process was started
with (compared in constant time), or it gets 403. Only the web process knows the secret, and it
changes at every start, so a request that did not come through the platform's proxy (another
local user, a replayed secret from before a restart) is refused.

`blocked_route` names the Gradio routes that have had vulnerabilities and that the workspace
does not use. The proxy refuses them before they reach the process, and the guard refuses them
again inside it.

`FileInputGuard` reads every request body before Gradio does and refuses one that names a file
outside the member's own folders (`frontend.workspace.file_policy`); the proxy applies the same
check in the web process. This module imports nothing heavy: the proxy imports it too.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from frontend.workspace.file_policy import BodyRefused, FilePolicy, check_body

SECRET_HEADER = "x-atelier-workspace-secret"
SECRET_HEADER_BYTES = SECRET_HEADER.encode("latin-1")
# Answered by the process itself (behind the guard), outside the Gradio mount: the proxy
# never forwards anything outside /ui, so only the session manager reaches it.
HEALTH_PATH = "/_atelier/health"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Paths relative to the Gradio mount (the part after /ui). Checked on a normalised path
# (percent-decoded, repeated slashes collapsed, no `.`/`..` segments).
_BLOCKED = re.compile(
    r"""^/(?:
        gradio_api/proxy=            # reverse proxy to other Spaces (CVE-2026-28416 SSRF)
      | gradio_api/file=[a-z][a-z0-9+.-]*:   # file=http://… is fetched server-side (SSRF)
      | gradio_api/file/             # the deprecated spelling of file=; the frontend uses file=
      | gradio_api/custom_component/ # serves custom component files from disk
      | gradio_api/dev/              # hot reload
      | gradio_api/vibe-edit | gradio_api/undo-vibe-edit | gradio_api/vibe-code
      | gradio_api/process_recording # runs ffmpeg on uploaded recordings
      | gradio_api/run-history/ | gradio_api/runs # browser run history, HF bucket connect
      | gradio_api/profiling/
      | gradio_api/mcp
      | gradio_api/deep_link
      | monitoring                    # Gradio's analytics dashboard
      | login | logout                # Gradio's own auth: the platform authenticates
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_COMPONENT_SERVER = re.compile(r"^/gradio_api/component_server/?$", re.IGNORECASE)


def blocked_route(relative_path: str, *, component_server_allowed: bool = False) -> bool:
    """Whether a normalised path under the Gradio mount must never reach Gradio.

    The component server runs component methods marked `@server` (CVE-2024-1561 and
    CVE-2024-34511 came through it). Only the image editor, file explorer and dialogue use
    it, so it is open only when the workspace's Blocks contain one of them.
    """
    if _BLOCKED.match(relative_path):
        return True
    return bool(_COMPONENT_SERVER.match(relative_path)) and not component_server_allowed


def header_value(scope: Scope, name: bytes) -> bytes | None:
    """The one value of a header, or None if it is missing or repeated."""
    found = [value for key, value in scope.get("headers", ()) if key.lower() == name]
    return found[0] if len(found) == 1 else None


async def _refuse(scope: Scope, send: Send, status: int, text: str) -> None:
    if scope["type"] == "websocket":
        # Closing before accepting makes the server answer the handshake with 403.
        await send({"type": "websocket.close", "code": 1008})
        return
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class SecretGuard:
    """Refuse every request without this process's secret; answer the health probe."""

    def __init__(
        self, app: ASGIApp, *, secret: str, mount_path: str = "/ui", component_server_allowed: bool = False
    ) -> None:
        if len(secret) < 32:
            raise ValueError("the workspace secret must be at least 32 characters")
        self.app = app
        self._secret = secret.encode("latin-1")
        self._mount_path = mount_path
        self._component_server_allowed = component_server_allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)  # lifespan
            return
        supplied = header_value(scope, SECRET_HEADER_BYTES)
        if supplied is None or not hmac.compare_digest(supplied, self._secret):
            await _refuse(scope, send, 403, "Forbidden")
            return
        path = scope.get("path", "")
        if path == HEALTH_PATH and scope["type"] == "http":
            body = b'{"status":"ok"}'
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": body})
            return
        relative = path[len(self._mount_path):] if path.startswith(self._mount_path) else path
        if blocked_route(normalise(relative), component_server_allowed=self._component_server_allowed):
            await _refuse(scope, send, 404, "Not Found")
            return
        await self.app(scope, receive, send)


BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class FileInputGuard:
    """Read each request body whole (up to `max_body_bytes`), check its file references
    against the member's `FilePolicy`, then hand Gradio the same bytes.

    Gradio never sees a body naming another member's file, the database or `/proc`, so it
    never copies one into the upload cache, whatever its own checks do in a given release.
    """

    def __init__(self, app: ASGIApp, *, policy: FilePolicy, max_body_bytes: int, cwd: str | None = None) -> None:
        self.app = app
        self.policy = policy
        self.max_body_bytes = max_body_bytes
        self.cwd = cwd

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method", "GET") not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        content_type = header_value(scope, b"content-type")
        kind = (content_type or b"").split(b";")[0].strip().lower()
        if kind == b"multipart/form-data":
            await self.app(scope, receive, send)  # uploads: file contents, never server paths
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _refuse(scope, send, 413, "Request body too large.")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            check_body(body, content_type.decode("latin-1") if content_type else None, self.policy, cwd=self.cwd)
        except BodyRefused as refused:
            await _refuse_json(send, refused.status, str(refused))
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # what follows is the client going away

        await self.app(scope, replay, send)


async def _refuse_json(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message, "detail": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def normalise(path: str) -> str:
    """Collapse repeated slashes and drop `.` segments; `..` segments are kept (callers refuse them)."""
    parts = [part for part in path.split("/") if part not in ("", ".")]
    return "/" + "/".join(parts) + ("/" if path.endswith("/") and parts else "")
