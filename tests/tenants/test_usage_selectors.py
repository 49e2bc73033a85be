"""`tenants/usage_selectors.py`: the database groups and sums (one or two queries each, whatever
the number of records), days follow the tenant's time zone across a DST change, and percentiles
are `percentile_cont`'s on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.utils import timezone

from inference.transitions import worker_register
from tenants.models import Tenant, UsageRecord
from tenants.usage_selectors import (
    Percentile,
    active_jobs_per_tenant,
    current_month,
    month_days,
    queue_wait_per_day,
    queue_wait_per_tenant,
    usage_month_totals,
    usage_per_day,
    usage_per_kind,
    usage_per_member,
    usage_per_tenant,
    worker_utilisation,
)
from tests.frontend.usage_records import Recorder

pytestmark = pytest.mark.django_db


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=dt_timezone.utc)


@pytest.fixture
def recorder(tiny_checkpoint_path) -> Recorder:
    return Recorder()


def test_each_read_is_one_or_two_queries_however_many_records(personas, recorder, django_assert_num_queries) -> None:
    alice, bob, charlie = personas["alice"], personas["bob"], personas["charlie"]
    for day in range(1, 13):
        for user in (alice, bob, charlie):
            recorder.add(user, ended_at=utc(2026, 11, day, 12), gpu_seconds=day, images=1, queue_wait_seconds=day)
    studio_a = alice.membership.tenant
    now = timezone.now()
    worker_register(name="gpu0@h", device="cpu", device_memory_bytes=None)
    for read, queries in (
        (lambda: usage_per_day(month="2026-11", tenant=studio_a, user=alice), 1),
        (lambda: usage_per_day(month="2026-11", tenant=studio_a), 1),
        (lambda: usage_per_day(month="2026-11"), 1),
        (lambda: usage_month_totals(month="2026-11", tenant=studio_a), 1),
        (lambda: usage_per_kind(month="2026-11", tenant=studio_a, user=bob), 1),
        (lambda: usage_per_member(month="2026-11", tenant=studio_a), 2),
        (lambda: usage_per_tenant(month="2026-11"), 2),
        (lambda: queue_wait_per_day(month="2026-11"), 1),
        (lambda: queue_wait_per_tenant(month="2026-11"), 1),
        (lambda: worker_utilisation(since=now - timedelta(days=1), until=now), 2),
        (lambda: active_jobs_per_tenant(), 1),
    ):
        with django_assert_num_queries(queries):
            read()
    assert sum(day.totals.gpu_seconds for day in usage_per_day(month="2026-11")) == 3 * sum(range(1, 13))
    assert usage_per_day(month="2026-11")[11].totals.jobs == 3


def test_days_follow_the_tenants_zone_across_a_dst_change(personas, recorder) -> None:
    """Berlin leaves summer time on 25 October 2026: 22:30 UTC on the 24th is 00:30 on the 25th
    there (UTC+2), and 23:30 UTC on the 25th is 00:30 on the 26th (UTC+1)."""
    Tenant.objects.filter(slug="studio-a").update(time_zone="Europe/Berlin")
    alice = personas["alice"]
    alice.membership.refresh_from_db()
    recorder.add(alice, ended_at=utc(2026, 10, 24, 22, 30), gpu_seconds=1.0, images=1)
    recorder.add(alice, ended_at=utc(2026, 10, 25, 23, 30), gpu_seconds=2.0, images=1)
    recorder.add(alice, ended_at=utc(2026, 9, 30, 22, 30), gpu_seconds=4.0, images=1)  # 1 October there
    recorder.add(alice, ended_at=utc(2026, 10, 31, 23, 30), gpu_seconds=8.0, images=1)  # 1 November there
    days = {day.day.isoformat(): day.totals.gpu_seconds for day in
            usage_per_day(month="2026-10", tenant=alice.membership.tenant)}
    assert (days["2026-10-24"], days["2026-10-25"], days["2026-10-26"]) == (0, 1.0, 2.0)
    assert days["2026-10-01"] == 4.0 and days["2026-10-31"] == 0 and len(days) == 31
    assert usage_month_totals(month="2026-10", tenant=alice.membership.tenant).gpu_seconds == 7.0
    assert current_month("Europe/Berlin", utc(2026, 10, 31, 23, 30)) == "2026-11"
    assert current_month("UTC", utc(2026, 10, 31, 23, 30)) == "2026-10"
    assert [day.isoformat() for day in month_days("2028-02")][-1] == "2028-02-29"


def test_members_who_left_and_adjustments_are_counted(personas, recorder) -> None:
    from tenants.models import Membership

    alice, bob = personas["alice"], personas["bob"]
    recorder.add(bob, ended_at=utc(2026, 11, 2), gpu_seconds=5.0, images=2)
    Recorder.adjust(alice, ended_at=utc(2026, 11, 3), gpu_seconds=-1.5, images=-1, by=personas["admin"])
    studio_a = alice.membership.tenant
    Membership.objects.filter(user=bob).update(tenant=Tenant.objects.get(slug="studio-b"))  # bob moved teams
    rows = {row.username: row for row in usage_per_member(month="2026-11", tenant=studio_a)}
    assert rows["bob"].role == "" and rows["bob"].totals.gpu_seconds == 5.0 and rows["bob"].totals.jobs == 1
    assert (rows["alice"].totals.gpu_seconds, rows["alice"].totals.images, rows["alice"].totals.jobs) == (-1.5, -1, 0)
    kinds = {row.kind: row.totals for row in usage_per_kind(month="2026-11", tenant=studio_a)}
    assert kinds[UsageRecord.ADJUSTMENT].gpu_seconds == -1.5 and kinds["txt2img"].images == 2


def test_percentiles_interpolate_between_the_nearest_values(personas, recorder) -> None:
    alice = personas["alice"]
    for wait in (10.0, 0.0, 30.0, 20.0):
        recorder.add(alice, ended_at=utc(2026, 11, 5), gpu_seconds=1.0, images=1, queue_wait_seconds=wait)
    row = UsageRecord.objects.aggregate(
        p0=Percentile("queue_wait_seconds", 0), p50=Percentile("queue_wait_seconds", 0.5),
        p95=Percentile("queue_wait_seconds", 0.95), p100=Percentile("queue_wait_seconds", 1),
    )
    assert row == pytest.approx({"p0": 0.0, "p50": 15.0, "p95": 28.5, "p100": 30.0})
    assert UsageRecord.objects.filter(pk__lt=0).aggregate(p=Percentile("queue_wait_seconds", 0.5)) == {"p": None}
    with pytest.raises(ValueError):
        Percentile("queue_wait_seconds", 95)
