"""Each member's Gradio workspace behind /ui/: the real platform (daphne), the real session
manager and real workspace processes, over loopback. Abuse first: anonymous callers, callers
without the secret, another member's files, traversal, oversized uploads; then the lifecycle:
crash and restart, the cap on sessions, idle reaping."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.harness import REPO, Platform, free_port, running_platform

pytestmark = pytest.mark.e2e

UPLOAD_LIMIT = 300_000
SECRET_HEADER = "X-Atelier-Workspace-Secret"


@pytest.fixture(scope="module")
def platform(request) -> Iterator[Platform]:
    env = {
        "ATELIER_WORKSPACE_MAX_SESSIONS": "2",
        "ATELIER_WORKSPACE_SPARES": "1",
        "ATELIER_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
    }
    failed_before = request.session.testsfailed
    with running_platform(workers=0, env_overrides=env) as platform:
        yield platform
        if request.session.testsfailed > failed_before:
            print(platform.logs())


# --- helpers ----------------------------------------------------------------------------
def login(platform: Platform, username: str) -> httpx.Client:
    client = httpx.Client(base_url=platform.base_url, timeout=60)
    page = client.get("/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    response = client.post(
        "/login/",
        data={"username": username, "password": platform.credentials[username]["password"], "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 302, response.text
    return client


def sessions(platform: Platform) -> dict[str, dict]:
    return json.loads(platform.manage("workspaces", "--json"))


def wait_running(client: httpx.Client, timeout: float = 90) -> None:
    def running() -> bool:
        return client.get("/ui/_atelier/status").json()["status"] == "running"

    Platform.wait_until(running, timeout=timeout, what="the workspace to run", interval=0.1)


def wait_recorded(platform: Platform, username: str, predicate, what: str, timeout: float = 30) -> dict:
    def check():
        session = sessions(platform).get(username)
        return session if session and predicate(session) else None

    return Platform.wait_until(check, timeout=timeout, what=what, interval=0.5)


def open_workspace(platform: Platform, username: str) -> tuple[httpx.Client, dict]:
    client = login(platform, username)
    client.get("/ui/")
    wait_running(client)
    session = wait_recorded(platform, username, lambda s: s["status"] == "running", f"{username}'s session row")
    return client, session


def raw_get(platform: Platform, client: httpx.Client, path: str) -> tuple[int, bytes]:
    """GET a path byte for byte (httpx would normalise `..` and percent-escapes away)."""
    host, port = platform.base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    connection.putrequest("GET", path, skip_accept_encoding=True)
    connection.putheader("Cookie", cookie)
    connection.endheaders()
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: the manager reaps its children.
    state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] if Path(f"/proc/{pid}").exists() else "X"
    return state not in ("Z", "X")


def spare_processes_of(parent_pid: int) -> list[int]:
    """The pids of `parent_pid`'s children that are spare workspace processes."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent_pid and b"--spare" in command:
            found.append(int(entry.name))
    return found


# --- the first spare --------------------------------------------------------------------
def test_the_web_process_boots_a_spare_as_it_starts(platform: Platform) -> None:
    """Not at the first /ui/ request: this test runs first on its platform, before any request
    under /ui/ (the harness's start makes none)."""
    web_pid = platform.processes["web"].pid
    Platform.wait_until(lambda: spare_processes_of(web_pid), timeout=30, what="the web process's first spare")
    assert not sessions(platform)  # nobody has opened a workspace


# --- who gets in ------------------------------------------------------------------------
def test_anonymous_ui_redirects_to_login_and_anonymous_websocket_is_closed(platform: Platform) -> None:
    for path in ("/ui/", "/ui/config", "/ui/gradio_api/info"):
        response = httpx.get(platform.base_url + path)
        assert response.status_code == 302
        assert response.headers["location"] == f"/login/?next={path}"
    assert httpx.get(platform.base_url + "/ui").headers["location"] == "/ui/"
    ws_url = platform.base_url.replace("http://", "ws://") + "/ui/gradio_api/queue/join"
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url, open_timeout=10).close()
    assert refused.value.response.status_code == 403
    # Nothing was started for nobody.
    assert sessions(platform) == {}


def test_first_visit_shows_the_starting_page_then_the_workspace(platform: Platform) -> None:
    alice = login(platform, "alice")
    first = alice.get("/ui/")
    assert first.status_code == 503
    assert 'data-workspace-state="starting"' in first.text
    assert "Starting your workspace" in first.text
    wait_running(alice)
    page = alice.get("/ui/")
    assert page.status_code == 200
    assert "gradio" in page.text.lower()
    config = alice.get("/ui/config")
    assert config.status_code == 200
    assert config.json()["root"] == platform.base_url + "/ui"
    assert alice.get("/ui/gradio_api/info").status_code == 200


def test_each_member_gets_a_process_of_their_own(platform: Platform) -> None:
    _, alice = open_workspace(platform, "alice")
    _, charlie = open_workspace(platform, "charlie")
    assert alice["pid"] != charlie["pid"] and alice["port"] != charlie["port"]
    for session in (alice, charlie):
        assert pid_alive(session["pid"])
        cmdline = Path(f"/proc/{session['pid']}/cmdline").read_bytes().split(b"\0")
        assert b"frontend.workspace.server" in cmdline


def test_the_gradio_port_refuses_requests_without_the_secret(platform: Platform) -> None:
    _, alice = open_workspace(platform, "alice")
    direct = f"http://127.0.0.1:{alice['port']}"
    for headers in ({}, {SECRET_HEADER: ""}, {SECRET_HEADER: "x" * 43}):
        for path in ("/ui/", "/ui/config", "/ui/gradio_api/info", "/_atelier/health"):
            assert httpx.get(direct + path, headers=headers).status_code == 403, (path, headers)
        upload = httpx.post(direct + "/ui/gradio_api/upload", headers=headers, files={"files": ("a.png", b"x")})
        assert upload.status_code == 403
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{alice['port']}/ui/gradio_api/queue/join", open_timeout=10).close()
    assert refused.value.response.status_code == 403


def test_client_supplied_secret_and_identity_headers_do_not_reach_the_workspace(platform: Platform) -> None:
    alice, _ = open_workspace(platform, "alice")
    forged = {SECRET_HEADER: "forged", "X-Forwarded-Host": "evil.example", "X-Atelier-User": "charlie"}
    response = alice.get("/ui/config", headers=forged)
    assert response.status_code == 200  # the proxy replaced the secret with the real one
    assert response.json()["root"] == platform.base_url + "/ui"  # X-Forwarded-Host was dropped


# --- files --------------------------------------------------------------------------------
def test_members_fetch_their_own_files_and_nobody_else_s(platform: Platform) -> None:
    alice, _ = open_workspace(platform, "alice")
    charlie, _ = open_workspace(platform, "charlie")
    alice_outputs = (platform.data_dir / "users" / "alice" / "outputs").resolve()
    secret_file = alice_outputs / "private-render.png"
    secret_file.write_bytes(b"\x89PNG alice's render")
    charlie_outputs = (platform.data_dir / "users" / "charlie" / "outputs").resolve()
    (charlie_outputs / "mine.png").write_bytes(b"\x89PNG charlie's")

    own = alice.get(f"/ui/gradio_api/file={secret_file}")
    assert own.status_code == 200 and own.content == secret_file.read_bytes()
    assert charlie.get(f"/ui/gradio_api/file={charlie_outputs / 'mine.png'}").status_code == 200

    attempts = [
        f"/ui/gradio_api/file={secret_file}",
        f"/ui/gradio_api/file={charlie_outputs}/../../alice/outputs/private-render.png",
        f"/ui/gradio_api/file={charlie_outputs}/%2e%2e/%2e%2e/alice/outputs/private-render.png",
        f"/ui/gradio_api/file={charlie_outputs}/%2E%2E%2F%2E%2E%2Falice/outputs/private-render.png",
        f"/ui/gradio_api/file={charlie_outputs}/%252e%252e/%252e%252e/alice/outputs/private-render.png",
        f"/ui/gradio_api/file={charlie_outputs}/..%5c..%5calice/outputs/private-render.png",
        "/ui/gradio_api/file=../../alice/outputs/private-render.png",
        "/ui/gradio_api/file=/etc/passwd",
        "/ui/gradio_api/file=%2fetc%2fpasswd",
        f"/ui/gradio_api/file={platform.data_dir.resolve()}/db.sqlite3",
        f"/ui/gradio_api/file={platform.data_dir.resolve()}/secret_key",
        f"/ui/gradio_api/file/{secret_file}",
        f"/ui/gradio_api/file/..{secret_file}",
        "/ui/gradio_api/file=http://127.0.0.1:1/",
        "/ui/gradio_api/proxy=http://169.254.169.254/latest/meta-data/",
        "/ui/../admin/",
        "/ui/%2e%2e/admin/",
        "/ui//gradio_api//proxy=http://127.0.0.1:1/",
        "/ui/monitoring",
        "/ui/gradio_api/dev/reload",
        "/ui/gradio_api/mcp/sse",
    ]
    for path in attempts:
        status, body = raw_get(platform, charlie, path)
        assert status == 404, (path, status, body[:200])
        assert b"alice's render" not in body
    # Alice herself cannot leave her folders either.
    for path in ("/ui/gradio_api/file=/etc/passwd", f"/ui/gradio_api/file={alice_outputs}/../../charlie/outputs/mine.png"):
        assert raw_get(platform, alice, path)[0] == 404


def test_uploads_are_capped_with_a_message(platform: Platform) -> None:
    alice, _ = open_workspace(platform, "alice")
    small = alice.post("/ui/gradio_api/upload", files={"files": ("small.png", b"\x89PNG" + b"0" * 1000, "image/png")})
    assert small.status_code == 200, small.text
    [stored] = small.json()
    temp = (platform.data_dir / "users" / "alice" / ".workspace" / "tmp").resolve()
    assert Path(stored).resolve().is_relative_to(temp)
    assert alice.get(f"/ui/gradio_api/file={stored}").content.endswith(b"0" * 1000)

    big = b"\x89PNG" + b"0" * (UPLOAD_LIMIT + 100_000)
    declared = alice.post("/ui/gradio_api/upload", files={"files": ("big.png", big, "image/png")})
    assert declared.status_code == 413
    assert "too large" in declared.text and str(UPLOAD_LIMIT) in declared.text

    def chunks():  # no Content-Length: the cap is enforced while streaming
        for _ in range(40):
            yield b"0" * 10_000

    streamed = alice.post("/ui/gradio_api/upload", content=chunks(), headers={"content-type": "application/octet-stream"})
    assert streamed.status_code == 413
    assert "too large" in streamed.text


def test_cross_site_posts_are_refused(platform: Platform) -> None:
    alice, _ = open_workspace(platform, "alice")
    response = alice.post(
        "/ui/gradio_api/queue/join", json={"data": [], "fn_index": 0, "session_hash": "x"},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403


def test_server_sent_events_stream_through_the_proxy(platform: Platform) -> None:
    alice, _ = open_workspace(platform, "alice")
    started = time.monotonic()
    with alice.stream("GET", "/ui/gradio_api/heartbeat/e2e-session") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        first = next(response.iter_lines())
        assert first == "data: ALIVE"
    # The first event arrived while the stream was still open (a buffered proxy would hang).
    assert time.monotonic() - started < 30


# --- lifecycle ----------------------------------------------------------------------------
def test_a_crashed_workspace_restarts_on_the_next_request(platform: Platform) -> None:
    alice, before = open_workspace(platform, "alice")
    os.kill(before["pid"], signal.SIGKILL)  # no waiting: the next request may race the dying process
    # An API request waits for the new process instead of failing.
    assert alice.get("/ui/gradio_api/info").status_code == 200
    after = wait_recorded(platform, "alice", lambda s: s["status"] == "running" and s["pid"] != before["pid"], "restart")
    assert after["restarts"] == before["restarts"] + 1
    assert pid_alive(after["pid"])


def test_the_cap_stops_the_session_idle_longest(platform: Platform) -> None:
    alice, _ = open_workspace(platform, "alice")
    charlie, charlie_before = open_workspace(platform, "charlie")
    alice.get("/ui/gradio_api/info")  # alice was active more recently than charlie
    time.sleep(0.2)
    _, bob = open_workspace(platform, "bob")  # the cap is 2
    charlie_after = wait_recorded(platform, "charlie", lambda s: s["status"] == "stopped", "charlie to be reaped")
    assert charlie_after["stop_reason"] == "reaped to make room"
    Platform.wait_until(lambda: not pid_alive(charlie_before["pid"]), timeout=15, what="charlie's process to exit")
    live = {name for name, s in sessions(platform).items() if s["status"] in ("starting", "running")}
    assert live == {"alice", "bob"}
    assert pid_alive(bob["pid"])
    # Coming back starts charlie again (and reaps the idlest of the others): not a crash.
    wait_running(charlie)
    assert sessions(platform)["charlie"]["restarts"] == charlie_before["restarts"]


def test_operators_see_sessions_in_admin_read_only(platform: Platform) -> None:
    open_workspace(platform, "alice")
    admin = login(platform, "admin")
    listing = admin.get("/admin/frontend/workspacesession/")
    assert listing.status_code == 200
    assert "alice" in listing.text and "running" in listing.text.lower()
    assert admin.get("/admin/frontend/workspacesession/add/").status_code == 403


def test_a_secret_from_before_a_restart_is_refused(platform: Platform) -> None:
    """The process entry point from the environment: its secret is its start's own."""
    user_id = open_workspace(platform, "alice")[1]["user_id"]
    port = free_port()
    old_secret, new_secret = "a" * 43, "b" * 43

    def start(secret: str) -> subprocess.Popen:
        env = platform.env() | {
            "ATELIER_WORKSPACE_USER_ID": str(user_id),
            "ATELIER_WORKSPACE_SECRET": secret,
            "ATELIER_WORKSPACE_PORT": str(port),
        }
        process = subprocess.Popen([sys.executable, "-m", "frontend.workspace.server"], cwd=REPO, env=env)

        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/_atelier/health", headers={SECRET_HEADER: secret}).status_code == 200
            except httpx.TransportError:
                assert process.poll() is None, "the workspace process exited"
                return False

        Platform.wait_until(up, timeout=90, what="the workspace process")
        return process

    def status(secret: str | None) -> int:
        headers = {SECRET_HEADER: secret} if secret else {}
        return httpx.get(f"http://127.0.0.1:{port}/ui/gradio_api/info", headers=headers).status_code

    first = start(old_secret)
    try:
        assert status(old_secret) == 200
        assert status(None) == 403 and status(new_secret) == 403
    finally:
        first.terminate()
        first.wait(timeout=30)
    second = start(new_secret)
    try:
        assert status(new_secret) == 200
        assert status(old_secret) == 403  # replayed after the restart
    finally:
        second.terminate()
        second.wait(timeout=30)


# --- a second platform: a short idle timeout, no spares ------------------------------------
@pytest.fixture(scope="module")
def quick_platform(request) -> Iterator[Platform]:
    failed_before = request.session.testsfailed
    env = {"ATELIER_WORKSPACE_IDLE_SECONDS": "3", "ATELIER_WORKSPACE_SPARES": "0"}
    with running_platform(workers=0, env_overrides=env) as platform:
        yield platform
        if request.session.testsfailed > failed_before:
            print(platform.logs())


def test_an_idle_workspace_is_reaped_and_reopens_on_the_next_visit(quick_platform: Platform) -> None:
    platform = quick_platform
    alice, before = open_workspace(platform, "alice")
    stopped = wait_recorded(platform, "alice", lambda s: s["status"] == "stopped", "idle reaping", timeout=60)
    assert stopped["stop_reason"] == "idle for 3s"
    Platform.wait_until(lambda: not pid_alive(before["pid"]), timeout=15, what="the idle process to exit")
    assert alice.get("/ui/").status_code == 503  # the starting page again
    wait_running(alice)
    # (It may be idle-reaped again by the time the row is read: look at which process it was.)
    after = wait_recorded(platform, "alice", lambda s: s["started_at"] != before["started_at"], "the new session")
    assert after["pid"] != before["pid"] and after["restarts"] == before["restarts"]


def test_a_workspace_that_cannot_start_is_shown_as_crashed_and_retried(quick_platform: Platform) -> None:
    platform = quick_platform
    blocker = platform.data_dir / "users" / "bob" / ".workspace"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where the workspace folder goes: the process fails at start")
    bob = login(platform, "bob")
    assert bob.get("/ui/").status_code == 503

    def crashed() -> bool:
        return bob.get("/ui/_atelier/status").json()["status"] == "crashed"

    Platform.wait_until(crashed, timeout=90, what="the failed start", interval=0.1)
    page = bob.get("/ui/")
    assert page.status_code == 503
    assert 'data-workspace-state="crashed"' in page.text or 'data-workspace-state="starting"' in page.text
    assert bob.get("/ui/gradio_api/info").status_code == 503  # no process to answer it

    blocker.unlink()
    wait_running(bob, timeout=120)  # retried after its backoff
    assert bob.get("/ui/gradio_api/info").status_code == 200
    session = wait_recorded(platform, "bob", lambda s: s["restarts"] >= 1, "the restart count")
    assert session["restarts"] >= 1


# --- what a member's workspace may read (issue #13) ---------------------------------------
FILE_CAPABLE = {"image", "imageeditor", "file", "gallery", "json", "video", "audio", "model3d", "uploadbutton"}


def test_a_workspace_input_naming_another_member_s_file_is_refused(platform: Platform) -> None:
    """Every function with a file-capable input, called through the proxy with a FileData naming
    a canary in charlie's outputs, the database or /proc: refused, nothing copied, nothing served."""
    alice, _ = open_workspace(platform, "alice")
    charlie_outputs = (platform.data_dir / "users" / "charlie" / "outputs").resolve()
    charlie_outputs.mkdir(parents=True, exist_ok=True)
    canary = charlie_outputs / "canary.png"
    canary.write_bytes(b"\x89PNG charlie's canary")
    config = alice.get("/ui/config").json()
    types = {component["id"]: component["type"] for component in config["components"]}
    targets = [str(canary), str(platform.data_dir.resolve() / "secret_key"), "/proc/self/environ"]
    database = platform.data_dir.resolve() / "db.sqlite3"
    if database.exists():
        targets.append(str(database))
    checked = 0
    for fn_index, dependency in enumerate(config["dependencies"]):
        inputs = dependency["inputs"]
        positions = [i for i, component_id in enumerate(inputs) if types.get(component_id) in FILE_CAPABLE]
        if not positions:
            continue
        for target in targets:
            data: list = [None] * len(inputs)
            for position in positions:
                data[position] = {"path": target, "meta": {"_type": "gradio.FileData"}, "orig_name": "x.png"}
            response = alice.post(
                "/ui/gradio_api/queue/join",
                json={"data": data, "fn_index": dependency.get("id", fn_index), "session_hash": "attack"},
            )
            assert response.status_code == 403, (fn_index, target, response.status_code, response.text[:300])
            assert target not in response.text
            assert "upload" in response.json()["error"]
        checked += 1
    assert checked >= 3
    alice_dir = platform.data_dir / "users" / "alice"
    copies = [p for p in alice_dir.rglob("*") if p.is_file() and p.read_bytes() == canary.read_bytes()]
    assert copies == []
    assert alice.get(f"/ui/gradio_api/file={canary}").status_code == 404


def test_workspace_responses_carry_no_internal_header_and_the_security_headers(platform: Platform) -> None:
    alice, _ = open_workspace(platform, "alice")
    [stored] = alice.post("/ui/gradio_api/upload", files={"files": ("r.png", b"\x89PNG" + b"1" * 5000, "image/png")}).json()
    # Gradio copies request headers into ranged responses: the secret must not come back.
    ranged = alice.get(f"/ui/gradio_api/file={stored}", headers={"Range": "bytes=0-99"})
    assert ranged.status_code == 206, ranged.status_code
    for response in (ranged, alice.get("/ui/"), alice.get("/ui/config")):
        names = {name.lower() for name in response.headers}
        assert not any(name.startswith("x-atelier") for name in names), names
        assert "x-forwarded-for" not in names and "x-forwarded-proto" not in names
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
        assert "frame-ancestors 'self'" in response.headers["content-security-policy"]


def test_a_forged_host_never_reaches_the_workspace(platform: Platform) -> None:
    alice, _ = open_workspace(platform, "alice")
    forged = alice.get("/ui/config", headers={"Host": "evil.example"})
    assert forged.status_code == 400
    assert "evil.example" not in forged.text
    # An origin on another port (or scheme) of the same host is another site.
    host = platform.base_url.removeprefix("http://").split(":")[0]
    other_port = alice.post(
        "/ui/gradio_api/queue/join", json={"data": [], "fn_index": 0, "session_hash": "x"},
        headers={"Origin": f"http://{host}:1"},
    )
    assert other_port.status_code == 403
    other_scheme = alice.post(
        "/ui/gradio_api/queue/join", json={"data": [], "fn_index": 0, "session_hash": "x"},
        headers={"Origin": platform.base_url.replace("http://", "https://")},
    )
    assert other_scheme.status_code == 403
