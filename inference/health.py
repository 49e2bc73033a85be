"""Is this process able to work? The checks behind `/readyz` and `manage.py probe`.

Three dependencies every process kind needs, each checked with a short deadline in its own
thread (a database that does not answer must not hold the probe past its timeout):

* `database`: one `SELECT 1` on a fresh connection of this thread (on PostgreSQL, one of its own
  beside the pool, so a refused connection is reported as such, not as a pool timeout);
* `broker`: a Redis `PING` (cluster mode), or the embedded file broker's folder writable;
* `storage`: the default storage reachable (a local folder writable, or an S3 `HEAD`).

A failed check says which dependency and a short, fixed-vocabulary reason (`connection
refused`, `timed out after 2.0 s`, the exception's class): the probes are public, so the
exception's own text (host names, ports, user names) goes to the log only.

Liveness of processes that serve no HTTP (workers, the sweeper) is a heartbeat file the process
touches from its own loop (`touch_heartbeat`), under `ATELIER_PROBE_DIR`: a local folder of the
container, never the shared `DATA_DIR`, so one pod's file cannot vouch for another.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    reason: str = ""

    def as_json(self) -> dict[str, object]:
        return {"ok": self.ok, **({"reason": self.reason} if self.reason else {})}


class CheckFailed(Exception):
    """A check's own, already public, reason."""


def _public_reason(exc: BaseException) -> str:
    if isinstance(exc, CheckFailed):
        return str(exc)
    text = str(exc).lower()
    if "refused" in text:
        return "connection refused"
    if "timed out" in text or "timeout" in text:
        return "timed out"
    if "name or service not known" in text or "could not translate host" in text or "resolve" in text:
        return "host name not found"
    if "authentication" in text or "password" in text:
        return "authentication failed"
    return type(exc).__name__


def check_database() -> None:
    from django.db import connections

    connection = connections["default"]
    if connection.settings_dict.get("OPTIONS", {}).get("pool"):
        # A pool's checkout waits out its timeout and says only that; a probe wants the
        # database's own answer, from a connection of its own (closed at once, never pooled).
        params = connection.get_connection_params()  # without the pool's options
        params.setdefault("connect_timeout", max(1, int(settings.ATELIER_READINESS_TIMEOUT_SECONDS)))
        with connection.Database.connect(**params) as direct:
            direct.execute("SELECT 1").fetchone()
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close()  # this thread's own connection: never left open behind a probe


def check_broker() -> None:
    timeout = settings.ATELIER_READINESS_TIMEOUT_SECONDS
    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
        return
    folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise CheckFailed("the broker folder is missing or not writable")


def check_storage() -> None:
    from django.core.files.storage import FileSystemStorage, storages

    storage = storages["default"]
    if isinstance(storage, FileSystemStorage):
        location = Path(storage.location)
        if not location.is_dir() or not os.access(location, os.W_OK):
            raise CheckFailed("the storage folder is missing or not writable")
        return
    storage.exists(".atelier-readyz")  # a HEAD on object storage: raises when unreachable


CHECKS: dict[str, Callable[[], None]] = {"database": check_database, "broker": check_broker, "storage": check_storage}


def run_checks(names: tuple[str, ...] = tuple(CHECKS), *, timeout: float | None = None) -> list[CheckResult]:
    """Run the named checks at once, each in its own thread, all within `timeout` seconds."""
    timeout = settings.ATELIER_READINESS_TIMEOUT_SECONDS if timeout is None else timeout
    outcomes: dict[str, CheckResult] = {}

    def run(name: str) -> None:
        try:
            CHECKS[name]()
            outcomes[name] = CheckResult(name, True)
        except Exception as exc:  # noqa: BLE001 - every failure is a not-ready answer, never a 500
            logger.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
            outcomes[name] = CheckResult(name, False, _public_reason(exc))

    threads = [threading.Thread(target=run, args=(name,), name=f"atelier-check-{name}", daemon=True) for name in names]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [outcomes.get(name) or CheckResult(name, False, f"timed out after {timeout:g} s") for name in names]


# --- heartbeat files: liveness of processes without HTTP ---------------------------------------

def heartbeat_path(kind: str, name: str) -> Path:
    """`<ATELIER_PROBE_DIR>/<kind>-<name>.alive`; `name` is a Celery node name or `sweeper@<host>`."""
    safe = "".join(c if c.isalnum() or c in "@.-_" else "_" for c in name)
    return Path(settings.ATELIER_PROBE_DIR) / f"{kind}-{safe}.alive"


def touch_heartbeat(kind: str, name: str) -> None:
    path = heartbeat_path(kind, name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError:
        logger.exception("could not touch the heartbeat file %s", path)


def heartbeat_age(kind: str, name: str) -> float | None:
    """Seconds since the process last touched its file, or None when it never did."""
    try:
        return time.time() - heartbeat_path(kind, name).stat().st_mtime
    except FileNotFoundError:
        return None


def sweeper_name() -> str:
    return f"sweeper@{socket.gethostname()}"
