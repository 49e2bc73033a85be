"""`/metrics` (inference/metrics.py): the numbers match a known set of jobs, workers and usage
records on the real database, read at scrape time."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from a1111.generation import parse_generation_request
from inference.models import Job, Worker
from inference.services import job_submit
from inference.transitions import worker_register

pytestmark = pytest.mark.django_db
TOKEN = "metrics-test-token-" + "y" * 24


@pytest.fixture(autouse=True)
def _model(tiny_checkpoint_path):
    return tiny_checkpoint_path


def submit(user) -> Job:
    return job_submit(user=user, request=parse_generation_request({"prompt": "x", "steps": 2, "width": 64, "height": 64}))


def scrape(client, settings) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    settings.ATELIER_METRICS_TOKEN = TOKEN
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def finish(job: Job, status: str, *, gpu_seconds: float = 0.0, error: str = "", worker: Worker | None = None) -> None:
    Job.objects.filter(pk=job.pk).update(status=status, gpu_seconds=gpu_seconds, error=error, worker=worker,
                                         finished_at=timezone.now() if status in Job.FINISHED else None)


def test_the_metrics_match_a_known_set_of_jobs_workers_and_images(client, settings, personas) -> None:
    from tenants.models import UsageRecord

    alice, bob, charlie = personas["alice"], personas["bob"], personas["charlie"]
    queued_a = [submit(alice), submit(bob)]
    queued_c = submit(charlie)
    Job.objects.filter(pk=queued_a[0].pk).update(created_at=timezone.now() - timedelta(seconds=40))
    done, slow, failed_cap, failed_oom, running = (submit(alice) for _ in range(5))
    busy = worker_register(name=f"busy-{uuid.uuid4().hex[:6]}@h", device="cpu", device_memory_bytes=None)
    worker_register(name=f"idle-{uuid.uuid4().hex[:6]}@h", device="cpu", device_memory_bytes=None)
    dead = worker_register(name=f"dead-{uuid.uuid4().hex[:6]}@h", device="cpu", device_memory_bytes=None)
    Worker.objects.filter(pk=dead.pk).update(state=Worker.State.DEAD)
    finish(done, "succeeded", gpu_seconds=0.8)
    finish(slow, "succeeded", gpu_seconds=45.0)
    finish(failed_cap, "failed", error="worker w stopped; gave up after 3 attempts")
    finish(failed_oom, "failed", error="CUDA out of memory. Tried to allocate 2.00 GiB")
    finish(running, "running", worker=busy)
    for job, images in ((done, 2), (slow, 1)):
        UsageRecord.objects.create(job=job, user=alice, tenant=alice.membership.tenant, gpu_seconds=1, images=images,
                                   status="succeeded", ended_at=timezone.now())
    group = queued_a[0].checkpoint_title
    assert group  # the tiny checkpoint's title

    m = scrape(client, settings)
    assert m[("atelier_queue_depth", (("model_group", group), ("tenant", "studio-a")))] == 2
    assert m[("atelier_queue_depth", (("model_group", group), ("tenant", "studio-b")))] == 1
    assert 40 <= m[("atelier_queue_oldest_wait_seconds", (("model_group", group), ("tenant", "studio-a")))] < 100
    assert m[("atelier_queue_oldest_wait_seconds", (("model_group", group), ("tenant", "studio-b")))] < 40
    jobs = {dict(labels)["status"]: value for (name, labels), value in m.items() if name == "atelier_jobs"}
    assert jobs == {"queued": 3, "dispatched": 0, "running": 1, "succeeded": 2, "failed": 2, "cancelled": 0}
    assert m[("atelier_job_duration_seconds_count", ())] == 2
    assert m[("atelier_job_duration_seconds_sum", ())] == pytest.approx(45.8)
    assert m[("atelier_job_duration_seconds_bucket", (("le", "1.0"),))] == 1
    assert m[("atelier_job_duration_seconds_bucket", (("le", "30.0"),))] == 1
    assert m[("atelier_job_duration_seconds_bucket", (("le", "60.0"),))] == 2
    assert m[("atelier_job_duration_seconds_bucket", (("le", "+Inf"),))] == 2
    assert m[("atelier_images_total", (("tenant", "studio-a"),))] == 3
    failures = {dict(labels)["reason"]: value for (name, labels), value in m.items() if name == "atelier_job_failures_total"}
    assert failures == {"attempts_exhausted": 1, "out_of_memory": 1, "extras_error": 0, "promptgen_error": 0,
                        "interrogate_error": 0,
                        "generation_error": 0}
    assert m[("atelier_workers", (("state", "online"),))] == 2
    assert m[("atelier_workers", (("state", "dead"),))] == 1
    assert m[("atelier_workers_online", ())] == 2
    assert m[("atelier_workers_busy", ())] == 1
    assert m[("atelier_worker_busy_fraction", ())] == 0.5


def test_an_empty_platform_scrapes_zeros_not_errors(client, settings, db) -> None:
    m = scrape(client, settings)
    assert m[("atelier_workers_online", ())] == 0 and m[("atelier_worker_busy_fraction", ())] == 0
    assert m[("atelier_job_duration_seconds_count", ())] == 0
    assert not [key for key in m if key[0] == "atelier_queue_depth"]
