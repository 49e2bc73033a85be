"""Usage records as the worker writes them (`tenants.services.usage_record`, in `transitions._finish`'s
transaction): exact totals over a mix of single, batched, cancelled-after-starting, failed-after-
starting, redelivered and EAS jobs, run in-process by the real batch runner on the tiny model
(as `tests/inference/test_batch_runner.py` does)."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from django.conf import settings

from a1111.generation import parse_generation_request
from inference.metering import job_pixel_steps, request_pixel_steps
from inference.models import Job
from inference.runner.batch import gpu_seconds_shares
from inference.services import job_cancel, job_submit
from inference.transitions import job_claim, job_fail, job_succeed
from runtime.engine import WorkerRuntime
from tenants.models import UsageRecord
from tenants.services import usage_record
from tests.security.conftest import run_on_a_worker

pytestmark = pytest.mark.django_db(transaction=True)

STEPS = 3
SIDE = 64


def _submit(personas, user: str, seed: int, **extra) -> Job:
    body = {"prompt": f"{user}'s boat", "seed": seed, "steps": STEPS, "width": SIDE, "height": SIDE, **extra}
    return job_submit(user=personas[user], request=parse_generation_request(body), dispatch=False)


def _runtime(cls: type[WorkerRuntime] = WorkerRuntime) -> WorkerRuntime:
    return cls(device="cpu", cache_size=1, config_cache_dir=settings.ATELIER_MODEL_CACHE_DIR)


def _record(job: Job) -> UsageRecord:
    return UsageRecord.objects.get(job=job)


def test_a_mix_of_jobs_writes_one_exact_record_each(personas, tiny_checkpoint_path, one_torch_thread) -> None:
    # single
    single = _submit(personas, "alice", 1)
    run_on_a_worker([single], name="single", runtime=_runtime())
    # batched: alice's 3 images and bob's 1 share one pipeline call
    alices, bobs = _submit(personas, "alice", 10, batch_size=3), _submit(personas, "bob", 20)
    assert alices.batch_key == bobs.batch_key
    run_on_a_worker([alices, bobs], name="batch", runtime=_runtime())
    # cancelled after starting
    cancelled = _submit(personas, "bob", 30)

    class CancelsAtTheFirstStep(WorkerRuntime):
        def generate(self, spec, on_step=None, on_preview=None):
            def step(chunk: int, done: int) -> None:
                if done == 1:
                    job_cancel(job=Job.objects.get(pk=cancelled.pk))
                if on_step is not None:
                    on_step(chunk, done)

            return super().generate(spec, on_step=step, on_preview=on_preview)

    run_on_a_worker([cancelled], name="cancel", runtime=_runtime(CancelsAtTheFirstStep))
    # failed after starting: the checkpoint is gone when the worker loads it
    doomed_file = tiny_checkpoint_path.parent / "doomed.safetensors"
    shutil.copyfile(tiny_checkpoint_path, doomed_file)
    try:
        failed = _submit(personas, "alice", 40, override_settings={"sd_model_checkpoint": "doomed"})
    finally:
        doomed_file.unlink()
    run_on_a_worker([failed], name="fail", runtime=_runtime())

    assert [job.status for job in (single, alices, bobs, cancelled, failed)] == [
        "succeeded", "succeeded", "succeeded", "cancelled", "failed"]
    per_image = SIDE * SIDE * STEPS
    records = {job.public_id: _record(job) for job in (single, alices, bobs, cancelled, failed)}
    assert UsageRecord.objects.count() == 5
    expected = {  # images, pixel_steps, status
        single.public_id: (1, per_image, "succeeded"),
        alices.public_id: (3, 3 * per_image, "succeeded"),
        bobs.public_id: (1, per_image, "succeeded"),
        cancelled.public_id: (0, per_image, "cancelled"),
        failed.public_id: (0, per_image, "failed"),
    }
    for public_id, (images, pixel_steps, status) in expected.items():
        record = records[public_id]
        assert (record.images, record.pixel_steps, record.status) == (images, pixel_steps, status), public_id
        assert record.kind == "txt2img" and record.service_name == ""
        assert record.started_at is not None and record.ended_at >= record.started_at
        assert record.queue_wait_seconds >= 0
        assert record.gpu_seconds == Job.objects.get(public_id=public_id).gpu_seconds
    assert records[single.public_id].checkpoint_title.startswith(settings.ATELIER_TINY_MODEL_NAME)
    assert records[single.public_id].checkpoint_sha256 == single.checkpoint_sha256
    # the shared batch's time split by pixel-steps: alice's 3 images cost 3× bob's 1
    alice_s, bob_s = records[alices.public_id].gpu_seconds, records[bobs.public_id].gpu_seconds
    assert bob_s > 0 and alice_s == pytest.approx(3 * bob_s, rel=1e-9)
    assert records[cancelled.public_id].gpu_seconds > 0  # it ran a step before the cancel

    totals = {
        "images": sum(r.images for r in records.values()),
        "pixel_steps": sum(r.pixel_steps for r in records.values()),
    }
    assert totals == {"images": 5, "pixel_steps": 7 * per_image}
    by_user = {name: UsageRecord.objects.filter(user=personas[name]).count() for name in ("alice", "bob")}
    assert by_user == {"alice": 3, "bob": 2}


def test_a_redelivered_finish_writes_nothing_more(personas, tiny_checkpoint_path, one_torch_thread) -> None:
    job = _submit(personas, "alice", 5)
    run_on_a_worker([job], name="once", runtime=_runtime())
    first = _record(job)
    # the same message again: the claim is refused (the job is finished), no second record
    run_on_a_worker([job], name="again", runtime=_runtime())
    # a stale finish of the same attempt, and the record written a second time: both change nothing
    assert not job_succeed(job=job, attempt=1, outputs=["x.png"] * 4, infotexts=[""] * 4, gpu_seconds=99.0)
    assert not job_fail(job=job, attempt=1, error="late", gpu_seconds=99.0)
    usage_record(job=job)
    assert UsageRecord.objects.filter(job=job).count() == 1
    again = _record(job)
    assert (again.pk, again.gpu_seconds, again.images, again.status) == (first.pk, first.gpu_seconds, 1, "succeeded")


def test_a_failure_after_starting_keeps_its_gpu_time_and_pixel_steps(personas, tiny_checkpoint_path) -> None:
    """Through the worker's transitions alone: claimed, then failed with the time it used."""
    from django.utils import timezone

    from inference.models import Worker

    body = {"prompt": "a hires boat", "seed": 3, "steps": 4, "width": SIDE, "height": SIDE, "enable_hr": True,
            "hr_scale": 2, "hr_second_pass_steps": 2, "denoising_strength": 0.5, "batch_size": 2}
    personas_job = job_submit(user=personas["bob"], request=parse_generation_request(body), dispatch=False)
    worker = Worker.objects.create(name="w@hires", queue="q.hires", last_heartbeat=timezone.now())
    Job.objects.filter(pk=personas_job.pk).update(status=Job.Status.DISPATCHED, worker=worker, attempts=1)
    claimed = job_claim(public_id=personas_job.public_id, attempt=1, worker_name=worker.name, total_steps=12)
    assert claimed is not None
    assert job_fail(job=claimed, attempt=1, error="out of memory", gpu_seconds=2.5)
    record = _record(claimed)
    # both passes: 2 images × (64² × 4 + 128² × 2)
    assert record.pixel_steps == 2 * (SIDE * SIDE * 4 + (2 * SIDE) * (2 * SIDE) * 2)
    assert (record.status, record.gpu_seconds, record.images) == ("failed", 2.5, 0)


def test_an_eas_job_records_its_service(personas, tiny_checkpoint_path, one_torch_thread) -> None:
    from inference.eas.bridge import eas_pump
    from inference.eas.models import EasItem
    from inference.eas.queues import queue_put, service_create

    service = service_create(name="poster-svc", owner=personas["alice"])
    body = {"prompt": "a poster", "seed": 7, "steps": STEPS, "width": SIDE, "height": SIDE}
    item = queue_put(service=service, queue="input", data=json.dumps(body).encode(), route="sdapi/v1/txt2img")
    eas_pump(service_id=service.pk)
    item.refresh_from_db()
    assert item.status == EasItem.Status.SUBMITTED and item.job is not None, item.status
    run_on_a_worker([item.job], name="eas", runtime=_runtime())
    record = _record(item.job)
    assert (record.service_name, record.status, record.images) == ("poster-svc", "succeeded", 1)


def test_shares_follow_pixel_steps_and_add_up_to_the_batch_time_exactly() -> None:
    small = parse_generation_request({"prompt": "a", "steps": 10, "width": 64, "height": 64})
    big = parse_generation_request({"prompt": "b", "steps": 10, "width": 64, "height": 64, "batch_size": 3})
    for elapsed in (0.1, 1.7, 12.345678, 1e-9):
        shares = gpu_seconds_shares(elapsed, [small, big, small])
        assert sum(shares) == pytest.approx(elapsed, rel=1e-15, abs=0)
        assert math.isclose(shares[1], 3 * shares[0], rel_tol=1e-12)
    assert gpu_seconds_shares(1.0, []) == []
    assert request_pixel_steps(big) == 3 * 64 * 64 * 10
    assert job_pixel_steps("promptgen", {"max_length": 40}) == 0
    assert job_pixel_steps("extras", {"sizes": [[64, 32], [10, 10]]}) == 64 * 32 + 100
    assert job_pixel_steps("interrogate", {"size": [30, 20]}) == 600


def test_a_started_job_failed_at_the_attempt_cap_by_a_lost_worker_has_its_record(
    personas, settings, tiny_checkpoint_path,
) -> None:
    from inference.clock import database_now
    from inference.dispatch import worker_exited
    from inference.models import Worker
    from inference.transitions import worker_register

    # dispatched_at on the database's clock, as dispatch writes it: worker_exited compares it with
    # that clock (SQLite's has milliseconds, so a Python timestamp could fall just after it)
    settings.ATELIER_JOB_MAX_ATTEMPTS = 1
    job = _submit(personas, "bob", 8, batch_size=2)
    worker = worker_register(name="lost@host", device="cpu", device_memory_bytes=None)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.DISPATCHED, worker=worker, attempts=1,
                                         dispatched_at=database_now())
    assert job_claim(public_id=job.public_id, attempt=1, worker_name=worker.name, total_steps=STEPS)
    assert worker_exited(name=worker.name, pid=Worker.objects.get(pk=worker.pk).pid) == 1
    record = _record(job)
    assert (record.status, record.images, record.gpu_seconds) == ("failed", 0, 0.0)
    assert record.pixel_steps == 2 * SIDE * SIDE * STEPS and record.started_at is not None
    # a job that never started spends no attempt: back to the queue, without a record
    never = _submit(personas, "bob", 9)
    worker = worker_register(name="lost@host", device="cpu", device_memory_bytes=None)
    Job.objects.filter(pk=never.pk).update(status=Job.Status.DISPATCHED, worker=worker, attempts=1,
                                           dispatched_at=database_now())
    assert worker_exited(name=worker.name, pid=Worker.objects.get(pk=worker.pk).pid) == 1
    assert Job.objects.get(pk=never.pk).status == "queued" and not UsageRecord.objects.filter(job=never).exists()
