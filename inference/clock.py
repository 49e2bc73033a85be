"""The one clock that decides whether a worker is alive: the database's.

Heartbeats are written by worker hosts and read by the dispatcher on another host; comparing
one machine's `timezone.now()` with another's would make a worker whose clock runs minutes
behind look dead (its jobs taken away while it runs them) and one whose clock runs ahead look
alive long after it stopped. So every liveness timestamp is written as `database_now()` and every cut-off is
computed from it, read from the same server: no process's own clock takes part. (A value read
from the server rather than `Now()` in the UPDATE: on SQLite, `Now()` stores milliseconds while
Django stores microseconds, and equal instants would compare unequal as text.)
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone as dt_timezone

from django.conf import settings
from django.db import connection


def database_now() -> datetime:
    """The database server's current time (aware, UTC): `statement_timestamp()` on PostgreSQL
    (not `now()`, which stays at its transaction's start), SQLite's own clock otherwise (SQLite is
    a file on this host: its clock is the host's, not a Python process's possibly patched one)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT statement_timestamp()")
            value = cursor.fetchone()[0]
            return value.astimezone(dt_timezone.utc)
        cursor.execute("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")
        value = cursor.fetchone()[0]
    return datetime.fromisoformat(value).replace(tzinfo=dt_timezone.utc)


def live_since(now: datetime | None = None) -> datetime:
    """Heartbeats older than this (by the database's clock) are a dead worker's."""
    return (now or database_now()) - timedelta(seconds=settings.ATELIER_WORKER_DEAD_AFTER_SECONDS)
