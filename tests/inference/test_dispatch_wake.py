"""Waking the dispatcher (inference/dispatch_wake.py), on the real database: a submit wakes it
once its job is committed and not before, many wakes make one, and a worker's finished batch
wakes it instead of running a pass of its own."""

from __future__ import annotations

import uuid

import pytest
from django.db import transaction

from a1111.generation import parse_generation_request
from inference.dispatch import dispatch_pending
from inference.dispatch_wake import DispatchWaiter, dispatch_wake
from inference.models import Job
from inference.services import job_submit
from inference.transitions import worker_batch_done, worker_register

# transaction=True: a wake is delivered when its transaction commits, which a test transaction never does.
pytestmark = pytest.mark.django_db(transaction=True)

SETTLE = 10.0  # how long a wait may take to see a wake already sent (never reached when it works)


@pytest.fixture(autouse=True)
def _model(tiny_checkpoint_path):
    return tiny_checkpoint_path


@pytest.fixture
def waiter():
    waiter = DispatchWaiter()
    assert waiter.lead()  # listening (and on PostgreSQL leading) before anything is sent
    yield waiter
    waiter.close()


def test_a_submit_wakes_the_dispatcher_and_runs_no_pass_itself(personas, waiter) -> None:
    worker = worker_register(name=f"wake-{uuid.uuid4().hex[:8]}@host", device="cpu", device_memory_bytes=None)
    assert waiter.wait(SETTLE)  # a worker registering wakes it too
    job = job_submit(user=personas["alice"], request=parse_generation_request({"prompt": "x", "steps": 4}))
    assert waiter.wait(SETTLE)
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED and job.worker is None  # the submit placed nothing: the dispatcher does
    assert dispatch_pending() == 1
    job.refresh_from_db()
    assert job.worker_id == worker.pk


def test_a_wake_inside_a_transaction_arrives_at_its_commit_and_not_at_a_rollback(waiter) -> None:
    with transaction.atomic():
        dispatch_wake()
        assert not waiter.wait(0.2)  # not committed yet: the job it is for could not be seen
    assert waiter.wait(SETTLE)
    with pytest.raises(RuntimeError), transaction.atomic():
        dispatch_wake()
        raise RuntimeError("rolled back")
    assert not waiter.wait(0.2)


def test_many_wakes_make_one_pass(waiter) -> None:
    # Fifty wakes in one transaction (a job group's cells, a batch's jobs): delivered together at
    # its commit, so the wait that sees them has drained them all. Sent in one transaction so the
    # test does not depend on how fast separate notifications travel.
    with transaction.atomic():
        for _ in range(50):
            dispatch_wake()
    assert waiter.wait(SETTLE)
    assert not waiter.wait(0.2)  # all fifty drained by the one wake-up


def test_a_finished_batch_wakes_the_dispatcher_instead_of_dispatching(personas, waiter) -> None:
    name = f"done-{uuid.uuid4().hex[:8]}@host"
    worker_register(name=name, device="cpu", device_memory_bytes=None)
    job = job_submit(user=personas["alice"], request=parse_generation_request({"prompt": "x", "steps": 4}))
    waiter.wait(SETTLE)
    worker_batch_done(name=name, loaded_models=[])
    assert waiter.wait(SETTLE)
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED  # the worker only reported; placement is the dispatcher's


def test_only_one_of_two_dispatchers_leads(waiter) -> None:
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("on SQLite the embedded default runs one sweeper on one machine")
    standby = DispatchWaiter()
    try:
        assert not standby.lead()
        waiter.close()  # the leader's connection gone (as when it is killed): its lock with it
        assert standby.lead()
    finally:
        standby.close()
