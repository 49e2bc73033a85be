"""Why a queued job waits (issue 20, bug 4): the reason and place in line, in the native job JSON,
in `/sdapi/v1/progress` and on the workspace's progress bar, on the real database."""

from __future__ import annotations

import uuid

import pytest

from a1111.generation import parse_generation_request
from frontend.workspace.jobs import progress_html
from inference.dispatch import dispatch_pending
from inference.models import Worker
from inference.services import job_submit
from inference.transitions import worker_register
from inference.waiting import QueueState, queue_state

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _model(tiny_checkpoint_path):
    return tiny_checkpoint_path


def new_job(user, **fields):
    return job_submit(user=user, request=parse_generation_request({"prompt": "x", "steps": 4, **fields}))


def a_worker():
    return worker_register(name=f"test-{uuid.uuid4().hex[:8]}@host", device="cpu", device_memory_bytes=None)


def test_with_no_worker_online_the_job_says_so_everywhere_a_member_looks(api, personas) -> None:
    job = new_job(personas["alice"])
    assert queue_state(job) == QueueState("no_worker", None)
    detail = api("alice").get(f"/api/v1/jobs/{job.public_id}").json()
    assert detail["status"] == "queued"
    assert detail["queue"]["reason"] == "no_worker" and "no worker is online" in detail["queue"]["message"]
    progress = api("alice").get("/sdapi/v1/progress").json()
    assert "no worker is online" in progress["textinfo"] and progress["state"]["job_count"] == 1
    bar = progress_html(job, "en", queue_state(job))
    assert 'data-queue="no_worker"' in bar and "no worker is online" in bar
    assert "ワーカー" in progress_html(job, "ja", queue_state(job))
    assert api("bob").get(f"/api/v1/jobs/{job.public_id}").status_code == 404  # still only hers


def test_a_member_at_their_running_limit_is_told_so(personas, settings) -> None:
    settings.ATELIER_MAX_RUNNING_PER_USER = 1
    a_worker()
    running = new_job(personas["alice"])
    dispatch_pending()
    running.refresh_from_db()
    assert running.status == "dispatched"
    waiting = new_job(personas["alice"], width=256)
    assert queue_state(waiting) == QueueState("user_limit", None, running=1, limit=1)
    assert "your limit is 1" in queue_state(waiting).message
    assert "your limit is 1" in progress_html(waiting, "en", queue_state(waiting))


def test_a_team_at_its_running_limit_is_told_so(personas, settings) -> None:
    settings.ATELIER_MAX_RUNNING_PER_TENANT = 1
    a_worker()
    new_job(personas["alice"])
    dispatch_pending()
    waiting = new_job(personas["bob"], width=256)  # alice's team-mate
    assert queue_state(waiting) == QueueState("tenant_limit", None, running=1, limit=1)
    assert queue_state(new_job(personas["charlie"], width=320)).reason == "in_line"  # another team


def test_a_members_own_running_limit_and_their_plans_team_cap_are_what_they_are_told(personas) -> None:
    from django.utils import timezone

    from tenants.models import Membership, Plan, Tenant, TenantPlan

    studio_a = Tenant.objects.get(slug="studio-a")
    plan = Plan.objects.create(slug="caps", name="Caps", limits={"tenant_running_jobs": 2})
    TenantPlan.objects.create(tenant=studio_a, plan=plan, effective_from=timezone.now())
    Membership.objects.filter(user=personas["alice"]).update(limits={"user_running_jobs": 1})
    a_worker()
    new_job(personas["alice"])
    dispatch_pending()
    waiting = new_job(personas["alice"], width=256)  # the platform allows more; her own limit is 1
    dispatch_pending()
    waiting.refresh_from_db()
    assert waiting.status == "queued"
    assert queue_state(waiting) == QueueState("user_limit", None, running=1, limit=1)
    a_worker()
    bob_first = new_job(personas["bob"], width=320)
    dispatch_pending()  # bob's goes to the second worker: the team has 2 on workers, its plan's cap
    bob_first.refresh_from_db()
    assert bob_first.status == "dispatched"
    held = new_job(personas["bob"], width=384)
    assert queue_state(held) == QueueState("tenant_limit", None, running=2, limit=2)


def test_places_in_line_follow_fair_share_not_arrival(api, personas) -> None:
    a_worker()
    busy = new_job(personas["charlie"])
    dispatch_pending()  # the only worker is busy with charlie's job
    busy.refresh_from_db()
    assert busy.status == "dispatched"
    first, second = new_job(personas["alice"], width=256), new_job(personas["alice"], width=256)
    bobs = new_job(personas["bob"], width=256)
    positions = [queue_state(job).position for job in (first, bobs, second)]
    assert positions == [1, 2, 3]  # bob's one job goes before alice's second
    assert queue_state(first).message.startswith("Next in line")
    assert api("alice").get(f"/api/v1/jobs/{second.public_id}").json()["queue"]["message"] == (
        "In line: 2 job(s) ahead of it.")
    assert "2 job(s) ahead" in progress_html(second, "en", queue_state(second))
    busy.refresh_from_db()
    assert queue_state(busy) is None  # not queued: nothing to explain
    assert api("charlie").get(f"/api/v1/jobs/{busy.public_id}").json()["queue"] is None


def test_within_the_ttl_polls_answer_from_one_snapshot_and_after_it_afresh(personas, settings) -> None:
    """Issue 19, item 2: the queue is read once and served from Django's cache for the TTL."""
    from django.core.cache import cache

    from inference.waiting import SNAPSHOT_CACHE_KEY, current_queue_snapshot

    cache.delete(SNAPSHOT_CACHE_KEY)
    settings.ATELIER_QUEUE_STATE_TTL_SECONDS = 3600.0  # never expires within the test: no sleeps
    worker = a_worker()
    busy = new_job(personas["charlie"])
    dispatch_pending()
    first = new_job(personas["alice"], width=256)
    assert queue_state(first) == QueueState("in_line", 1)  # reads the queue, keeps the snapshot
    snapshot = cache.get(SNAPSHOT_CACHE_KEY)
    assert snapshot is not None and snapshot.positions == {first.pk: 1} and snapshot.length == 1
    assert snapshot.running_per_user == {personas["charlie"].pk: 1}

    later = new_job(personas["bob"], width=256)  # submitted after the snapshot
    worker.state = Worker.State.OFFLINE
    worker.save(update_fields=["state"])
    # Within the TTL: the snapshot answers, stale by design (the worker went, bob's job came after it).
    assert queue_state(first) == QueueState("in_line", 1)
    assert queue_state(later) == QueueState("in_line", 2)  # not in the snapshot: after its last
    assert current_queue_snapshot() == snapshot
    busy.refresh_from_db()
    assert queue_state(busy) is None  # the job's own status is always current

    cache.delete(SNAPSHOT_CACHE_KEY)  # what the TTL's end does
    assert queue_state(later) == QueueState("no_worker", None)
    settings.ATELIER_QUEUE_STATE_TTL_SECONDS = 0.0  # 0: every call reads the queue, nothing kept
    cache.delete(SNAPSHOT_CACHE_KEY)
    worker.state = Worker.State.ONLINE
    worker.save(update_fields=["state"])
    assert queue_state(later).reason == "in_line"
    assert cache.get(SNAPSHOT_CACHE_KEY) is None
