"""`/api/v1/usage` and the home page count this month as the bill does: by end time, in the
tenant's time zone, adjustments included (an adjustment has no job and must not break them)."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from tenants.models import Tenant
from tests.tenants.usage_helpers import adjustment, job_record


def test_this_months_usage_is_by_end_time_in_the_tenants_zone_with_adjustments(api, personas) -> None:
    alice = personas["alice"]
    tenant = Tenant.objects.get(slug="studio-a")
    tenant.time_zone = "Pacific/Kiritimati"  # UTC+14: where a month begins before anywhere else
    tenant.save(update_fields=["time_zone"])
    zone = tenant.time_zone
    now = timezone.localtime(timezone.now(), dt.timezone(dt.timedelta(hours=14)))
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    job_record(alice, ended=month_start + dt.timedelta(minutes=1), gpu_seconds=10, images=2)
    job_record(alice, ended=month_start - dt.timedelta(minutes=1), gpu_seconds=99, images=9)  # last month there
    adjustment(alice, ended=month_start + dt.timedelta(minutes=2), gpu_seconds=-4, images=-1,
               reason="refund", by=personas["admin"])
    answer = api("alice").get("/api/v1/usage")
    assert answer.status_code == 200, (zone, answer.content)
    body = answer.json()
    assert (body["gpu_seconds"], body["images"]) == (6, 1)
    kinds = sorted((record["kind"], record["job"] is None) for record in body["records"])
    assert kinds == [("adjustment", True), ("txt2img", False)]
