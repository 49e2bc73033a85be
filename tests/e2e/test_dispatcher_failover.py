"""Two dispatchers (`manage.py sweeper` twice, for failover) on PostgreSQL: one leads, and when it
is killed with `kill -9` while holding the lock, the other takes over and nothing is lost."""

from __future__ import annotations

import os
import signal

import pytest

from inference.dispatch_wake import APPLICATION_NAME, LEADER_LOCK
from inference.processes import sweeper_command
from tests.harness import Platform, running_platform

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith(("postgres", "pgsql")),
        reason="failover is PostgreSQL's advisory lock; the embedded default runs one sweeper",
    ),
]

SMALL = {"width": 64, "height": 64, "steps": 2, "sampler_name": "Euler"}


@pytest.fixture(scope="module")
def platform():
    with running_platform(workers=1) as platform:
        platform._spawn("sweeper2", sweeper_command(), worker=True)
        yield platform


def dispatchers(platform: Platform) -> dict[int, bool]:
    """This platform's sweepers' LISTEN sessions: their process id → whether it holds the leadership
    lock. Only this platform's database: an advisory lock is per database, and other platforms
    (other tests, other deployments on the server) have leaders of their own."""
    import psycopg

    key = LEADER_LOCK
    with psycopg.connect(platform._database, autocommit=True) as conn:
        rows = conn.execute(
            """SELECT a.application_name, EXISTS (
                   SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted
                   AND l.classid = %s AND l.objid = %s)
               FROM pg_stat_activity a WHERE a.application_name LIKE %s AND a.datname = current_database()""",
            [key >> 32, key & 0xFFFFFFFF, f"{APPLICATION_NAME} pid=%"],
        ).fetchall()
    return {int(name.rsplit("=", 1)[1]): leads for name, leads in rows}


def leader(platform: Platform) -> int | None:
    seen = dispatchers(platform)
    leaders = [pid for pid, leads in seen.items() if leads]
    assert len(leaders) <= 1, seen  # never two deciding
    return leaders[0] if leaders and len(seen) == 2 else None


def run(platform: Platform, count: int) -> None:
    jobs = [platform.submit("alice", **SMALL, prompt=f"a lighthouse {i}") for i in range(count)]
    for job_id in jobs:
        assert platform.wait_job("alice", job_id, timeout=120)["status"] == "succeeded"


def test_the_second_dispatcher_takes_over_when_the_leader_is_killed(platform: Platform) -> None:
    first = platform.wait_until(lambda: leader(platform), timeout=60, what="one of two sweepers leading")
    run(platform, 2)
    role = next(role for role, process in platform.processes.items() if process.pid == first)
    # Jobs waiting for the dispatcher while its leader dies: queued, then placed by the other one.
    waiting = [platform.submit("bob", **SMALL, prompt=f"a harbour {i}") for i in range(3)]
    os.kill(first, signal.SIGKILL)
    platform.processes.pop(role).wait(timeout=10)
    second = platform.wait_until(
        lambda: next((pid for pid, leads in dispatchers(platform).items() if leads), None),
        timeout=60, what="the other sweeper leading",
    )
    assert second != first
    for job_id in waiting:
        assert platform.wait_job("bob", job_id, timeout=120)["status"] == "succeeded"
    run(platform, 2)  # and it goes on dispatching
