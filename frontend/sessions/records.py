"""Mirror the session manager's state into `WorkspaceSession` rows, off the request path.

The manager puts snapshots; one writer task coalesces them per member and writes them in a
thread of their own (never the thread the async ORM shares), so a slow or locked database never
delays a proxied request. That thread is a daemon: a write waiting on a database that is down
(a pool checkout waits up to 30 s) never holds the web process's exit, and what it would have
written is redone at the next start (`reset`: an earlier process's sessions are marked stopped).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from django.db import close_old_connections

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    user_id: int
    status: str
    pid: int | None
    port: int | None
    started_at: float | None
    ready_at: float | None
    last_seen_at: float | None
    restarts: int
    stop_reason: str


def _aware(timestamp: float | None) -> datetime.datetime | None:
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC) if timestamp else None


def write_snapshots(snapshots: list[Snapshot], *, reset: bool = False) -> None:
    from frontend.models import WorkspaceSession

    close_old_connections()
    try:
        if reset:
            # Processes of an earlier web process exited with it (their stdin closed).
            WorkspaceSession.objects.filter(status__in=["starting", "running"]).update(
                status="stopped", stop_reason="web process restarted", stopped_at=datetime.datetime.now(datetime.UTC)
            )
        for snapshot in snapshots:
            fields = asdict(snapshot)
            user_id = fields.pop("user_id")
            for name in ("started_at", "ready_at", "last_seen_at"):
                fields[name] = _aware(fields[name])
            live = snapshot.status in ("starting", "running")
            fields["stopped_at"] = None if live else datetime.datetime.now(datetime.UTC)
            WorkspaceSession.objects.update_or_create(user_id=user_id, defaults=fields)
    finally:
        close_old_connections()


async def in_daemon_thread(call: Callable[[], Any]) -> Any:
    """`call()` run in a daemon thread of its own, awaited: unlike the event loop's executor,
    whose threads the interpreter joins at exit, a call stuck there does not keep the process
    alive after the server stopped."""
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if outcome.done():
            return
        if error is not None:
            outcome.set_exception(error)
        else:
            outcome.set_result(result)

    def run() -> None:
        try:
            result, error = call(), None
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:
            pass  # the loop closed while the call ran: nobody awaits it any more

    threading.Thread(target=run, name="workspace-records", daemon=True).start()
    return await outcome


class SessionRecords:
    def __init__(self) -> None:
        self._pending: dict[int, Snapshot] = {}
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._reset = False

    def start(self, *, reset: bool) -> None:
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._reset = reset
            self._task = asyncio.get_running_loop().create_task(self._run(), name="workspace-records")
            if reset:
                self._wakeup.set()

    def put(self, snapshot: Snapshot) -> None:
        self._pending[snapshot.user_id] = snapshot
        if self._wakeup is not None:
            self._wakeup.set()

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._pending = list(self._pending.values()), {}
            reset, self._reset = self._reset, False
            try:
                await in_daemon_thread(lambda: write_snapshots(batch, reset=reset))
            except Exception:
                logger.exception("could not record workspace sessions")
