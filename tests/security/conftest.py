"""Fixtures of the surface sweep: alice's things that outsiders must not reach, and the values that
fill a route's path parameters.

Jobs are submitted through the real API and stay queued (no worker is registered), as in
tests/inference/test_api.py; the image and ControlNet map are real PNGs in the storage, so a
route that forgot its ownership check would answer 200 with alice's pixels, not a 404 of its own.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone
from PIL import Image

from inference.models import Job, JobGroup

JOB_BODY = {"prompt": "a red bicycle", "steps": 10, "width": 128, "height": 128, "seed": 42}


@dataclass(frozen=True)
class AlicesThings:
    """Alice's job, with one output image and one ControlNet map stored, and the path values."""

    job_id: str
    values: dict[str, str]


@pytest.fixture
def outsiders(personas) -> dict[str, object]:
    """Who must get 404 for alice's things: bob (her tenant, a member), charlie (tenant B, a member)
    and dana (tenant B's admin: a tenant admin sees her own tenant's jobs, never another's)."""
    from tenants.models import Membership, Tenant
    from tenants.services import member_create

    dana = member_create(tenant=Tenant.objects.get(slug="studio-b"), username="dana", password="pw-dana",
                         role=Membership.Role.ADMIN)
    return {"bob": personas["bob"], "charlie": personas["charlie"], "dana": dana}


@pytest.fixture
def all_tokens(tokens, outsiders) -> dict[str, str]:
    from tenants.services import token_create

    return {**tokens, "dana": token_create(user=outsiders["dana"])[1]}


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def alices_things(api, personas, tiny_checkpoint_path) -> AlicesThings:
    response = api("alice").post("/api/v1/jobs", JOB_BODY)
    assert response.status_code == 201, response.content
    job_id = response.json()["id"]
    image = default_storage.save(f"users/alice/outputs/surface/{job_id}-0.png", ContentFile(_png()))
    control_map = default_storage.save(f"users/alice/outputs/surface/{job_id}-controlnet-0.png", ContentFile(_png()))
    Job.objects.filter(public_id=job_id).update(outputs=[image], control_maps=[control_map])
    group = api("alice").post("/api/v1/job-groups", {**JOB_BODY, "xyz": {"x": {"type": "seed", "values": "1, 2"}}})
    assert group.status_code == 201, group.content
    grid = default_storage.save(f"users/alice/outputs/surface/{group.json()['id']}-grid.png", ContentFile(_png()))
    JobGroup.objects.filter(public_id=group.json()["id"]).update(grid_output=grid, finished_at=timezone.now())
    from inference.eas.queues import service_create, service_token_create

    service = service_create(name="alices-service", owner=personas["alice"])
    token, _ = service_token_create(service=service)
    from tenants.services import token_create

    api_token, _ = token_create(user=personas["alice"], name="surface")  # not the one `api` calls with
    from tenants.models import ModelAccessRule

    rule = ModelAccessRule.objects.create(tenant=personas["alice"].membership.tenant, user=personas["bob"],
                                          kind="checkpoint", pattern="sdxl-*", effect="deny")  # alice's team's
    from tenants.uploads import upload_start

    upload = upload_start(user=personas["alice"], area="home", path=f"surface/{job_id}.bin", size=3,
                          sha256="0" * 64)  # open, nothing sent yet: a real session of alice's
    values = {
        "upload_id": upload.public_id,
        "public_id": job_id,
        "group_id": group.json()["id"],
        "service_id": service.public_id,
        "token_id": str(token.pk),
        "api_token_id": api_token.public_id,
        "member": "bob",  # a member of alice's team, on her Team pages
        "rule_id": rule.public_id,
        "index": "0",
        "object_id": str(personas["alice"].pk),
        "content_type_id": "1",
        "url": "no-such-page/",
    }
    yield AlicesThings(job_id=job_id, values=values)
    for key in (image, control_map, grid):
        default_storage.delete(key)


@pytest.fixture
def login_urls() -> tuple[str, ...]:
    """Where a refused browser request may be sent: our sign-in page, or admin's."""
    from django.urls import reverse

    return (settings.LOGIN_URL, reverse("admin:login"))


def run_on_a_worker(jobs: list[Job], *, name: str, runtime=None) -> None:
    """Run queued `jobs` as one batch, as a worker process does: a registered Worker row, the
    jobs dispatched to it, then `batch_execute` on a CPU `WorkerRuntime` (or `runtime`).
    The jobs are refreshed from the database afterwards."""
    from django.utils import timezone

    from inference.runner.batch import batch_execute
    from inference.models import Worker
    from runtime.engine import WorkerRuntime

    worker = Worker.objects.create(name=f"w@{name}", queue=f"q.{name}", last_heartbeat=timezone.now())
    Job.objects.filter(pk__in=[job.pk for job in jobs]).update(status=Job.Status.DISPATCHED, worker=worker, attempts=1)
    if runtime is None:
        runtime = WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=settings.ATELIER_MODEL_CACHE_DIR)
    batch_execute(jobs=[(job.public_id, 1) for job in jobs], worker_name=worker.name, runtime=runtime)
    for job in jobs:
        job.refresh_from_db()
