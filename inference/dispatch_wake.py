"""Waking the dispatcher: submissions and completions ask for a pass, `manage.py sweeper` runs it.

Placement runs in one place, the sweeper (`inference/dispatch.py` says why). Whoever changes
what a pass would decide (a job submitted, a batch finished, a worker registered or gone) calls
`dispatch_wake()` instead of running a pass itself; the sweeper waits on a `DispatchWaiter`
between its periodic passes and runs a pass as soon as one arrives.

* PostgreSQL: `NOTIFY atelier_dispatch` on the caller's own connection. Inside a transaction it is
  delivered when that transaction commits, and not at all if it rolls back, so the pass never
  runs before the job it is for can be seen; PostgreSQL folds identical notifications of one
  transaction into one. The sweeper `LISTEN`s on a dedicated connection (psycopg 3).
* SQLite (the embedded default, one machine): after the commit, one datagram to each Unix socket
  in `DATA_DIR/.dispatcher/.wake/` (the file broker's wake-up sockets, `config/filebroker.py`).

Failover: on PostgreSQL the waiter's connection also holds the dispatcher's leadership, a session
advisory lock (`LEADER_LOCK`): of two sweepers the one holding it runs the passes and the other
waits, trying the lock at each beat and wake. A leader killed (`kill -9`) or cut off loses its
connection, so PostgreSQL releases the lock and the other takes over. The connection's
`application_name` carries the process id, so an operator (or a test) can see who leads:
`SELECT application_name FROM pg_stat_activity JOIN pg_locks USING (pid) WHERE locktype = 'advisory'`.

Wakes are coalesced: a waiter drains every wake-up that has arrived before it returns, so a
thousand submits while a pass runs cost one more pass, not a thousand. A wake that is lost (the
sweeper restarting, a full socket buffer) costs at most one period: the periodic pass stays
underneath as the fallback.
"""

from __future__ import annotations

import logging
import os
import select
import time

from django.conf import settings
from django.db import connection, transaction

from config.filebroker import WakeSocket, wake_consumers

logger = logging.getLogger(__name__)

CHANNEL = "atelier_dispatch"
# Held by the leading sweeper for its life, beside `inference.dispatch.DISPATCHER_LOCK` (held per
# pass): "atelies" in ASCII, as a bigint.
LEADER_LOCK = 0x61_74_65_6C_69_65_73
APPLICATION_NAME = "atelier-dispatcher"


def _wake_folder() -> str:
    return str(settings.DATA_DIR / ".dispatcher")


def dispatch_wake() -> None:
    """Ask the dispatcher for a pass once the current transaction (if any) commits. Never raises:
    the job is stored whatever happens here, and the periodic pass will place it."""
    try:
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:  # transactional: delivered at commit
                cursor.execute("SELECT pg_notify(%s, '')", [CHANNEL])
        else:
            transaction.on_commit(_wake_local)
    except Exception:  # noqa: BLE001 - a wake is an optimisation, the periodic pass is the guarantee
        logger.exception("could not wake the dispatcher; its periodic pass will come")


def _wake_local() -> None:
    try:
        wake_consumers(_wake_folder())
    except OSError:
        logger.exception("could not wake the dispatcher; its periodic pass will come")


class DispatchWaiter:
    """The dispatcher's side: `lead()` says whether this process may run passes now, `wait(seconds)`
    returns True when woken (every wake-up so far drained: one pass answers them all), False after
    `seconds` without one."""

    def __init__(self) -> None:
        self._pg = None
        self._leading = False
        self._socket: WakeSocket | None = None
        if connection.vendor != "postgresql":
            try:
                self._socket = WakeSocket(_wake_folder())
            except OSError:
                logger.exception("no wake-up socket: dispatching on the periodic pass only")

    def _listener(self):
        """The dedicated LISTEN connection, (re)opened when missing or broken."""
        if self._pg is not None and not self._pg.closed:
            return self._pg
        import psycopg

        params = {k: v for k, v in connection.get_connection_params().items() if k not in ("cursor_factory", "context")}
        self._leading = False  # a new session holds no lock
        self._pg = psycopg.connect(**params, autocommit=True, application_name=f"{APPLICATION_NAME} pid={os.getpid()}")
        self._pg.execute(f"LISTEN {CHANNEL}")
        return self._pg

    def lead(self) -> bool:
        """True while this process is the dispatcher (always on SQLite: one machine, one sweeper);
        on PostgreSQL, takes the leadership lock when it is free."""
        if connection.vendor != "postgresql":
            return True
        try:
            listener = self._listener()
            if not self._leading:
                self._leading = bool(listener.execute("SELECT pg_try_advisory_lock(%s)", [LEADER_LOCK]).fetchone()[0])
                if self._leading:
                    logger.info("this sweeper (pid %s) now leads dispatch", os.getpid())
            return self._leading
        except Exception:  # noqa: BLE001 - the database away: not leading until it is back
            logger.exception("could not take the dispatcher's lock")
            self.close()
            return False

    def wait(self, seconds: float) -> bool:
        if connection.vendor == "postgresql":
            return self._wait_pg(seconds)
        if self._socket is None:
            time.sleep(seconds)
            return False
        readable, _, _ = select.select([self._socket.socket], [], [], seconds)
        if readable:
            self._socket._drain()
        return bool(readable)

    def _wait_pg(self, seconds: float) -> bool:
        try:
            listener = self._listener()
            woken = False
            for _ in listener.notifies(timeout=seconds, stop_after=1):
                woken = True
            if woken:  # coalesce: take whatever else has already arrived
                for _ in listener.notifies(timeout=0):
                    pass
            return woken
        except Exception:  # noqa: BLE001 - the database away: fall back to the periodic pass
            logger.exception("dispatch LISTEN failed; reconnecting on the next wait")
            self.close()
            time.sleep(seconds)
            return False

    def close(self) -> None:
        self._leading = False  # the lock goes with the connection
        if self._pg is not None:
            try:
                self._pg.close()
            except Exception:  # noqa: BLE001
                pass
            self._pg = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
