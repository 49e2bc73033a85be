"""The workspace proxy's and guard's rules, on their own (no processes): which paths are refused,
which file URLs a member may fetch, which headers reach the workspace, and the guard's secret.
The same rules are exercised end to end in tests/e2e/test_workspaces.py."""

from __future__ import annotations

import asyncio

import pytest
from django.conf import settings

from frontend.origins import origin_allowed as same_origin
from frontend.proxy import file_route_allowed, upstream_headers
from frontend.sessions.paths import WorkspacePaths
from frontend.workspace.guard import HEALTH_PATH, SecretGuard, blocked_route, normalise

SECRET = "s" * 43


@pytest.mark.parametrize(
    "path",
    [
        "/gradio_api/proxy=http://169.254.169.254/",
        "/gradio_api/file=http://127.0.0.1:8000/",
        "/gradio_api/file=HTTPS://example.com/x.png",
        "/gradio_api/file/tmp/x.png",
        "/gradio_api/custom_component/1/client/js/index.js",
        "/gradio_api/dev/reload",
        "/gradio_api/vibe-edit",
        "/gradio_api/process_recording",
        "/gradio_api/run-history/connect",
        "/gradio_api/mcp/sse",
        "/monitoring",
        "/login",
        "/logout",
        "/Gradio_API/Proxy=http://x/",
    ],
)
def test_risky_gradio_routes_are_blocked(path: str) -> None:
    assert blocked_route(normalise(path), component_server_allowed=True)


@pytest.mark.parametrize(
    "path",
    ["/", "/config", "/gradio_api/info", "/gradio_api/queue/join", "/gradio_api/queue/data", "/gradio_api/upload",
     "/gradio_api/heartbeat/abc", "/gradio_api/file=/data/users/alice/outputs/a.png", "/assets/index.js",
     "/theme.css"],
)
def test_routes_the_workspace_uses_are_open(path: str) -> None:
    assert not blocked_route(normalise(path))


def test_the_component_server_is_open_only_when_allowed() -> None:
    assert blocked_route("/gradio_api/component_server")
    assert blocked_route("/gradio_api/component_server/")
    assert not blocked_route("/gradio_api/component_server", component_server_allowed=True)


def test_normalise_collapses_slashes_and_dots_but_keeps_dotdot() -> None:
    assert normalise("//gradio_api//./proxy=x") == "/gradio_api/proxy=x"
    assert normalise("/a/../b/") == "/a/../b/"


def test_file_urls_resolve_inside_the_members_own_folders_only(tmp_path) -> None:
    alice = WorkspacePaths.for_username("alice")
    alice.ensure()
    charlie = WorkspacePaths.for_username("charlie")
    charlie.ensure()
    mine = alice.outputs / "a.png"
    mine.write_bytes(b"png")
    assert file_route_allowed(f"/gradio_api/file={mine}", alice)
    assert file_route_allowed(f"/gradio_api/file={alice.temp}/upload/x.png", alice)
    refused = [
        f"/gradio_api/file={mine}",  # for charlie
        f"/gradio_api/file={charlie.outputs}/../../alice/outputs/a.png",
        f"/gradio_api/file={charlie.outputs}/%2e%2e/%2e%2e/alice/outputs/a.png",
        f"/gradio_api/file={charlie.outputs}/%252e%252e/%252e%252e/alice/outputs/a.png",
        f"/gradio_api/file={charlie.outputs}/..%5c..%5calice/outputs/a.png",
        "/gradio_api/file=../alice/outputs/a.png",
        "/gradio_api/file=/etc/passwd",
        f"/gradio_api/file={settings.DATA_DIR}/secret_key",
        f"/gradio_api/file={charlie.workdir}/models/Lora/x.safetensors",
        f"/gradio_api/file={charlie.outputs}/a.png\x00.txt",
    ]
    for path in refused:
        assert not file_route_allowed(path, charlie), path
    # A symlink inside the member's folder that points at another member's file is followed.
    link = charlie.outputs / "link.png"
    link.symlink_to(mine)
    assert not file_route_allowed(f"/gradio_api/file={link}", charlie)


def _scope(headers: dict[str, str], **extra) -> dict:
    return {"type": "http", "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()], **extra}


def test_identity_headers_and_platform_cookies_never_reach_the_workspace() -> None:
    scope = _scope(
        {
            "Host": "atelier.example",
            "X-Atelier-Workspace-Secret": "forged",
            "X-Atelier-User": "charlie",
            "X-Forwarded-Host": "evil.example",
            "X-Forwarded-For": "10.0.0.1",
            "Forwarded": "for=10.0.0.1",
            "X-Real-IP": "10.0.0.1",
            "X-Remote-User": "admin",
            "Authorization": "Bearer atl_x",
            "Cookie": f"{settings.SESSION_COOKIE_NAME}=abc; {settings.CSRF_COOKIE_NAME}=def; theme=dark",
            "Accept": "text/html",
        },
        client=("203.0.113.5", 1234),
        scheme="http",
    )
    headers = upstream_headers(scope, SECRET)
    names = [name.lower() for name, _ in headers]
    assert dict(headers)["x-atelier-workspace-secret"] == SECRET
    assert names.count("x-atelier-workspace-secret") == 1
    for stripped in ("x-atelier-user", "x-forwarded-host", "forwarded", "x-real-ip", "x-remote-user", "authorization"):
        assert stripped not in names
    assert dict(headers)["cookie"] == "theme=dark"
    assert dict(headers)["x-forwarded-for"] == "203.0.113.5"
    assert dict(headers)["host"] == "atelier.example"
    assert dict(headers)["accept"] == "text/html"


def test_cross_site_origins_are_told_apart(settings) -> None:
    settings.ALLOWED_HOSTS = ["atelier.example"]
    assert same_origin(_scope({"Host": "atelier.example"}))
    assert same_origin(_scope({"Host": "atelier.example", "Origin": "https://atelier.example"}, scheme="https"))
    assert same_origin(_scope({"Host": "atelier.example", "Origin": "http://atelier.example"}, scheme="http"))
    assert not same_origin(_scope({"Host": "atelier.example", "Origin": "https://evil.example"}, scheme="https"))
    assert not same_origin(_scope({"Host": "atelier.example", "Origin": "null"}))
    # The scheme is part of the origin: a page on plain http is another site for an https one.
    assert not same_origin(_scope({"Host": "atelier.example", "Origin": "http://atelier.example"}, scheme="https"))
    assert not same_origin(_scope({"Host": "atelier.example", "Origin": "https://atelier.example"}, scheme="http"))
    # And so is the port.
    assert not same_origin(_scope({"Host": "atelier.example:8000", "Origin": "http://atelier.example:9999"}, scheme="http"))


def test_only_allowed_hosts_reach_the_workspace(settings) -> None:
    from frontend.origins import host_allowed

    settings.ALLOWED_HOSTS = ["atelier.example", "127.0.0.1"]
    assert host_allowed(_scope({"Host": "atelier.example"}))
    assert host_allowed(_scope({"Host": "127.0.0.1:8000"}))
    for forged in ("evil.example", "atelier.example.evil.example", "atelier.example@evil.example", ""):
        assert not host_allowed(_scope({"Host": forged})), forged
    assert not host_allowed(_scope({}))
    # A websocket scope is checked the same way.
    assert not host_allowed({"type": "websocket", "headers": [(b"host", b"evil.example")]})


def test_internal_headers_never_go_back_to_the_browser() -> None:
    import httpx

    from frontend.proxy import _response_headers

    upstream = httpx.Response(
        206,
        headers=[
            ("X-Atelier-Workspace-Secret", SECRET), ("x-forwarded-for", "127.0.0.1"), ("server", "uvicorn"),
            ("content-type", "image/png"), ("access-control-allow-origin", "*"), ("content-security-policy", "none"),
        ],
    )
    headers = dict(_response_headers(upstream))
    assert b"x-atelier-workspace-secret" not in headers and SECRET.encode() not in b"".join(headers.values())
    assert b"x-forwarded-for" not in headers and b"server" not in headers and b"access-control-allow-origin" not in headers
    assert headers[b"content-type"] == b"image/png"
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert b"frame-ancestors 'self'" in headers[b"content-security-policy"]


def _call(app, scope: dict) -> list[dict]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


async def _inner(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"gradio"})


@pytest.mark.parametrize(
    "headers",
    [{}, {"x-atelier-workspace-secret": ""}, {"x-atelier-workspace-secret": "t" * 43},
     {"x-atelier-workspace-secret": SECRET[:-1]}],
)
def test_the_guard_refuses_requests_without_the_secret(headers) -> None:
    guard = SecretGuard(_inner, secret=SECRET)
    for path in ("/ui/", "/ui/config", HEALTH_PATH):
        sent = _call(guard, _scope(headers, path=path))
        assert sent[0]["status"] == 403


def test_the_guard_refuses_a_repeated_secret_header() -> None:
    guard = SecretGuard(_inner, secret=SECRET)
    scope = {"type": "http", "path": "/ui/", "headers": [(b"x-atelier-workspace-secret", SECRET.encode())] * 2}
    assert _call(guard, scope)[0]["status"] == 403


def test_the_guard_lets_the_secret_through_but_not_to_blocked_routes() -> None:
    guard = SecretGuard(_inner, secret=SECRET)
    ok = _call(guard, _scope({"x-atelier-workspace-secret": SECRET}, path="/ui/config"))
    assert ok[0]["status"] == 200 and ok[1]["body"] == b"gradio"
    assert _call(guard, _scope({"x-atelier-workspace-secret": SECRET}, path=HEALTH_PATH))[0]["status"] == 200
    for path in ("/ui/gradio_api/proxy=http://x/", "/ui/gradio_api/component_server", "/ui//monitoring"):
        assert _call(guard, _scope({"x-atelier-workspace-secret": SECRET}, path=path))[0]["status"] == 404


def test_the_guard_refuses_websockets_without_the_secret() -> None:
    guard = SecretGuard(_inner, secret=SECRET)
    sent = _call(guard, {"type": "websocket", "path": "/ui/x", "headers": []})
    assert sent == [{"type": "websocket.close", "code": 1008}]


def test_a_short_secret_is_refused_at_start() -> None:
    with pytest.raises(ValueError):
        SecretGuard(_inner, secret="short")


def test_the_shared_upstream_pool_never_keeps_a_cookie() -> None:
    """One pool reaches every member's process, all on 127.0.0.1 (cookies ignore ports)."""
    import httpx

    from frontend.sessions.manager import WorkspaceManager

    async def check() -> list:
        manager = WorkspaceManager.from_settings()
        client = manager.client
        set_by_alice = httpx.Response(
            200, headers={"set-cookie": "gradio=alice-token; Path=/"},
            request=httpx.Request("GET", "http://127.0.0.1:40001/ui/"),
        )
        client.cookies.extract_cookies(set_by_alice)
        to_charlie = client.build_request("GET", "http://127.0.0.1:40002/ui/")
        await client.aclose()
        return [list(client.cookies.jar), to_charlie.headers.get("cookie")]

    assert asyncio.run(check()) == [[], None]
