"""What a member has used of each limit in force, for pages (`frontend/_quota_status.html`)."""

from __future__ import annotations

import dataclasses
import datetime as dt

from django.contrib.auth.models import AbstractUser

from tenants.limits import CONCURRENCY_KEYS, LABELS, RATE_KEYS, REQUEST_KEYS
from tenants.models import Membership
from tenants.quotas.terms import terms_for_membership
from tenants.quotas.usage import metric_of, usage_for, window_of


@dataclasses.dataclass(frozen=True)
class QuotaStatus:
    """One limit in force and how much of it is used now (for pages: `_quota_status.html`)."""

    key: str
    label: str
    used: float | None  # None for a request limit (nothing is used up)
    limit: float
    resets_at: dt.datetime | None  # a window's next start, in the tenant's zone; None otherwise

    @property
    def fraction(self) -> float:
        if self.used is None or self.limit <= 0:
            return 1.0 if self.limit <= 0 else 0.0
        return min(self.used / self.limit, 1.0)

    @property
    def percent(self) -> int:
        return round(self.fraction * 100)

    @property
    def is_gpu_seconds(self) -> bool:
        return "_gpu_seconds_" in self.key


def quota_status(user: AbstractUser, *, now: dt.datetime | None = None) -> list[QuotaStatus]:
    """Each limit in force for `user` with what is used of it now (for pages), in `ALL_KEYS`'s
    order: rate windows (used counts unfinished jobs, as the check does), caps, request limits."""
    membership = Membership.objects.select_related("tenant").filter(user=user).first()
    if membership is None:
        return []
    terms = terms_for_membership(membership, at=now)
    if not terms.limits.values:
        return []
    usage = usage_for(user.pk, membership.tenant, terms.limits.values.keys(), now=now)
    rows: list[QuotaStatus] = []
    zone = terms.time_zone
    from tenants.money import validate_time_zone

    for key in (*RATE_KEYS, *CONCURRENCY_KEYS, *REQUEST_KEYS):
        limit = terms.limits.get(key)
        if limit is None:
            continue
        used: float | None
        resets: dt.datetime | None = None
        if key in RATE_KEYS:
            scope, metric = key.split("_", 1)[0], metric_of(key)
            used = usage.used.get(key, 0.0) + getattr(
                usage, f"{scope}_{'images' if metric == 'images' else 'gpu'}_in_flight")
            resets = usage.windows[window_of(key)][1].astimezone(validate_time_zone(zone))
        elif key in CONCURRENCY_KEYS:
            used = float({
                "user_queued_jobs": usage.user_waiting, "tenant_queued_jobs": usage.tenant_waiting,
                "user_running_jobs": usage.user_running, "tenant_running_jobs": usage.tenant_running,
            }[key])
        else:
            used = None
        rows.append(QuotaStatus(key=key, label=LABELS[key], used=used, limit=limit, resets_at=resets))
    return rows
