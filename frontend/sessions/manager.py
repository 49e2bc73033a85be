"""The session manager: one Gradio workspace process per member, on demand.

Owned by the ASGI application (`config/asgi.py`), which routes `/ui/…` to the proxy that calls
it; everything here runs on the web process's event loop. What it does:

* `workspace_for(user)` returns the member's `Workspace`, starting a process if there is none
  (taking a warm spare if one is ready), restarting it if it crashed, and making room under
  ATELIER_WORKSPACE_MAX_SESSIONS by stopping the session idle the longest (never one that is
  serving a request). While a process boots its status is `starting`; `wait_ready` waits for it.
* It starts when the web server starts serving (`prewarm`, from `config/asgi.py`), so the
  first spare boots then rather than at the first `/ui/` request.
* A monitor task (once a second) notices processes that died (`crashed`: the next request
  restarts them), stops sessions idle for ATELIER_WORKSPACE_IDLE_SECONDS, and keeps
  ATELIER_WORKSPACE_SPARES pre-imported spare processes ready.
* Every state change is mirrored to the `WorkspaceSession` row (admin) by `SessionRecords`,
  off the request path.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import http.cookiejar
import importlib.util
import logging
import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from django.conf import settings

from frontend.sessions.process import WorkspaceProcess, spawn_workspace_process
from frontend.sessions.records import SessionRecords, Snapshot
from frontend.workspace.guard import HEALTH_PATH, SECRET_HEADER

logger = logging.getLogger(__name__)

STARTING, RUNNING, STOPPED, CRASHED = "starting", "running", "stopped", "crashed"
MONITOR_INTERVAL_SECONDS = 1.0
STOP_GRACE_SECONDS = 5.0
LAST_SEEN_WRITE_SECONDS = 10.0


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie, request) -> bool:
        return False

    def return_ok(self, cookie, request) -> bool:
        return False


class CapacityFull(Exception):
    """Every workspace slot is serving a request; none can be reaped."""


@dataclass(frozen=True)
class ManagerConfig:
    idle_seconds: float
    max_sessions: int
    spares: int
    start_timeout_seconds: float
    log_dir: Path

    @classmethod
    def from_settings(cls) -> ManagerConfig:
        return cls(
            idle_seconds=settings.ATELIER_WORKSPACE_IDLE_SECONDS,
            max_sessions=settings.ATELIER_WORKSPACE_MAX_SESSIONS,
            spares=settings.ATELIER_WORKSPACE_SPARES,
            start_timeout_seconds=settings.ATELIER_WORKSPACE_START_TIMEOUT_SECONDS,
            log_dir=settings.DATA_DIR / "workspaces" / "logs",
        )


@dataclass
class Workspace:
    """One member's workspace: the live process (if any) and what the proxy needs to reach it."""

    user_id: int
    username: str
    status: str = STOPPED
    process: WorkspaceProcess | None = None
    secret: str = ""
    started_at: float = 0.0
    ready_at: float = 0.0
    last_seen: float = field(default_factory=time.monotonic)
    restarts: int = 0
    failed_starts: int = 0
    retry_at: float = 0.0
    in_flight: int = 0
    stop_reason: str = ""
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    generation: int = 0

    @property
    def port(self) -> int | None:
        return self.process.port if self.process else None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def live(self) -> bool:
        return self.status in (STARTING, RUNNING) and self.process is not None and self.process.alive()

    @contextlib.contextmanager
    def activity(self, *, counts: bool = True) -> Iterator[None]:
        """Mark a request in flight (heartbeats pass counts=False: an open tab is not activity)."""
        if not counts:
            yield
            return
        self.last_seen = time.monotonic()
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self.last_seen = time.monotonic()


class WorkspaceManager:
    def __init__(self, config: ManagerConfig) -> None:
        self.config = config
        self._sessions: dict[int, Workspace] = {}
        self._spares: list[WorkspaceProcess] = []
        self._stopping: set[WorkspaceProcess] = set()
        self._lock: asyncio.Lock | None = None
        self._client: httpx.AsyncClient | None = None
        self._monitor: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._last_seen_written: dict[int, float] = {}
        self._spare_failures = 0
        self._spares_retry_at = 0.0
        self.records = SessionRecords()
        atexit.register(self.shutdown)

    @classmethod
    def from_settings(cls) -> WorkspaceManager:
        return cls(ManagerConfig.from_settings())

    # --- the proxy's entry points ------------------------------------------------------
    @property
    def client(self) -> httpx.AsyncClient:
        """The connection pool to every workspace process (one per manager, on its event loop)."""
        if self._client is None:
            _skip_sniffio_lookups()
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(connect=5.0, read=None, write=60.0, pool=10.0),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=200, keepalive_expiry=30.0),
                follow_redirects=False,
                trust_env=False,
            )
            # One pool serves every member: it must never remember a cookie from one member's
            # process and send it to another's (cookies ignore ports: all are 127.0.0.1).
            self._client.cookies.jar.set_policy(_NoCookies())
        return self._client

    def prewarm(self) -> None:
        """Start the monitor and boot the spares now, if not started yet. The web server calls it
        when it starts serving (`config/asgi.py` `server_started`), and the proxy on any /ui/
        request (for a server that did not: a spare then boots while the member signs in)."""
        self._ensure_started()

    def session_of(self, user_id: int) -> Workspace | None:
        return self._sessions.get(user_id)

    async def workspace_for(self, *, user_id: int, username: str) -> Workspace:
        """The member's workspace, started (or restarted) if it is not live. Never waits for boot."""
        self._ensure_started()
        workspace = self._sessions.get(user_id)
        if workspace is not None and workspace.live():
            workspace.last_seen = time.monotonic()
            return workspace
        assert self._lock is not None
        async with self._lock:
            workspace = self._sessions.get(user_id)
            if workspace is None:
                workspace = self._sessions[user_id] = Workspace(user_id=user_id, username=username)
            if workspace.live():
                return workspace
            if workspace.status == STARTING:
                self._start_failed(workspace, "exited while starting")
            elif workspace.status == RUNNING:
                self._mark_crashed(workspace, "process exited")
            if workspace.status == CRASHED and time.monotonic() < workspace.retry_at:
                return workspace  # backing off after failed starts
            self._make_room(for_user=user_id)
            if workspace.status == CRASHED:
                workspace.restarts += 1
            self._start(workspace)
            return workspace

    async def wait_ready(self, workspace: Workspace, timeout: float | None = None) -> bool:
        if workspace.status == RUNNING:
            return True
        if workspace.status != STARTING:
            return False
        try:
            await asyncio.wait_for(workspace.ready.wait(), timeout or self.config.start_timeout_seconds)
        except TimeoutError:
            return False
        return workspace.status == RUNNING

    async def connection_failed(self, workspace: Workspace) -> None:
        """The proxy lost its connection to the process: if the process is dying, record the crash
        now (a killed process resets its connections a moment before it can be reaped)."""
        process = workspace.process
        if process is None or workspace.status not in (STARTING, RUNNING):
            return
        deadline = time.monotonic() + 1.0
        while process.alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if not process.alive() and workspace.process is process and workspace.status in (STARTING, RUNNING):
            self._mark_crashed(workspace, f"process exited with {process.process.returncode}")

    def sessions(self) -> list[Workspace]:
        return list(self._sessions.values())

    # --- starting -----------------------------------------------------------------------
    def _ensure_started(self) -> None:
        if self._monitor is None or self._monitor.done():
            self._lock = self._lock or asyncio.Lock()
            self.records.start(reset=self._monitor is None)
            self._monitor = asyncio.get_running_loop().create_task(self._monitor_loop(), name="workspace-monitor")
            self._replenish_spares()

    def _take_process(self) -> WorkspaceProcess:
        while self._spares:
            spare = self._spares.pop(0)
            if spare.alive():
                return spare
            spare.close_stdin()
        return spawn_workspace_process(log_dir=self.config.log_dir)

    def _start(self, workspace: Workspace) -> None:
        for _ in range(3):
            process = self._take_process()
            secret = secrets.token_urlsafe(32)
            if process.assign(user_id=workspace.user_id, secret=secret, log_path=self.config.log_dir / f"{workspace.username}.log"):
                break
            process.kill()
        else:
            raise RuntimeError("could not start a workspace process")
        now = time.monotonic()
        workspace.process, workspace.secret = process, secret
        workspace.status, workspace.stop_reason = STARTING, ""
        workspace.started_at, workspace.ready_at, workspace.last_seen = now, 0.0, now
        workspace.ready = asyncio.Event()
        workspace.generation += 1
        logger.info("workspace of %s starting (pid %s, port %s)", workspace.username, process.pid, process.port)
        self._record(workspace)
        self._spawn_task(self._watch_start(workspace, workspace.generation))
        self._replenish_spares()

    async def _watch_start(self, workspace: Workspace, generation: int) -> None:
        """Probe the process's health route until it answers, dies, or runs out of time."""
        process = workspace.process
        assert process is not None
        deadline = workspace.started_at + self.config.start_timeout_seconds
        url = f"http://127.0.0.1:{process.port}{HEALTH_PATH}"
        while workspace.generation == generation and workspace.status == STARTING:
            if not process.alive():
                self._start_failed(workspace, "exited while starting")
                return
            if time.monotonic() > deadline:
                self._stop_process(process)
                self._start_failed(workspace, "did not answer in time")
                return
            try:
                response = await self.client.get(url, headers={SECRET_HEADER: workspace.secret}, timeout=1.0)
            except httpx.TransportError:
                await asyncio.sleep(0.05)
                continue
            if response.status_code == 200 and workspace.generation == generation:
                workspace.status, workspace.ready_at = RUNNING, time.monotonic()
                workspace.failed_starts = 0
                self._spare_failures = 0
                workspace.ready.set()
                logger.info(
                    "workspace of %s running after %.2fs", workspace.username, workspace.ready_at - workspace.started_at
                )
                self._record(workspace)
                return
            await asyncio.sleep(0.05)

    def _start_failed(self, workspace: Workspace, reason: str) -> None:
        workspace.failed_starts += 1
        workspace.retry_at = time.monotonic() + min(2 ** (workspace.failed_starts - 1), 30)
        self._mark_crashed(workspace, reason)

    def _mark_crashed(self, workspace: Workspace, reason: str) -> None:
        logger.warning("workspace of %s crashed: %s (pid %s)", workspace.username, reason, workspace.pid)
        workspace.status, workspace.stop_reason = CRASHED, reason
        workspace.ready.set()  # wake the waiters: they see it is not running
        if workspace.process is not None:
            workspace.process.close_stdin()
            workspace.process.process.poll()
        self._record(workspace)

    # --- stopping -----------------------------------------------------------------------
    def stop(self, workspace: Workspace, reason: str) -> None:
        if workspace.process is not None:
            self._stop_process(workspace.process)
        logger.info("workspace of %s stopped: %s", workspace.username, reason)
        workspace.status, workspace.stop_reason = STOPPED, reason
        workspace.generation += 1
        workspace.ready.set()
        self._record(workspace)

    def _stop_process(self, process: WorkspaceProcess) -> None:
        process.terminate()
        self._stopping.add(process)
        self._spawn_task(self._finish_stop(process))

    async def _finish_stop(self, process: WorkspaceProcess) -> None:
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while process.alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        process.kill()
        process.process.poll()
        self._stopping.discard(process)

    def _make_room(self, *, for_user: int) -> None:
        live = [w for w in self._sessions.values() if w.user_id != for_user and w.live()]
        while len(live) >= self.config.max_sessions:
            idle = [w for w in live if w.in_flight == 0]
            if not idle:
                raise CapacityFull()
            victim = min(idle, key=lambda w: w.last_seen)
            self.stop(victim, "reaped to make room")
            live.remove(victim)

    def shutdown(self) -> None:
        """Stop every process now (at interpreter exit; they would also exit when stdin closes)."""
        processes = [w.process for w in self._sessions.values() if w.process] + self._spares + list(self._stopping)
        for process in processes:
            process.terminate()
        deadline = time.monotonic() + 3
        for process in processes:
            while process.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            process.kill()

    # --- the monitor --------------------------------------------------------------------
    async def _monitor_loop(self) -> None:
        while True:
            await asyncio.sleep(MONITOR_INTERVAL_SECONDS)
            try:
                self._check()
            except Exception:  # the monitor must outlive any one bad check
                logger.exception("workspace monitor check failed")

    def _check(self) -> None:
        now = time.monotonic()
        for workspace in list(self._sessions.values()):
            # (A start is watched by _watch_start, which also counts failed starts for the backoff.)
            if workspace.status == RUNNING and workspace.process and not workspace.process.alive():
                self._mark_crashed(workspace, f"process exited with {workspace.process.process.returncode}")
            elif (
                workspace.status == RUNNING
                and workspace.in_flight == 0
                and now - workspace.last_seen > self.config.idle_seconds
            ):
                self.stop(workspace, f"idle for {self.config.idle_seconds:g}s")
            elif workspace.status == RUNNING and workspace.last_seen > self._last_seen_written.get(workspace.user_id, 0):
                if now - self._last_seen_written.get(workspace.user_id, 0) > LAST_SEEN_WRITE_SECONDS:
                    self._record(workspace)
        self._replenish_spares()

    def _replenish_spares(self) -> None:
        """Keep the configured number of spares, but never boot one beside a member's start:
        on two cores that would slow the start the member is waiting for."""
        for spare in [s for s in self._spares if not s.alive()]:
            logger.warning(
                "spare workspace process %s exited with %s (see %s)", spare.pid, spare.process.returncode, spare.log_path
            )
            spare.close_stdin()
            self._spares.remove(spare)
            # A spare that dies unassigned cannot even import the workspace: back off, don't spin.
            self._spare_failures += 1
            self._spares_retry_at = time.monotonic() + min(2**self._spare_failures, 300)
        if any(w.status == STARTING for w in self._sessions.values()) or time.monotonic() < self._spares_retry_at:
            return
        while len(self._spares) < self.config.spares:
            self._spares.append(spawn_workspace_process(log_dir=self.config.log_dir))

    def _spawn_task(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the admin's mirror -------------------------------------------------------------
    def _record(self, workspace: Workspace) -> None:
        self._last_seen_written[workspace.user_id] = time.monotonic()
        self.records.put(
            Snapshot(
                user_id=workspace.user_id,
                status=workspace.status,
                pid=workspace.pid,
                port=workspace.port,
                started_at=_wall(workspace.started_at),
                ready_at=_wall(workspace.ready_at),
                last_seen_at=_wall(workspace.last_seen),
                restarts=workspace.restarts,
                stop_reason=workspace.stop_reason,
            )
        )


def _skip_sniffio_lookups() -> None:
    """httpcore runs `import sniffio` four times per request; anyio 4 no longer installs it, and
    each failed import searches sys.path (~80 µs here). Recording the absence makes it ~1 µs."""
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


def _wall(monotonic_time: float) -> float | None:
    """A monotonic timestamp as a Unix time (None for 'never')."""
    if not monotonic_time:
        return None
    return time.time() - (time.monotonic() - monotonic_time)
