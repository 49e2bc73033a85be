"""Two dispatch passes that overlap on PostgreSQL: the second, having waited for the first's
worker locks, sees the batches the first placed (the pass reads the jobs on workers only after
it holds the locks, `inference/dispatch_sql.py`), so it never fills a worker twice."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest
from django.db import connection, connections

from a1111.generation import parse_generation_request
from inference.dispatch import dispatch_pending
from inference.models import Job
from inference.services import job_submit
from inference.transitions import worker_register

pytestmark = pytest.mark.django_db(transaction=True)  # the passes run on their own connections


@pytest.fixture(autouse=True)
def _model(tiny_checkpoint_path):
    return tiny_checkpoint_path


def _dsn() -> str:
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.pop("prepare_threshold", None)
    return psycopg.conninfo.make_conninfo(**{key: value for key, value in params.items() if isinstance(value, (str, int))})


def _waits_for_a_lock(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return row is not None and row[0] == "Lock"


def test_a_pass_that_waited_for_another_s_worker_lock_sees_its_batch(personas) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("row locks: PostgreSQL (the embedded default runs one sweeper)")
    worker = worker_register(name=f"test-{uuid.uuid4().hex[:8]}@host", device="cpu", device_memory_bytes=None)
    taken, waiting = [
        job_submit(user=personas["alice"], request=parse_generation_request({"prompt": f"x{index}", "steps": 4}))
        for index in range(2)
    ]
    # The first pass, as another dispatcher: it holds the worker's row and places a batch on it.
    other = psycopg.connect(_dsn())
    other.execute(f"SELECT id FROM {worker._meta.db_table} WHERE id = %s FOR UPDATE", [worker.pk])
    other.execute(f"UPDATE {Job._meta.db_table} SET status = 'dispatched', worker_id = %s, attempts = attempts + 1,"
                  " batch_id = 'other' WHERE id = %s", [worker.pk, taken.pk])
    backend: dict[str, int] = {}
    placed: list[int] = []

    def second_pass() -> None:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend["pid"] = cursor.fetchone()[0]
        try:
            placed.append(dispatch_pending())
        finally:
            connections.close_all()

    thread = threading.Thread(target=second_pass)
    thread.start()
    deadline = time.monotonic() + 30
    while not ("pid" in backend and _waits_for_a_lock(backend["pid"])):  # the second pass waits for the lock
        assert time.monotonic() < deadline, "the second pass never waited for the worker's lock"
        time.sleep(0.01)
    other.commit()
    other.close()
    thread.join(30)

    assert placed == [0]  # the worker is busy with the first pass's batch: nothing more goes there
    waiting.refresh_from_db()
    assert waiting.status == Job.Status.QUEUED
