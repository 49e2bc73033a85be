"""A job's attempts (issue 18): unique dispatch numbers, an attempt spent only when a worker
really took the job, the cap said in the error; a worker name held by two processes; a worker
host whose clock is off by minutes. On the real database and broker."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from kombu.exceptions import OperationalError

from a1111.generation import parse_generation_request
from config.celery import app as celery_app
from inference.clock import database_now
from inference.dispatch import dispatch_pending, live_workers, workers_reap
from inference.models import Job, Worker
from inference.services import job_submit
from inference.transitions import (
    WorkerNameTaken,
    job_claim,
    job_fail,
    job_progress,
    job_succeed,
    worker_heartbeat,
    worker_register,
    worker_stopped,
)
from tests.inference.test_dispatch import broker_messages

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _model(tiny_checkpoint_path):
    return tiny_checkpoint_path


def _name(prefix: str = "w") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@host"


@pytest.fixture
def worker():
    return worker_register(name=_name(), device="cpu", device_memory_bytes=None)


def new_job(user, **fields) -> Job:
    return job_submit(user=user, request=parse_generation_request({"prompt": "x", "steps": 4, **fields}))


def _silence(worker: Worker) -> None:
    """The worker's last heartbeat, long ago by the database's clock."""
    Worker.objects.filter(pk=worker.pk).update(last_heartbeat=database_now() - timedelta(minutes=5))


def _revive(worker: Worker) -> None:
    Worker.objects.filter(pk=worker.pk).update(state="online", last_heartbeat=database_now())


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# --- attempt numbers and the cap -----------------------------------------------------------------


def test_a_failed_send_spends_no_attempt_and_the_next_dispatch_takes_a_new_number(personas, worker, monkeypatch) -> None:
    job = new_job(personas["alice"])

    def broker_down(*args, **kwargs):
        raise OperationalError("the broker is down")

    with monkeypatch.context() as patched:  # the broker, the one boundary we cannot switch off here
        patched.setattr(celery_app, "send_task", broker_down)
        assert dispatch_pending() == 1
    job.refresh_from_db()
    assert (job.status, job.worker, job.attempts, job.attempts_started) == ("queued", None, 1, 0)

    assert dispatch_pending() == 1
    job.refresh_from_db()
    assert (job.status, job.attempts, job.attempts_started) == ("dispatched", 2, 0)
    assert broker_messages(worker.queue) == [{"task": "atelier.run_batch", "args": [[[job.public_id, 2]]]}]
    assert job_claim(public_id=job.public_id, attempt=1, worker_name=worker.name, total_steps=4) is None
    claimed = job_claim(public_id=job.public_id, attempt=2, worker_name=worker.name, total_steps=4)
    assert claimed is not None and (claimed.status, claimed.attempts_started) == ("running", 1)


def test_a_job_taken_back_before_any_worker_claimed_it_costs_no_attempt(personas, worker, settings) -> None:
    settings.ATELIER_JOB_MAX_ATTEMPTS = 1
    job = new_job(personas["alice"])
    for attempt in (1, 2, 3):  # more dispatches than the cap: the worker dies each time before claiming
        _revive(worker)
        assert dispatch_pending() == 1
        _silence(worker)
        assert workers_reap() == 1
        job.refresh_from_db()
        assert (job.status, job.attempts, job.attempts_started, job.error) == ("queued", attempt, 0, "")

    _revive(worker)
    assert dispatch_pending() == 1
    assert job_claim(public_id=job.public_id, attempt=4, worker_name=worker.name, total_steps=4)
    _silence(worker)
    assert workers_reap() == 1
    job.refresh_from_db()
    assert (job.status, job.attempts, job.attempts_started) == ("failed", 4, 1)
    assert job.error == (
        f"worker {worker.name} was lost (attempt 4); gave up after 1 started attempts: "
        "the cap was reached (ATELIER_JOB_MAX_ATTEMPTS=1)"
    )
    assert [m["args"][0][0][1] for m in broker_messages(worker.queue)] == [1, 2, 3, 4]  # each number once


def test_a_dispatch_never_picked_up_goes_back_for_free_after_the_dispatch_timeout(personas, worker, settings) -> None:
    settings.ATELIER_JOB_MAX_ATTEMPTS = 1
    job = new_job(personas["alice"])
    assert dispatch_pending() == 1
    Job.objects.filter(pk=job.pk).update(dispatched_at=database_now() - timedelta(hours=1))
    assert workers_reap() == 1
    job.refresh_from_db()
    assert (job.status, job.attempts, job.attempts_started) == ("queued", 1, 0)
    broker_messages(worker.queue)


def test_a_stale_message_after_a_redispatch_moves_nothing(personas, worker) -> None:
    job = new_job(personas["alice"])
    assert dispatch_pending() == 1
    first = job_claim(public_id=job.public_id, attempt=1, worker_name=worker.name, total_steps=4)
    assert first is not None
    _silence(worker)  # lost mid-job: requeued, then sent to the next worker under a new number
    assert workers_reap() == 1
    other = worker_register(name=_name("next"), device="cpu", device_memory_bytes=None)
    assert dispatch_pending() == 1
    job.refresh_from_db()
    assert (job.status, job.worker, job.attempts, job.attempts_started) == ("dispatched", other, 2, 1)

    # The first worker comes back and goes on with attempt 1: none of its writes land.
    worker_heartbeat(name=worker.name, loaded_models=[])
    assert job_claim(public_id=job.public_id, attempt=1, worker_name=worker.name, total_steps=4) is None
    assert job_claim(public_id=job.public_id, attempt=1, worker_name=other.name, total_steps=4) is None
    assert not job_progress(job=first, attempt=1, step=2)
    assert not job_succeed(job=first, attempt=1, outputs=["stale.png"], infotexts=["t"], gpu_seconds=1.0)
    assert not job_fail(job=first, attempt=1, error="late")

    second = job_claim(public_id=job.public_id, attempt=2, worker_name=other.name, total_steps=4)
    assert second is not None and second.attempts_started == 2
    assert job_succeed(job=second, attempt=2, outputs=["a.png"], infotexts=["t"], gpu_seconds=1.0)
    job.refresh_from_db()
    assert (job.status, job.outputs, job.attempts, job.attempts_started) == ("succeeded", ["a.png"], 2, 2)
    assert broker_messages(worker.queue) == [{"task": "atelier.run_batch", "args": [[[job.public_id, 1]]]}]
    assert broker_messages(other.queue) == [{"task": "atelier.run_batch", "args": [[[job.public_id, 2]]]}]


def test_the_api_counts_started_attempts_and_shows_operators_the_dispatch_number(personas, worker) -> None:
    from inference.api.native import job_json

    job = new_job(personas["alice"])
    assert dispatch_pending() == 1
    Job.objects.filter(pk=job.pk).update(status="queued", worker=None)  # as if taken back unclaimed
    assert dispatch_pending() == 1
    job.refresh_from_db()
    assert job_json(job)["attempts"] == 0 and "attempt" not in job_json(job)
    assert job_json(job, viewer=personas["admin"])["attempt"] == 2
    broker_messages(worker.queue)


# --- a worker name held by two processes ---------------------------------------------------------


def test_a_second_live_process_under_a_name_is_refused_and_the_first_loses_nothing(personas) -> None:
    name = _name("twice")
    first = worker_register(name=name, device="cuda", device_memory_bytes=None, host="gpu-host-a", pid=4242)
    job = new_job(personas["alice"])
    assert dispatch_pending() == 1
    assert job_claim(public_id=job.public_id, attempt=1, worker_name=name, total_steps=4)

    with pytest.raises(WorkerNameTaken) as refused:  # this process, on another host, heartbeat fresh
        worker_register(name=name, device="cuda", device_memory_bytes=None)
    assert f"worker name {name!r} is in use by pid 4242 on gpu-host-a" in str(refused.value)
    assert "another name (celery -n)" in str(refused.value)

    row = Worker.objects.get(name=name)
    assert (row.host, row.pid, row.state, row.started_at) == ("gpu-host-a", 4242, "online", first.started_at)
    job.refresh_from_db()
    assert (job.status, job.attempts, job.attempts_started) == ("running", 1, 1)
    broker_messages(first.queue)


def test_on_one_host_a_live_pid_keeps_the_name_and_a_dead_one_is_taken_over(personas) -> None:
    import os
    import socket

    name, host = _name("local"), socket.gethostname()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        worker_register(name=name, device="cpu", device_memory_bytes=None, host=host, pid=sleeper.pid)
        with pytest.raises(WorkerNameTaken, match=f"pid {sleeper.pid} on {host}"):
            worker_register(name=name, device="cpu", device_memory_bytes=None)
    finally:
        sleeper.kill()
        sleeper.wait()

    gone = _dead_pid()
    Worker.objects.filter(name=name).update(pid=gone)
    job = new_job(personas["alice"])
    assert dispatch_pending() == 1  # dispatched to the life that is gone, never claimed
    taken = worker_register(name=name, device="cpu", device_memory_bytes=None)
    assert (taken.pid, taken.host) == (os.getpid(), host)
    job.refresh_from_db()
    assert (job.status, job.attempts, job.attempts_started) == ("queued", 1, 0)  # back for free
    broker_messages(taken.queue)


def test_a_replaced_life_coming_back_touches_neither_the_row_nor_the_new_lifes_jobs(personas) -> None:
    name = _name("paused")
    old = worker_register(name=name, device="cpu", device_memory_bytes=None)  # this process: the old life
    _silence(old)  # a long pause: its heartbeat is stale, so another host may take the name
    new = worker_register(name=name, device="cpu", device_memory_bytes=None, host="gpu-host-b", pid=777)
    job = new_job(personas["alice"])
    assert dispatch_pending() == 1
    job.refresh_from_db()
    assert job.worker == new

    _silence(new)
    before = Worker.objects.get(name=name).last_heartbeat
    worker_heartbeat(name=name, loaded_models=["x"])  # the old life wakes up
    worker_stopped(name=name)
    row = Worker.objects.get(name=name)
    assert (row.pid, row.state, row.last_heartbeat, row.loaded_models) == (777, "online", before, [])
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("dispatched", 1)
    broker_messages(new.queue)


# --- a worker host's clock off by minutes ---------------------------------------------------------


@pytest.mark.parametrize("skew", [timedelta(minutes=-10), timedelta(minutes=10)], ids=["behind", "ahead"])
def test_heartbeats_carry_the_databases_clock_not_the_worker_hosts(personas, worker, monkeypatch, skew) -> None:
    real_now = timezone.now
    with monkeypatch.context() as patched:  # this process plays the worker host, its clock off by `skew`
        patched.setattr(timezone, "now", lambda: real_now() + skew)
        worker_heartbeat(name=worker.name, loaded_models=[])
        job = new_job(personas["alice"])
    beat = Worker.objects.get(pk=worker.pk).last_heartbeat
    assert abs(database_now() - beat) < timedelta(minutes=1)  # neither 10 minutes old nor 10 ahead

    assert workers_reap() == 0  # behind: not reaped wrongly
    assert worker in live_workers()
    assert dispatch_pending() == 1
    job.refresh_from_db()
    assert job.worker == worker
    broker_messages(worker.queue)


def test_a_worker_that_stopped_beating_with_its_clock_ahead_is_still_declared_dead(personas, worker, monkeypatch, settings) -> None:
    real_now = timezone.now
    with monkeypatch.context() as patched:
        patched.setattr(timezone, "now", lambda: real_now() + timedelta(minutes=10))
        worker_heartbeat(name=worker.name, loaded_models=[])
    job = new_job(personas["alice"])
    assert dispatch_pending() == 1
    assert job_claim(public_id=job.public_id, attempt=1, worker_name=worker.name, total_steps=4)
    # Its last beat, by the database's clock, is now older than the limit (a limit of -60 s: as if a
    # minute of silence past it had gone by; no test waits on the wall clock).
    settings.ATELIER_WORKER_DEAD_AFTER_SECONDS = -60
    assert workers_reap() == 1
    assert Worker.objects.get(pk=worker.pk).state == "dead"
    job.refresh_from_db()
    assert (job.status, job.attempts, job.attempts_started) == ("queued", 1, 1)
    broker_messages(worker.queue)


@pytest.mark.parametrize("skew", [timedelta(minutes=-10), timedelta(minutes=10)], ids=["behind", "ahead"])
def test_the_reaper_judges_by_the_databases_clock_not_its_own(worker, monkeypatch, skew) -> None:
    silent = worker_register(name=_name("silent"), device="cpu", device_memory_bytes=None)
    _silence(silent)
    real_now = timezone.now
    with monkeypatch.context() as patched:  # the sweeper's host, its clock off by `skew`
        patched.setattr(timezone, "now", lambda: real_now() + skew)
        assert workers_reap() == 0  # no jobs to take back, but:
        assert set(live_workers()) == {worker}  # the fresh one stays alive (ahead), the silent one does not (behind)
    assert Worker.objects.get(pk=worker.pk).state == "online"
    assert Worker.objects.get(pk=silent.pk).state == "dead"


def test_a_job_run_on_a_skewed_worker_host_is_timed_by_the_databases_clock(personas, worker, monkeypatch) -> None:
    job = new_job(personas["alice"])
    assert dispatch_pending() == 1
    real_now = timezone.now
    with monkeypatch.context() as patched:  # the worker host's clock 10 minutes behind
        patched.setattr(timezone, "now", lambda: real_now() - timedelta(minutes=10))
        claimed = job_claim(public_id=job.public_id, attempt=1, worker_name=worker.name, total_steps=4)
        assert claimed is not None
        assert job_succeed(job=claimed, attempt=1, outputs=["a.png"], infotexts=["t"], gpu_seconds=1.0)
    job.refresh_from_db()
    assert job.started_at <= job.finished_at <= database_now()
    assert database_now() - job.finished_at < timedelta(minutes=1)
    broker_messages(worker.queue)


# --- a batch the broker lost (a Redis restarted without its data) is sent again, once -----------

def test_a_batch_lost_by_the_broker_is_sent_again_once_with_the_same_numbers(personas, worker, settings) -> None:
    from inference.dispatch import lost_batches_resend

    job = new_job(personas["alice"])
    assert dispatch_pending() == 1
    job.refresh_from_db()
    sent = [{"task": "atelier.run_batch", "args": [[[job.public_id, job.attempts]]]}]
    assert broker_messages(worker.queue) == sent  # read here: as if the broker had lost it
    after = timedelta(seconds=settings.ATELIER_RESEND_UNCLAIMED_SECONDS)
    period = timedelta(seconds=settings.ATELIER_HEARTBEAT_SECONDS)
    assert lost_batches_resend(now=job.dispatched_at + after / 2) == 0  # not yet: maybe on its way
    assert lost_batches_resend(now=job.dispatched_at + after + period / 2) == 1
    assert broker_messages(worker.queue) == sent  # the same message: a duplicate's claim would fail
    assert lost_batches_resend(now=job.dispatched_at + after + period * 1.5) == 0  # once
    job.refresh_from_db()
    assert (job.status, job.attempts, job.attempts_started) == ("dispatched", 1, 0)  # nothing spent


def test_a_worker_busy_with_a_batch_is_not_sent_its_next_again(personas, worker, settings) -> None:
    from inference.dispatch import lost_batches_resend

    running, waiting = new_job(personas["alice"]), new_job(personas["bob"], width=256)
    Job.objects.filter(pk=running.pk).update(status="running", worker=worker)
    Job.objects.filter(pk=waiting.pk).update(status="dispatched", worker=worker, dispatched_at=database_now(), attempts=1)
    waiting.refresh_from_db()
    late = waiting.dispatched_at + timedelta(seconds=settings.ATELIER_RESEND_UNCLAIMED_SECONDS + 0.1)
    assert lost_batches_resend(now=late) == 0  # its queue is only waiting for the running batch
    Job.objects.filter(pk=running.pk).update(status="succeeded")
    _silence(worker)
    assert lost_batches_resend(now=late) == 0  # nor to a worker that is gone (the reaper's case)
    _revive(worker)
    assert lost_batches_resend(now=late) == 1  # idle, live, and the batch still unclaimed: lost
    assert broker_messages(worker.queue) == [{"task": "atelier.run_batch", "args": [[[waiting.public_id, 1]]]}]
