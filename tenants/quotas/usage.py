"""What a member and their team have used of each rate window, and what their unfinished jobs hold."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from typing import Any

from django.utils import timezone

from tenants.limits import RATE_KEYS, WINDOWS
from tenants.models import Tenant, UsageRecord
from tenants.money import window_bounds

WAITING = ("queued", "dispatched")  # Job.Status values of jobs not yet running
ACTIVE = ("queued", "dispatched", "running")


def window_of(key: str) -> str:
    return key.rsplit("_per_", 1)[1]


def metric_of(key: str) -> str:
    return "gpu_seconds" if "_gpu_seconds_" in key else "images"


@dataclasses.dataclass
class Usage:
    """Used and in-flight amounts of one member and their team, for the keys asked."""

    used: dict[str, float]  # rate key → Σ records in its window
    windows: dict[str, tuple[dt.datetime, dt.datetime]]  # window name → (start, reset) in the tenant's zone
    user_waiting: int = 0
    tenant_waiting: int = 0
    user_running: int = 0
    tenant_running: int = 0
    user_images_in_flight: int = 0
    tenant_images_in_flight: int = 0
    user_gpu_in_flight: float = 0.0
    tenant_gpu_in_flight: float = 0.0
    gpu_per_pixel_step: float = 0.0  # the tenant's, over the records read (0: none yet)


def usage_for(user_id: int, tenant: Tenant, keys: Iterable[str], *, now: dt.datetime | None = None,
              include_waiting: bool = True) -> Usage:
    """What member `user_id` and their `tenant` have used of each rate key in `keys` (one aggregate
    query), and what their unfinished jobs hold (one query; without `include_waiting`, only the
    dispatched and running ones are counted in flight, the queued ones only in the counts)."""
    from inference.metering import job_pixel_steps
    from inference.models import Job

    now = now or timezone.now()
    keys = list(keys)
    rate_keys = [key for key in keys if key in RATE_KEYS]
    windows = {window: window_bounds(window, now, tenant.time_zone or "UTC")
               for window in WINDOWS if any(window_of(key) == window for key in rate_keys)}
    used: dict[str, float] = {}
    gpu_per_pixel_step = 0.0
    needs_gpu = any(metric_of(key) == "gpu_seconds" for key in rate_keys)
    if rate_keys:
        used, gpu_per_pixel_step = _window_sums(user_id, tenant, rate_keys, windows, with_rate=needs_gpu)
    usage = Usage(used=used, windows=windows)
    fields = ["pk", "owner_id", "status", "kind", "seeds", "total_steps"] + (["params"] if needs_gpu else [])
    usage.gpu_per_pixel_step = gpu_per_pixel_step
    for values in Job.objects.filter(tenant=tenant, status__in=ACTIVE).values_list(*fields):
        row = dict(zip(fields, values, strict=True))
        mine = row["owner_id"] == user_id
        if row["status"] == "running":
            usage.tenant_running += 1
            usage.user_running += mine
        else:
            usage.tenant_waiting += 1
            usage.user_waiting += mine
            if row["status"] == "queued" and not include_waiting:
                continue
        images = images_of(row["kind"], row["seeds"], row["total_steps"])
        gpu = job_pixel_steps(row["kind"], row["params"]) * gpu_per_pixel_step if needs_gpu else 0.0
        usage.tenant_images_in_flight += images
        usage.tenant_gpu_in_flight += gpu
        if mine:
            usage.user_images_in_flight += images
            usage.user_gpu_in_flight += gpu
    return usage


def _window_sums(
    user_id: int, tenant: Tenant, rate_keys: list[str], windows: dict[str, tuple[dt.datetime, dt.datetime]],
    *, with_rate: bool,
) -> tuple[dict[str, float], float]:
    """Σ of each rate key's metric over the tenant's records in its window (the user's own for a
    `user_` key), and the tenant's GPU-seconds per pixel-step over the records read: ONE query.

    Written as SQL: the ORM spelling (a `Sum(Case(When(...)))` per key) cost several milliseconds
    of expression building per submit with every limit set (`bench/quota_check.py`)."""
    from django.db import connection

    ops = connection.ops
    table = connection.ops.quote_name(UsageRecord._meta.db_table)
    columns, params = [], []
    for key in rate_keys:
        mine = key.startswith("user_")
        columns.append(f"SUM(CASE WHEN ended_at >= %s{' AND user_id = %s' if mine else ''} "
                       f"THEN {metric_of(key)} ELSE 0 END)")
        params.append(ops.adapt_datetimefield_value(windows[window_of(key)][0]))
        if mine:
            params.append(user_id)
    if with_rate:
        columns += ["SUM(CASE WHEN pixel_steps > 0 THEN gpu_seconds ELSE 0 END)", "SUM(pixel_steps)"]
    earliest = min(start for start, _ in windows.values())
    params += [tenant.pk, ops.adapt_datetimefield_value(earliest)]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(columns)} FROM {table} WHERE tenant_id = %s AND ended_at >= %s", params)
        row = cursor.fetchone()
    used = {key: float(value or 0) for key, value in zip(rate_keys, row, strict=False)}
    rate = 0.0
    if with_rate and row[-1]:
        rate = float(row[-2] or 0) / float(row[-1])
    return used, rate


def images_of(kind: str, seeds: Any, total_steps: int) -> int:
    """Images an unfinished job will keep: one per seed for a generation, one per input for Extras."""
    if kind in ("txt2img", "img2img"):
        return len(seeds or [])
    if kind == "extras":
        return int(total_steps or 0)  # one step per image
    return 0
