"""Dispatch, reaping and the compare-and-set transitions, on the real database and broker."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from config.celery import app as celery_app
from inference.dispatch import dispatch_pending, worker_exited, workers_reap
from a1111.generation import parse_generation_request
from inference.models import Job, Worker
from inference.services import job_cancel, job_submit
from inference.transitions import job_claim, job_fail, job_progress, job_succeed, worker_register

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
    first, second = new_job(personas["alice"]), new_job(personas["charlie"], width=256)
    assert dispatch_pending() == 1
    first.refresh_from_db(), second.refresh_from_db()
    assert (first.status, first.worker, first.attempts) == ("dispatched", worker, 1)
    assert second.status == "queued"  # another batch key: waits for the worker to be free
    assert dispatch_pending() == 0  # never handed out twice
    assert broker_messages(worker.queue) == [{"task": "atelier.run_batch", "args": [[[first.public_id, 1]]]}]


def test_jobs_with_one_batch_key_from_different_users_go_out_as_one_batch(personas, worker) -> None:
    alices, bobs = new_job(personas["alice"], seed=1), new_job(personas["bob"], seed=2, prompt="other words")
    charlies = new_job(personas["charlie"], steps=5)  # another batch key
    assert dispatch_pending() == 2
    alices.refresh_from_db(), bobs.refresh_from_db(), charlies.refresh_from_db()
    assert alices.batch_id and alices.batch_id == bobs.batch_id
    assert charlies.status == "queued"
    [message] = broker_messages(worker.queue)
    assert sorted(message["args"][0]) == sorted([[alices.public_id, 1], [bobs.public_id, 1]])


def test_claim_is_compare_and_set_so_a_redelivered_or_stale_message_does_nothing(personas, worker) -> None:
    job = new_job(personas["alice"])
    dispatch_pending()
    assert job_claim(public_id=job.public_id, attempt=1, worker_name="someone-else", total_steps=4) is None
    assert job_claim(public_id=job.public_id, attempt=2, worker_name=worker.name, total_steps=4) is None
    claimed = job_claim(public_id=job.public_id, attempt=1, worker_name=worker.name, total_steps=4)
    assert claimed is not None and claimed.status == "running"
    assert job_claim(public_id=job.public_id, attempt=1, worker_name=worker.name, total_steps=4) is None  # redelivery

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
    running = job_claim(public_id=job.public_id, attempt=1, worker_name=worker.name, total_steps=4)
    assert job_progress(job=running, attempt=1, step=1)
    job_cancel(job=running)
    assert not job_progress(job=running, attempt=1, step=2)


def test_a_silent_worker_is_declared_dead_and_its_job_requeued_then_failed_at_the_cap(personas, worker, settings) -> None:
    settings.ATELIER_JOB_MAX_ATTEMPTS = 2
    job = new_job(personas["alice"])
    for attempt in (1, 2):
        Worker.objects.filter(pk=worker.pk).update(state="online", last_heartbeat=timezone.now())
        assert dispatch_pending() == 1
        assert job_claim(public_id=job.public_id, attempt=attempt, worker_name=worker.name, total_steps=4)
        Worker.objects.filter(pk=worker.pk).update(last_heartbeat=timezone.now() - timedelta(minutes=5))
        assert workers_reap() == 1
        worker.refresh_from_db()
        assert worker.state == "dead"
        job.refresh_from_db()
        if attempt == 1:
            assert (job.status, job.worker, job.attempts) == ("queued", None, 1)
    assert job.status == "failed"
    assert "was lost (attempt 2)" in job.error and "gave up after 2 started attempts" in job.error
    assert "the cap was reached (ATELIER_JOB_MAX_ATTEMPTS=2)" in job.error
    broker_messages(worker.queue)  # drain


def test_a_worker_seen_exiting_by_its_supervisor_is_offline_at_once_and_its_job_requeued_then_failed_at_the_cap(
    personas, worker, settings
) -> None:
    settings.ATELIER_JOB_MAX_ATTEMPTS = 2
    job = new_job(personas["alice"])
    for attempt in (1, 2):
        worker = worker_register(name=worker.name, device="cpu", device_memory_bytes=None)  # its next life
        assert dispatch_pending() == 1
        assert job_claim(public_id=job.public_id, attempt=attempt, worker_name=worker.name, total_steps=4)
        assert worker_exited(name=worker.name, pid=worker.pid + 1) == 0  # another life's exit: not this one
        assert Worker.objects.get(pk=worker.pk).state == "online"
        assert worker_exited(name=worker.name, pid=worker.pid) == 1  # heartbeat still fresh: no timeout involved
        worker.refresh_from_db()
        assert worker.state == "offline"
        job.refresh_from_db()
        if attempt == 1:
            assert (job.status, job.worker, job.attempts) == ("queued", None, 1)
            assert dispatch_pending() == 0  # nothing more is sent to it
    assert job.status == "failed"
    assert f"worker {worker.name} exited (attempt 2)" in job.error and "gave up after 2 started attempts" in job.error
    assert worker_exited(name=worker.name, pid=worker.pid) == 0  # reported twice: nothing more
    broker_messages(worker.queue)  # drain


def test_a_restarting_worker_gives_back_what_its_previous_life_held(personas, worker) -> None:
    job = new_job(personas["alice"])
    dispatch_pending()
    job_claim(public_id=job.public_id, attempt=1, worker_name=worker.name, total_steps=4)
    worker_register(name=worker.name, device="cpu", device_memory_bytes=None)
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("queued", 1)
    broker_messages(worker.queue)


def test_drained_or_disabled_workers_get_no_jobs(personas, worker) -> None:
    new_job(personas["alice"])
    for state in ("draining", "disabled"):
        Worker.objects.filter(pk=worker.pk).update(state=state)
        assert dispatch_pending() == 0


def test_the_user_with_less_recent_service_goes_first(personas, worker) -> None:
    served = new_job(personas["bob"])
    Job.objects.filter(pk=served.pk).update(status="succeeded", gpu_seconds=120.0, finished_at=timezone.now())
    bobs = [new_job(personas["bob"], width=64 + 8 * i) for i in range(5)]  # distinct batch keys
    alices = new_job(personas["alice"], width=512)
    assert dispatch_pending() == 1
    alices.refresh_from_db()
    assert alices.status == "dispatched"
    assert all(Job.objects.get(pk=b.pk).status == "queued" for b in bobs)
    broker_messages(worker.queue)


def test_a_finished_job_has_exactly_one_usage_record(personas, worker) -> None:
    from tenants.models import UsageRecord

    job = new_job(personas["alice"])
    dispatch_pending()
    running = job_claim(public_id=job.public_id, attempt=1, worker_name=worker.name, total_steps=4)
    assert job_succeed(job=running, attempt=1, outputs=["a.png"], infotexts=["t"], gpu_seconds=2.5)
    assert not job_succeed(job=running, attempt=1, outputs=["a.png"], infotexts=["t"], gpu_seconds=2.5)
    record = UsageRecord.objects.get(job=job)
    assert (record.user, record.tenant.slug, record.gpu_seconds, record.images) == (personas["alice"], "studio-a", 2.5, 1)
    broker_messages(worker.queue)


def test_a_worker_holding_the_checkpoint_in_host_ram_is_preferred_over_a_cold_one(personas) -> None:
    from inference.transitions import worker_heartbeat

    cold = worker_register(name=f"cold-{uuid.uuid4().hex[:8]}@host", device="cuda", device_memory_bytes=None)
    warm = worker_register(name=f"warm-{uuid.uuid4().hex[:8]}@host", device="cuda", device_memory_bytes=None)
    job = new_job(personas["alice"])
    worker_heartbeat(name=cold.name, loaded_models=["some-other-checkpoint"])
    worker_heartbeat(name=warm.name, loaded_models=["some-other-checkpoint"], cached_models=[job.model_key])
    assert Worker.objects.get(pk=warm.pk).cached_models == [job.model_key]
    assert dispatch_pending() == 1
    job.refresh_from_db()
    assert job.worker == warm  # a move from host RAM beats a load from disk


@pytest.mark.django_db(transaction=True)  # the progress reporter thread writes through its own connection
def test_a_worker_reports_the_networks_it_ran_and_the_next_job_with_them_goes_there(personas, settings) -> None:
    """After a batch with a LoRA, the worker's runtime still holds the adapter; it reports the
    batch's network key (Worker.active_networks), and of two otherwise equal workers holding the
    checkpoint, the next job with that LoRA goes to the one that holds it (not the lower id)."""
    from inference.runner.batch import batch_execute
    from inference.transitions import worker_heartbeat
    from runtime.engine import WorkerRuntime
    from runtime.tiny.lora import write_tiny_lora

    folder = settings.DATA_DIR / "users" / "alice" / "models" / "Lora"
    folder.mkdir(parents=True, exist_ok=True)
    write_tiny_lora(folder / "ink.safetensors")
    other = worker_register(name=f"other-{uuid.uuid4().hex[:8]}@host", device="cpu", device_memory_bytes=None)
    holder = worker_register(name=f"holder-{uuid.uuid4().hex[:8]}@host", device="cpu", device_memory_bytes=None)
    assert other.pk < holder.pk  # without the networks, the tie goes to `other`
    Worker.objects.filter(pk=other.pk).update(state=Worker.State.DRAINING)  # the first job must go to `holder`
    body = {"prompt": "a boat <lora:ink:0.8>", "width": 64, "height": 64, "steps": 2}
    first = new_job(personas["alice"], **body)
    dispatch_pending()  # (already done by the submit itself: it commits at once here)
    first.refresh_from_db()
    assert first.worker_id == holder.pk
    runtime = WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=settings.ATELIER_MODEL_CACHE_DIR)
    batch_execute(jobs=[(first.public_id, 1)], worker_name=holder.name, runtime=runtime)
    first.refresh_from_db(), holder.refresh_from_db()
    assert first.status == "succeeded", first.error
    assert holder.active_networks == first.network_key != ""  # what the control plane computed for the job
    assert runtime.held_network_key() == first.network_key

    Worker.objects.filter(pk=other.pk).update(state=Worker.State.ONLINE)
    worker_heartbeat(name=other.name, loaded_models=list(holder.loaded_models))  # equal, but no networks
    second = new_job(personas["alice"], **body, seed=7)
    dispatch_pending()
    second.refresh_from_db()
    assert second.worker_id == holder.pk
