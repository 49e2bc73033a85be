"""Usage records for the billing tests: jobs of the real `Job` model and their records, written
directly (how the metering writes records is its own tests' business), plus plans and prices."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from decimal import Decimal

from inference.models import Job
from tenants.models import Plan, PlanPrice, Tenant, TenantPlan, UsageRecord

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")


def at(text: str, zone: dt.tzinfo = SHANGHAI) -> dt.datetime:
    """`at("2026-11-01 00:05")`: an aware datetime in `zone` (Shanghai by default)."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=zone)


def job_record(user, *, ended: dt.datetime, gpu_seconds: float, images: int, started: dt.datetime | None = None,
               status: str = "succeeded", checkpoint: str = "sd15-base", service: str = "") -> UsageRecord:
    tenant = Tenant.objects.get(memberships__user=user)
    job = Job.objects.create(
        owner=user, tenant=tenant, params={}, checkpoint_title=checkpoint, checkpoint_path="x.safetensors",
        checkpoint_sha256="0" * 64, model_key="k", batch_key="b", status=status, gpu_seconds=gpu_seconds,
        started_at=started, finished_at=ended,
    )
    return UsageRecord.objects.create(
        job=job, user=user, tenant=tenant, kind=job.kind, service_name=service, checkpoint_title=checkpoint,
        gpu_seconds=gpu_seconds, images=images, pixel_steps=images * 64 * 64 * 20, status=status,
        started_at=started, ended_at=ended, queue_wait_seconds=1.5,
    )


def adjustment(user, *, ended: dt.datetime, gpu_seconds: float, images: int, reason: str, by) -> UsageRecord:
    tenant = Tenant.objects.get(memberships__user=user)
    return UsageRecord.objects.create(
        user=user, tenant=tenant, kind=UsageRecord.ADJUSTMENT, gpu_seconds=gpu_seconds, images=images,
        status="adjustment", ended_at=ended, reason=reason, created_by=by,
    )


def plan(tenant: Tenant, *, slug: str = "pro", since: dt.datetime, mode: str = Plan.BillingMode.GENERATION_TIME,
         currency: str = "USD") -> Plan:
    the_plan = Plan.objects.create(slug=slug, name=slug.title(), currency=currency, billing_mode=mode)
    TenantPlan.objects.create(tenant=tenant, plan=the_plan, effective_from=since)
    return the_plan


def price(the_plan: Plan, *, since: dt.datetime, per_hour: str = "0", per_image: str = "0", gpu_free: int = 0,
          images_free: int = 0, fee: str = "0") -> PlanPrice:
    return PlanPrice.objects.create(
        plan=the_plan, effective_from=since, price_per_gpu_hour=Decimal(per_hour), price_per_image=Decimal(per_image),
        included_gpu_seconds=gpu_free, included_images=images_free, monthly_fee=Decimal(fee),
    )


def november_of_studio_a(personas) -> dict:
    """Studio-a in Shanghai on plan "pro": 2.50/GPU-hour and 0.010/image with 3600 GPU-s and 10 images
    included and a 20.00 fee, then from 15 November 3.00 and 0.020. The records (hand-priced in
    test_statements.py): a job straddling midnight into 1 November (October in UTC), jobs on both
    prices, a refund adjustment, and one record either side of the month."""
    alice, bob, admin = personas["alice"], personas["bob"], personas["admin"]
    tenant = Tenant.objects.get(slug="studio-a")
    tenant.time_zone = "Asia/Shanghai"
    tenant.save(update_fields=["time_zone"])
    pro = plan(tenant, since=at("2026-01-01 00:00"))
    price(pro, since=at("2026-01-01 00:00"), per_hour="2.50", per_image="0.010", gpu_free=3600, images_free=10, fee="20.00")
    price(pro, since=at("2026-11-15 00:00"), per_hour="3.00", per_image="0.020", gpu_free=0, fee="99.00")
    return {
        "tenant": tenant, "plan": pro,
        "october": job_record(alice, ended=at("2026-10-31 23:59"), gpu_seconds=50, images=1),
        "straddling": job_record(bob, started=at("2026-10-31 23:55"), ended=at("2026-11-01 00:05"), gpu_seconds=600, images=2),
        "r2": job_record(alice, ended=at("2026-11-02 10:00"), gpu_seconds=1800, images=4),
        "r3": job_record(bob, ended=at("2026-11-10 12:00"), gpu_seconds=2700.5, images=8),
        "r4": job_record(alice, ended=at("2026-11-20 08:00"), gpu_seconds=1000.25, images=3),
        "r5": job_record(alice, started=at("2026-11-30 23:40"), ended=at("2026-11-30 23:50"), gpu_seconds=10, images=1),
        "adjustment": adjustment(bob, ended=at("2026-11-25 09:00"), gpu_seconds=-100, images=-1,
                                 reason="refund of a failed batch", by=admin),
        "december": job_record(bob, started=at("2026-11-30 23:50"), ended=at("2026-12-01 00:10"), gpu_seconds=70, images=1),
    }
