"""Quotas and limits (`tenants/quotas/`) through `job_submit`, the dispatcher and real rows: the
limits in force (plan tightened by member), request limits (403), rate windows and queued caps
(429 naming the limit, used/limit and the reset in the tenant's zone), running caps and rate
re-checks at dispatch, `quota_status`, and real concurrency on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.utils import timezone

from a1111.errors import Forbidden, TooMany
from a1111.generation import parse_generation_request
from inference.dispatch import dispatch_pending
from inference.models import Job
from inference.services import TooManyQueuedJobs, job_submit
from inference.transitions import worker_register
from tenants.limits import Limits
from tenants.models import Membership, Plan, TenantPlan, UsageRecord
from tenants.quotas import QuotaExceeded, RequestOverLimit, quota_status, terms_for_membership

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _model(tiny_checkpoint_path):
    return tiny_checkpoint_path


def _plan(tenant, limits: dict, *, slug: str = "pro", since: dt.timedelta = dt.timedelta(days=1)) -> Plan:
    plan = Plan.objects.create(slug=slug, name=slug, limits=limits)
    TenantPlan.objects.create(tenant=tenant, plan=plan, effective_from=timezone.now() - since)
    return plan


def _submit(user, **fields) -> Job:
    body = {"prompt": "x", "steps": 4, "width": 64, "height": 64, **fields}
    return job_submit(user=user, request=parse_generation_request(body), dispatch=False)


def _record(user, *, images: int = 0, gpu_seconds: float = 0.0, ended_at: dt.datetime | None = None) -> UsageRecord:
    """Past use, as an operator's adjustment (a record without a job: the same sums)."""
    return UsageRecord.objects.create(
        user=user, tenant=user.membership.tenant, kind=UsageRecord.ADJUSTMENT, gpu_seconds=gpu_seconds,
        images=images, status="adjustment", ended_at=ended_at or timezone.now(), reason="earlier use",
    )


def _studio(personas):
    return personas["alice"].membership.tenant


def test_the_limits_in_force_are_the_plan_s_tightened_by_the_member_s(personas) -> None:
    tenant = _studio(personas)
    alice = Membership.objects.select_related("tenant").get(user=personas["alice"])
    assert terms_for_membership(alice).limits == Limits()  # no plan: no limits
    Plan.objects.create(slug="later", name="later", limits={"max_steps": 1})
    TenantPlan.objects.create(tenant=tenant, plan=Plan.objects.get(slug="later"),
                              effective_from=timezone.now() + dt.timedelta(days=3))  # not yet in force
    assert terms_for_membership(alice).limits == Limits()
    plan = _plan(tenant, {"max_steps": 30, "user_images_per_day": 100})
    plan.allowed_checkpoints = ["sd15-*"]
    plan.save()
    alice.limits = {"user_images_per_day": 10, "max_batch_size": 4}
    alice.save()
    terms = terms_for_membership(alice)
    assert terms.limits.to_json() == {"user_images_per_day": 10, "max_steps": 30, "max_batch_size": 4}
    assert terms.allowed_checkpoints == ("sd15-*",)


def test_request_limits_are_a_403_naming_the_limit(personas) -> None:
    _plan(_studio(personas), {"max_steps": 10, "max_pixels": 128 * 128, "max_batch_size": 4})
    alice = personas["alice"]
    with pytest.raises(RequestOverLimit, match="max_steps") as refused:
        _submit(alice, steps=11)
    assert isinstance(refused.value, Forbidden) and refused.value.field == "steps"
    with pytest.raises(RequestOverLimit, match="max_pixels"):
        _submit(alice, width=256, height=128)
    with pytest.raises(RequestOverLimit, match="max_batch_size"):
        _submit(alice, batch_size=2, n_iter=3)  # 6 images in one job
    with pytest.raises(RequestOverLimit, match="max_pixels"):  # the hires pass's size counts
        _submit(alice, enable_hr=True, hr_scale=4, denoising_strength=0.5)
    assert _submit(alice, steps=10, width=128, height=128, batch_size=2, n_iter=2).status == "queued"
    assert Job.objects.count() == 1


def test_a_daily_image_quota_counts_records_in_the_tenant_s_day_and_jobs_in_flight(personas) -> None:
    tenant = _studio(personas)
    tenant.time_zone = "Asia/Shanghai"
    tenant.save()
    _plan(tenant, {"user_images_per_day": 5})
    alice, bob = personas["alice"], personas["bob"]
    zone = ZoneInfo("Asia/Shanghai")
    midnight = timezone.now().astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    _record(alice, images=2, ended_at=midnight + dt.timedelta(seconds=1))  # today, in Shanghai
    _record(alice, images=50, ended_at=midnight - dt.timedelta(seconds=1))  # yesterday there: not counted
    _submit(alice, batch_size=2)  # in flight: 2 + 2 = 4 of 5
    with pytest.raises(QuotaExceeded) as refused:
        _submit(alice, batch_size=2)
    exc = refused.value
    assert isinstance(exc, TooMany) and (exc.key, exc.used, exc.limit) == ("user_images_per_day", 4, 5)
    tomorrow = midnight + dt.timedelta(days=1)
    assert exc.resets_at == tomorrow
    assert "images per day (user_images_per_day): 4 of 5 used, this job would add 2" in exc.message
    assert f"resets at {tomorrow.isoformat(timespec='seconds')}" in exc.message and "+08:00" in exc.message
    assert 0 < exc.retry_after <= 86400 + 1
    assert _submit(alice).status == "queued"  # the last image still fits
    assert _submit(bob, batch_size=5).status == "queued"  # a user limit: bob's own count


def test_a_tenant_quota_counts_the_whole_team(personas) -> None:
    _plan(_studio(personas), {"tenant_images_per_hour": 3, "tenant_queued_jobs": 10})
    alice, bob, charlie = personas["alice"], personas["bob"], personas["charlie"]
    _submit(alice, batch_size=2)
    with pytest.raises(QuotaExceeded, match="tenant_images_per_hour"):
        _submit(bob, batch_size=2)
    _submit(bob)
    assert _submit(charlie, batch_size=4).status == "queued"  # another team


def test_gpu_seconds_refuse_once_nothing_is_left(personas) -> None:
    _plan(_studio(personas), {"user_gpu_seconds_per_month": 60})
    alice = personas["alice"]
    _record(alice, gpu_seconds=59.5)
    assert _submit(alice).status == "queued"  # 0.5 s left: admitted (its time is known only once it ran)
    _record(alice, gpu_seconds=0.5)
    with pytest.raises(QuotaExceeded, match=r"GPU-seconds per month \(user_gpu_seconds_per_month\): 60\.0 of 60\.0"):
        _submit(alice)


def test_queued_caps_refuse_as_a_full_queue(personas) -> None:
    tenant = _studio(personas)
    _plan(tenant, {"tenant_queued_jobs": 3})
    Membership.objects.filter(user=personas["bob"]).update(limits={"user_queued_jobs": 1})
    alice, bob = personas["alice"], personas["bob"]
    _submit(bob)
    with pytest.raises(TooManyQueuedJobs, match="user_queued_jobs"):  # an EAS item waits on it
        _submit(bob)
    _submit(alice), _submit(alice)
    with pytest.raises(TooManyQueuedJobs, match=r"tenant_queued_jobs\): your team has 3 of 3 waiting"):
        _submit(alice)


def test_running_caps_hold_jobs_queued_until_a_slot_frees(personas) -> None:
    _plan(_studio(personas), {"user_running_jobs": 1})
    alice = personas["alice"]
    worker = worker_register(name=f"q-{uuid.uuid4().hex[:8]}@host", device="cpu", device_memory_bytes=None)
    worker_register(name=f"q-{uuid.uuid4().hex[:8]}@host", device="cpu", device_memory_bytes=None)
    first, second = _submit(alice, width=128), _submit(alice, width=192)  # two batch keys: two workers could take them
    charlies = _submit(personas["charlie"], width=256)
    assert dispatch_pending() == 2
    statuses = dict(Job.objects.values_list("pk", "status"))
    assert (statuses[first.pk], statuses[second.pk], statuses[charlies.pk]) == ("dispatched", "queued", "dispatched")
    Job.objects.filter(pk=first.pk).update(status=Job.Status.SUCCEEDED, finished_at=timezone.now())
    Job.objects.filter(pk=charlies.pk).update(status=Job.Status.SUCCEEDED, finished_at=timezone.now())
    assert dispatch_pending() == 1
    assert Job.objects.get(pk=second.pk).status == "dispatched"
    assert worker.pk


def test_a_job_over_a_lowered_limit_fails_at_dispatch_with_the_quota_s_message(personas) -> None:
    plan = _plan(_studio(personas), {"user_images_per_day": 10})
    alice = personas["alice"]
    worker_register(name=f"r-{uuid.uuid4().hex[:8]}@host", device="cpu", device_memory_bytes=None)
    first, second = _submit(alice, batch_size=2), _submit(alice, batch_size=2)
    plan.limits = {"user_images_per_day": 3}  # lowered while they wait
    plan.save()
    dispatch_pending()
    first.refresh_from_db(), second.refresh_from_db()
    assert first.status == "dispatched"
    assert second.status == "failed" and second.finished_at is not None
    assert second.error.startswith("quota reached: images per day (user_images_per_day): 2 of 3 used, this job would add 2")
    assert not UsageRecord.objects.filter(job=second).exists()  # it never ran


def test_quota_status_lists_each_limit_in_force_with_its_use(personas) -> None:
    tenant = _studio(personas)
    tenant.time_zone = "Europe/Berlin"
    tenant.save()
    _plan(tenant, {"user_images_per_day": 10, "user_gpu_seconds_per_hour": 100, "tenant_queued_jobs": 5, "max_steps": 50})
    alice = personas["alice"]
    assert quota_status(personas["charlie"]) == []  # no plan
    _record(alice, images=3, gpu_seconds=12.25)
    _submit(alice, batch_size=2)
    rows = {row.key: row for row in quota_status(alice)}
    assert list(rows) == ["user_gpu_seconds_per_hour", "user_images_per_day", "tenant_queued_jobs", "max_steps"]
    assert (rows["user_images_per_day"].used, rows["user_images_per_day"].limit) == (5, 10)
    assert rows["user_images_per_day"].percent == 50
    assert rows["user_gpu_seconds_per_hour"].used == pytest.approx(12.25)  # no pixel-steps yet: no estimate
    assert rows["user_gpu_seconds_per_hour"].resets_at.utcoffset() == ZoneInfo("Europe/Berlin").utcoffset(
        rows["user_gpu_seconds_per_hour"].resets_at.replace(tzinfo=None))
    assert (rows["tenant_queued_jobs"].used, rows["tenant_queued_jobs"].resets_at) == (1, None)
    assert rows["max_steps"].used is None


def test_no_limits_cost_no_lock_and_no_usage_query(personas, django_assert_max_num_queries) -> None:
    """Without a plan the check is one plan lookup (part of the submit's own queries)."""
    from tenants.quotas import quota_check

    alice = personas["alice"]
    membership = Membership.objects.select_related("tenant").get(user=alice)
    request = parse_generation_request({"prompt": "x"})
    with django_assert_max_num_queries(1):
        quota_check(user=alice, tenant=membership.tenant, request=request, membership=membership)


# --- real concurrency, on PostgreSQL ---------------------------------------------------------------


def _race(personas, submit_as: list[str]) -> tuple[int, list[Exception]]:
    """Every name in `submit_as` submits one 1-image job at the same moment, each in its own thread
    and database connection. Returns (accepted, refusals)."""
    barrier = threading.Barrier(len(submit_as))
    accepted: list[Job] = []
    refusals: list[Exception] = []
    lock = threading.Lock()

    def submit(name: str) -> None:
        from django.db import connection as thread_connection

        try:
            barrier.wait()
            try:
                job = _submit(personas[name])
            except TooMany as exc:
                with lock:
                    refusals.append(exc)
            else:
                with lock:
                    accepted.append(job)
        finally:
            thread_connection.close()

    threads = [threading.Thread(target=submit, args=(name,)) for name in submit_as]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(accepted), refusals


@pytest.mark.django_db(transaction=True)
def test_eight_concurrent_submissions_take_exactly_the_last_three_images(personas) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("real row locks: PostgreSQL (the cluster mode); SQLite serialises every write anyway")
    _plan(_studio(personas), {"user_images_per_day": 3})
    accepted, refusals = _race(personas, ["alice"] * 8)
    assert (accepted, len(refusals)) == (3, 5)
    assert all(isinstance(exc, QuotaExceeded) and exc.key == "user_images_per_day" for exc in refusals)
    assert Job.objects.filter(owner=personas["alice"]).count() == 3


@pytest.mark.django_db(transaction=True)
def test_eight_concurrent_submissions_fill_the_team_s_queue_exactly(personas) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("real row locks: PostgreSQL (the cluster mode); SQLite serialises every write anyway")
    _plan(_studio(personas), {"tenant_queued_jobs": 3})
    accepted, refusals = _race(personas, ["alice", "bob"] * 4)
    assert (accepted, len(refusals)) == (3, 5)
    assert all(isinstance(exc, TooManyQueuedJobs) and exc.key == "tenant_queued_jobs" for exc in refusals)
    assert Job.objects.filter(tenant=_studio(personas)).count() == 3


def test_a_quota_refusal_on_both_apis_names_the_limit_in_their_shapes(api, personas) -> None:
    _plan(_studio(personas), {"user_images_per_day": 1, "max_steps": 20})
    body = {"prompt": "x", "steps": 4, "width": 64, "height": 64}
    assert api("alice").post("/api/v1/jobs", body).status_code == 201
    native = api("alice").post("/api/v1/jobs", body)
    sdapi = api("alice").post("/sdapi/v1/txt2img", body)
    assert native.status_code == sdapi.status_code == 429
    assert native.json()["field"] == "quota"
    assert native.json()["error"].startswith("quota: quota reached: images per day (user_images_per_day): 1 of 1 used")
    assert "resets at " in native.json()["error"]
    # HTTP's Retry-After: seconds until the tenant's day ends (at most a day and a second)
    assert 1 <= int(native["Retry-After"]) <= 86_401 and 1 <= int(sdapi["Retry-After"]) <= 86_401
    answer = sdapi.json()
    assert set(answer) == {"error", "detail", "body", "errors"} and answer["error"] == "TooManyRequests"
    assert "user_images_per_day" in answer["detail"] and "resets at" in answer["detail"]
    # a request limit: 403 on both, naming the field to fix
    native = api("bob").post("/api/v1/jobs", {**body, "steps": 21})
    sdapi = api("bob").post("/sdapi/v1/txt2img", {**body, "steps": 21})
    assert native.status_code == sdapi.status_code == 403
    assert native.json()["field"] == "steps" and "max_steps" in native.json()["error"]
    assert sdapi.json()["error"] == "PermissionDenied" and "max_steps" in sdapi.json()["detail"]
    # charlie's team has no plan: untouched
    assert api("charlie").post("/api/v1/jobs", body).status_code == 201


def test_the_quota_partial_renders_bars_figures_and_resets_in_the_tenant_s_zone(personas, settings) -> None:
    from django.template.loader import render_to_string

    settings.TIME_ZONE = "UTC"  # the page's zone is not the tenant's: the partial keeps the tenant's
    tenant = _studio(personas)
    tenant.time_zone = "Asia/Tokyo"
    tenant.save()
    _plan(tenant, {"user_images_per_day": 10, "user_gpu_seconds_per_month": 3600, "max_steps": 50})
    alice = personas["alice"]
    _record(alice, images=4, gpu_seconds=12.34)
    html = render_to_string("frontend/_quota_status.html", {"quota_rows": quota_status(alice)})
    assert 'data-key="user_images_per_day"' in html and 'value="4"' in html and 'max="10"' in html
    assert ">12.3<" in html and ">3600.0<" in html  # GPU-seconds to 0.1
    assert "JST" in html and "+09:00" in html and " 00:00 " in html  # midnight in Tokyo
    assert 'data-key="max_steps"' in html
    assert "No limits apply" in render_to_string("frontend/_quota_status.html", {"quota_rows": []})


def test_a_plot_s_cells_are_checked_together_all_or_none(api, personas) -> None:
    from inference.models import JobGroup

    _plan(_studio(personas), {"user_images_per_day": 3})
    body = {"prompt": "a red bicycle", "steps": 2, "width": 64, "height": 64, "seed": 42}
    plot = {"x": {"type": "seed", "values": "1, 2"}, "y": {"type": "steps", "values": "1-2"}}  # 4 cells
    response = api("alice").post("/api/v1/job-groups", {**body, "xyz": plot})
    assert response.status_code == 429 and "user_images_per_day" in response.json()["error"]
    assert not Job.objects.exists() and not JobGroup.objects.exists()
    assert api("alice").post("/api/v1/job-groups", {**body, "xyz": {"x": plot["x"]}}).status_code == 201  # 2 fit
    assert Job.objects.count() == 2
