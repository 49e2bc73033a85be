"""The dispatcher's memory of the queue (inference/dispatch_memory.py), on the real database: what
changes behind its back (a cancel, a requeue, a new submit) is seen by the next pass."""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone

from a1111.generation import parse_generation_request
from inference.dispatch import dispatch_pending, requeue_or_fail
from inference.dispatch_memory import QueueMemory
from inference.models import Job
from inference.services import job_cancel, job_submit
from inference.transitions import worker_register

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _model(tiny_checkpoint_path):
    return tiny_checkpoint_path


def submit(user, prompt: str = "x") -> Job:
    return job_submit(user=user, request=parse_generation_request({"prompt": prompt, "steps": 4}))


def ids(memory: QueueMemory) -> list[int]:
    window = memory.window(timezone.now())
    assert memory.index.jobs == {job.job_id: job for job in window}  # the policy's index follows the window
    return [job.job_id for job in window]


def test_a_cancel_behind_its_back_is_seen_and_the_cancelled_job_never_placed(personas) -> None:
    first, second = submit(personas["alice"]), submit(personas["bob"])
    memory = QueueMemory()
    assert ids(memory) == [first.pk, second.pk]
    job_cancel(job=first)
    assert ids(memory) == [second.pk]  # the aggregate differed: read again
    assert memory.reloads == 2
    worker_register(name=f"m-{uuid.uuid4().hex[:8]}@host", device="cpu", device_memory_bytes=None)
    assert dispatch_pending(memory=memory) == 1
    first.refresh_from_db(), second.refresh_from_db()
    assert (first.status, second.status) == ("cancelled", "dispatched")
    assert ids(memory) == []


def test_new_jobs_are_caught_up_without_a_full_read_and_a_requeued_one_comes_back(personas) -> None:
    first = submit(personas["alice"])
    memory = QueueMemory()
    assert ids(memory) == [first.pk]
    second = submit(personas["bob"])
    assert ids(memory) == [first.pk, second.pk]
    assert memory.reloads == 1  # only the new row was read
    worker_register(name=f"m-{uuid.uuid4().hex[:8]}@host", device="cpu", device_memory_bytes=None, max_batch=1)
    assert dispatch_pending(memory=memory) == 1
    placed = Job.objects.get(status=Job.Status.DISPATCHED)
    requeue_or_fail([placed], "its worker stopped")  # queued again, by another process in production
    assert sorted(ids(memory)) == sorted([first.pk, second.pk])
