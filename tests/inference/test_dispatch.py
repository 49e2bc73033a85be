"""Dispatch, reaping and the compare-and-set transitions, on the real database and broker."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from config.celery import app as celery_app
from inference.dispatch import dispatch_pending, worker_register, workers_reap
from inference.generation import parse_generation_request
from inference.models import Job, Worker
from inference.services import job_cancel, job_claim, job_fail, job_progress, job_submit, job_succeed

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _model(tiny_checkpoint_path):
    return tiny_checkpoint_path


@pytest.fixture
def worker():
    return worker_register(name=f"test-{uuid.uuid4().hex[:8]}@host", device="cpu", device_memory_bytes=None)


def new_job(user, **fields) -> Job:
    return job_submit(user=user, request=parse_generation_request({"prompt": "x", "steps": 4, **fields}))


def broker_messages(queue: str) -> list[dict]:
    messages = []
    with celery_app.connection_for_read() as connection:
        simple = connection.SimpleQueue(queue)
        try:
            while True:
                message = simple.get(timeout=0.5)
                messages.append({"task": message.headers["task"], "args": message.payload[0]})
                message.ack()
        except simple.Empty:
            pass
        finally:
            simple.close()
    return messages


def test_oldest_job_goes_to_the_free_worker_as_a_celery_message_on_its_own_queue(personas, worker) -> None:
    first, second = new_job(personas["alice"]), new_job(personas["charlie"])
    assert dispatch_pending() == 1
    first.refresh_from_db(), second.refresh_from_db()
    assert (first.status, first.worker, first.attempts) == ("dispatched", worker, 1)
    assert second.status == "queued"  # one slot
    assert dispatch_pending() == 0  # never handed out twice
    assert broker_messages(worker.queue) == [{"task": "atelier.run_job", "args": [first.public_id, 1]}]


def test_claim_is_compare_and_set_so_a_redelivered_or_stale_message_does_nothing(personas, worker) -> None:
    job = new_job(personas["alice"])
    dispatch_pending()
    assert job_claim(public_id=job.public_id, attempt=1, worker_name="someone-else") is None
    assert job_claim(public_id=job.public_id, attempt=2, worker_name=worker.name) is None
    claimed = job_claim(public_id=job.public_id, attempt=1, worker_name=worker.name)
    assert claimed is not None and claimed.status == "running"
    assert job_claim(public_id=job.public_id, attempt=1, worker_name=worker.name) is None  # redelivery

    assert job_succeed(job=claimed, attempt=1, outputs=["a.png"], infotexts=["t"], gpu_seconds=1.0)
    assert not job_succeed(job=claimed, attempt=1, outputs=["b.png"], infotexts=["t"], gpu_seconds=1.0)
    assert not job_fail(job=claimed, attempt=1, error="late")
    claimed.refresh_from_db()
    assert (claimed.status, claimed.outputs) == ("succeeded", ["a.png"])
    worker.refresh_from_db()
    assert worker.jobs_done == 1


def test_cancel_of_a_running_job_is_seen_at_the_next_step(personas, worker) -> None:
    job = new_job(personas["alice"])
    dispatch_pending()
    running = job_claim(public_id=job.public_id, attempt=1, worker_name=worker.name)
    assert job_progress(job=running, attempt=1, step=1)
    job_cancel(job=running)
    assert not job_progress(job=running, attempt=1, step=2)


def test_a_silent_worker_is_declared_dead_and_its_job_requeued_then_failed_at_the_cap(personas, worker, settings) -> None:
    settings.ATELIER_JOB_MAX_ATTEMPTS = 2
    job = new_job(personas["alice"])
    for attempt in (1, 2):
        Worker.objects.filter(pk=worker.pk).update(state="online", last_heartbeat=timezone.now())
        assert dispatch_pending() == 1
        assert job_claim(public_id=job.public_id, attempt=attempt, worker_name=worker.name)
        Worker.objects.filter(pk=worker.pk).update(last_heartbeat=timezone.now() - timedelta(minutes=5))
        assert workers_reap() == 1
        worker.refresh_from_db()
        assert worker.state == "dead"
        job.refresh_from_db()
        if attempt == 1:
            assert (job.status, job.worker, job.attempts) == ("queued", None, 1)
    assert job.status == "failed"
    assert "was lost" in job.error and "gave up after 2 attempts" in job.error
    broker_messages(worker.queue)  # drain


def test_a_restarting_worker_gives_back_what_its_previous_life_held(personas, worker) -> None:
    job = new_job(personas["alice"])
    dispatch_pending()
    job_claim(public_id=job.public_id, attempt=1, worker_name=worker.name)
    worker_register(name=worker.name, device="cpu", device_memory_bytes=None)
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("queued", 1)
    broker_messages(worker.queue)


def test_drained_or_disabled_workers_get_no_jobs(personas, worker) -> None:
    new_job(personas["alice"])
    for state in ("draining", "disabled"):
        Worker.objects.filter(pk=worker.pk).update(state=state)
        assert dispatch_pending() == 0
