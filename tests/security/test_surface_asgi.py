"""The mounts `config.asgi.AtelierApplication` serves before Django and Channels see a request:
the workspace proxy at `/ui` and `/ui/…`, static files, and the workers' job events
(`/internal/events`).

Requests go through a real `AtelierApplication` (its dispatch, the real `WorkspaceProxy` and
`WorkspaceManager`), built with no spare workspace processes so that an anonymous request, which
must start nothing, cannot start one either. Signed-in workspaces run in tests/e2e/test_workspaces.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from urllib.parse import quote, unquote

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator

from frontend.models import WorkspaceSession

pytestmark = pytest.mark.django_db(transaction=True)

FORGED_IDENTITY = [(b"x-forwarded-user", b"alice"), (b"x-atelier-user", b"alice"), (b"remote-user", b"alice")]


@pytest.fixture
def platform_app(settings, personas):
    """A fresh `AtelierApplication`, and a session row left "running" by an earlier web process:
    the manager's first start marks it stopped, which tells when its background write is done."""
    settings.ATELIER_WORKSPACE_SPARES = 0
    from config.asgi import AtelierApplication

    WorkspaceSession.objects.create(user=personas["alice"], status=WorkspaceSession.Status.RUNNING)
    app = AtelierApplication()
    yield app
    app.workspaces.shutdown()


async def _settled(app) -> None:
    """Wait for the manager's start-up write, and check that nothing was started for nobody."""
    for _ in range(200):
        status = await sync_to_async(lambda: WorkspaceSession.objects.get().status)()
        if status == WorkspaceSession.Status.STOPPED:
            break
        await asyncio.sleep(0.05)
    assert app.workspaces.sessions() == [] and app.workspaces._spares == []


async def _http(
    app, method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None, body: bytes = b""
) -> dict:
    """One HTTP exchange with an ASGI app, run to its end: {"status", "headers", "body"}.

    (Channels' HttpCommunicator insists on a `body` key in every body message, which ASGI lets
    a server leave out, and only sees an app's exception after its full timeout.)
    """
    path_only, _, query = path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": unquote(path_only), "raw_path": path_only.encode(), "query_string": query.encode(),
             "root_path": "", "headers": [(b"host", b"testserver"), *(headers or [])],
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}
    requests = [{"type": "http.request", "body": body, "more_body": False}]
    never = asyncio.Event()
    sent: list[dict] = []

    async def receive() -> dict:
        if requests:
            return requests.pop()
        await never.wait()  # the client stays connected
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return {"status": start["status"], "headers": start.get("headers", []), "body": body}


def _location(response: dict) -> str:
    return dict(response["headers"]).get(b"location", b"").decode()


def test_the_workspace_mount_sends_anonymous_callers_to_sign_in(platform_app) -> None:
    async def requests() -> None:
        bare = await _http(platform_app, "GET", "/ui")
        assert (bare["status"], _location(bare)) == (301, "/ui/")
        for method, path, headers in [
            ("GET", "/ui/", []),
            ("GET", "/ui/config", []),
            ("GET", "/ui/gradio_api/info", []),
            ("GET", "/ui/gradio_api/file=/etc/passwd", []),
            ("POST", "/ui/gradio_api/queue/join", []),
            ("GET", "/ui/", [(b"cookie", b"sessionid=not-a-session")]),
            ("GET", "/ui/", FORGED_IDENTITY),
        ]:
            response = await _http(platform_app, method, path, headers)
            assert response["status"] == 302, (method, path, response["status"])
            assert _location(response) == f"/login/?next={quote(path)}", (method, path)
        await _settled(platform_app)

    async_to_sync(requests)()


def test_anonymous_workspace_websockets_are_closed(platform_app) -> None:
    async def sockets() -> None:
        for path, headers in [
            ("/ui/gradio_api/queue/join", []),
            ("/ui/queue/join", FORGED_IDENTITY),
            ("/ui/gradio_api/queue/join", [(b"cookie", b"sessionid=not-a-session")]),
        ]:
            communicator = WebsocketCommunicator(platform_app, path, headers=headers)
            connected, code = await communicator.connect(timeout=10)
            assert (connected, code) == (False, 1008), (path, headers)
        await _settled(platform_app)

    async_to_sync(sockets)()


def test_static_files_are_public_and_only_static(settings) -> None:
    """Static assets answer anyone; nothing outside the static files does, however spelt."""
    if not settings.SERVE_STATIC:
        pytest.skip("SERVE_STATIC is off: a web server in front serves /static/")
    from config.asgi import application

    secret_file = b"SECRET_KEY"

    async def requests() -> None:
        asset = await _http(application, "GET", f"/{settings.STATIC_URL.strip('/')}/admin/css/base.css")
        assert asset["status"] == 200
        for path in ("/static/../config/settings.py", "/static/%2e%2e/config/settings.py",
                     "/static//etc/passwd", "/static/admin/../../manage.py", "/static/admin/../../../../config/settings.py"):
            response = await _http(application, "GET", path)  # a `..` escape is a 404, not a 500
            assert response["status"] == 404, (path, response["status"])
            assert secret_file not in response["body"] and b"root:" not in response["body"]

    async_to_sync(requests)()


def test_the_event_ingress_refuses_requests_without_the_worker_signature(tokens) -> None:
    """`/internal/events`, served before Django: a member's token, no signature, a signature of
    another body or by another key are all refused (403), as is any other method than POST (405),
    and nothing reaches the job's subscribers; the workers' signature is accepted (204) and the
    event is published to the job's group, and to it alone."""
    from channels.layers import get_channel_layer

    from config.asgi import application
    from inference.events import SIGNATURE_HEADER, sign

    body = json.dumps({"group": "job.j_alices", "event": {"type": "job", "status": "succeeded"}}).encode()
    header = SIGNATURE_HEADER.lower().encode()
    forged = hmac.new(b"not-the-secret-key", body, hashlib.sha256).hexdigest().encode()
    refused = {
        "no signature": [],
        "a member's token": [(b"authorization", f"Bearer {tokens['alice']}".encode())],
        "another body's signature": [(header, sign(b"another body").encode())],
        "a signature by another key": [(header, forged)],
    }

    async def requests() -> None:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add("job.j_alices", channel)
        for what, headers in refused.items():
            response = await _http(application, "POST", "/internal/events", headers, body)
            assert response["status"] == 403, what
        for method in ("GET", "PUT", "DELETE"):
            response = await _http(application, method, "/internal/events", [(header, sign(body).encode())], body)
            assert response["status"] == 405, method
        not_an_event = b'{"group": "users", "event": {}}'
        response = await _http(application, "POST", "/internal/events", [(header, sign(not_an_event).encode())], not_an_event)
        assert response["status"] == 400
        with pytest.raises(asyncio.TimeoutError):  # nothing was published so far
            await asyncio.wait_for(layer.receive(channel), timeout=0.2)
        response = await _http(application, "POST", "/internal/events", [(header, sign(body).encode())], body)
        assert response["status"] == 204
        message = await asyncio.wait_for(layer.receive(channel), timeout=5)
        assert message == {"type": "job.event", "event": {"type": "job", "status": "succeeded"}}
        await layer.group_discard("job.j_alices", channel)

    async_to_sync(requests)()
