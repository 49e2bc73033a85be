"""Reads of usage for the usage pages and the operators' dashboard: per day, member, kind and
tenant of a month, queue waits (p50/p95) and worker utilisation.

Each is one or two aggregate queries: the database groups and sums (by day with `TruncDate` in
the tenant's time zone), Python only fills in the days and members that have no records. A
record counts in the day and month its `ended_at` falls in, in the tenant's time zone (UTC for
the platform-wide reads); adjustments count in the sums but are not jobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone

from django.contrib.auth.models import AbstractUser
from django.db.models import Aggregate, Count, FloatField, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from tenants.models import Membership, Tenant, UsageRecord
from tenants.money import month_bounds, parse_month, validate_time_zone, window_bounds


@dataclass(frozen=True)
class UsageTotals:
    """GPU-seconds, images and jobs (records that are not adjustments) of some usage records."""

    gpu_seconds: float = 0.0
    images: int = 0
    jobs: int = 0


@dataclass(frozen=True)
class DayUsage:
    day: date
    totals: UsageTotals


@dataclass(frozen=True)
class MemberUsage:
    username: str
    role: str  # the role's label; "" for someone who has left the tenant since
    totals: UsageTotals


@dataclass(frozen=True)
class KindUsage:
    kind: str
    checkpoint_title: str
    totals: UsageTotals


@dataclass(frozen=True)
class TenantUsage:
    slug: str
    name: str
    totals: UsageTotals


@dataclass(frozen=True)
class QueueWait:
    """The median and 95th percentile of jobs' waits from submission to their first start."""

    label: str  # a day (YYYY-MM-DD) or a tenant's slug
    jobs: int
    p50_seconds: float
    p95_seconds: float


@dataclass(frozen=True)
class WorkerBusy:
    """One worker's busy fraction over a window: Σ GPU-seconds of the jobs it finished in the
    window / the window's length (above 1 only for a worker with several slots)."""

    name: str
    state: str
    slots: int
    jobs: int
    gpu_seconds: float
    busy_fraction: float


@dataclass(frozen=True)
class ActiveJobs:
    slug: str
    queued: int
    dispatched: int
    running: int


def _sums() -> dict[str, Aggregate]:
    return {
        "sum_gpu_seconds": Sum("gpu_seconds"),
        "sum_images": Sum("images"),
        "count_jobs": Count("id", filter=~Q(kind=UsageRecord.ADJUSTMENT)),
    }


def _totals(row: dict | None) -> UsageTotals:
    if not row:
        return UsageTotals()
    return UsageTotals(float(row["sum_gpu_seconds"] or 0.0), int(row["sum_images"] or 0), int(row["count_jobs"] or 0))


def _month_records(month: str, time_zone: str, **filters: object):
    """The records that ended in `month` in `time_zone` (`InvalidPeriod` for a bad month)."""
    start, end = month_bounds(month, time_zone)
    return UsageRecord.objects.filter(ended_at__gte=start, ended_at__lt=end, **filters).order_by()


def current_month(time_zone: str, now: datetime | None = None) -> str:
    """`YYYY-MM` of the month `now` (default: the present) falls in, in `time_zone`."""
    start, _ = window_bounds("month", now or timezone.now(), time_zone)
    return f"{start.year:04d}-{start.month:02d}"


def month_days(month: str) -> list[date]:
    year, number = parse_month(month)
    first = date(year, number, 1)
    following = date(year + (number == 12), number % 12 + 1, 1)
    return [first + timedelta(days=offset) for offset in range((following - first).days)]


def usage_per_day(*, month: str, tenant: Tenant | None = None, user: AbstractUser | None = None) -> list[DayUsage]:
    """Every day of `month` (zeros included) with the usage that ended on it: one member's
    (`user`), a tenant's (`tenant`), or the platform's (neither). Days and the month are the
    tenant's time zone's, UTC for the platform. One query. `InvalidPeriod` for a bad month."""
    time_zone = tenant.time_zone if tenant is not None else "UTC"
    filters: dict[str, object] = {}
    if tenant is not None:
        filters["tenant"] = tenant
    if user is not None:
        filters["user"] = user
    rows = (
        _month_records(month, time_zone, **filters)
        .annotate(day=TruncDate("ended_at", tzinfo=validate_time_zone(time_zone)))
        .values("day")
        .annotate(**_sums())
    )
    by_day = {row["day"]: _totals(row) for row in rows}
    return [DayUsage(day, by_day.get(day, UsageTotals())) for day in month_days(month)]


def usage_month_totals(*, month: str, tenant: Tenant, user: AbstractUser | None = None) -> UsageTotals:
    """The month's sums for `tenant`, or for its member `user`. One query."""
    filters: dict[str, object] = {"tenant": tenant} if user is None else {"tenant": tenant, "user": user}
    return _totals(_month_records(month, tenant.time_zone, **filters).aggregate(**_sums()))


def usage_per_member(*, month: str, tenant: Tenant) -> list[MemberUsage]:
    """Every member of `tenant` (zeros included), and anyone who has left it but has records in
    `month`, with their usage that month, by username. Two queries."""
    rows = {
        row["user__username"]: _totals(row)
        for row in _month_records(month, tenant.time_zone, tenant=tenant).values("user__username").annotate(**_sums())
    }
    members = [
        MemberUsage(m.user.get_username(), m.get_role_display(), rows.pop(m.user.get_username(), UsageTotals()))
        for m in Membership.objects.filter(tenant=tenant).select_related("user").order_by("user__username")
    ]
    return sorted(members + [MemberUsage(name, "", totals) for name, totals in rows.items()],
                  key=lambda row: row.username)


def usage_per_kind(*, month: str, tenant: Tenant, user: AbstractUser | None = None) -> list[KindUsage]:
    """The month's usage by job kind and checkpoint (adjustments as kind "adjustment"), most
    GPU-seconds first. One query."""
    filters: dict[str, object] = {"tenant": tenant} if user is None else {"tenant": tenant, "user": user}
    rows = (
        _month_records(month, tenant.time_zone, **filters)
        .values("kind", "checkpoint_title")
        .annotate(**_sums())
    )
    usage = [KindUsage(row["kind"], row["checkpoint_title"], _totals(row)) for row in rows]
    return sorted(usage, key=lambda row: (-row.totals.gpu_seconds, row.kind, row.checkpoint_title))


def usage_per_tenant(*, month: str) -> list[TenantUsage]:
    """Every tenant (zeros included, by slug) with its usage in `month` (UTC: the operators'
    view across time zones). Two queries."""
    rows = {
        row["tenant"]: _totals(row)
        for row in _month_records(month, "UTC").values("tenant").annotate(**_sums())
    }
    return [TenantUsage(tenant.slug, tenant.name, rows.get(tenant.pk, UsageTotals()))
            for tenant in Tenant.objects.order_by("slug")]


class Percentile(Aggregate):
    """PostgreSQL's `percentile_cont` (linear interpolation between the two nearest values);
    on SQLite the same computation, registered on the connection as an aggregate function."""

    function = "PERCENTILE_CONT"
    name = "Percentile"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: str, fraction: float, **extra: object) -> None:
        fraction = float(fraction)
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("a percentile is a fraction from 0 to 1")
        super().__init__(expression, fraction=repr(fraction), **extra)

    def as_sqlite(self, compiler, connection, **extra_context):
        connection.ensure_connection()
        connection.connection.create_aggregate("ATELIER_PERCENTILE", 2, _SqlitePercentile)
        return self.as_sql(compiler, connection, template="ATELIER_PERCENTILE(%(expressions)s, %(fraction)s)",
                           **extra_context)


class _SqlitePercentile:
    """`percentile_cont` as an SQLite aggregate (its step and finalize protocol)."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.fraction = 0.5

    def step(self, value: float | None, fraction: float) -> None:
        self.fraction = fraction
        if value is not None:
            self.values.append(float(value))

    def finalize(self) -> float | None:
        if not self.values:
            return None
        ordered = sorted(self.values)
        position = self.fraction * (len(ordered) - 1)
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _waits() -> dict[str, Aggregate]:
    return {"jobs": Count("id"), "p50": Percentile("queue_wait_seconds", 0.5),
            "p95": Percentile("queue_wait_seconds", 0.95)}


def queue_wait_per_day(*, month: str) -> list[QueueWait]:
    """p50/p95 of the queue waits of the jobs that ended on each day of `month` (UTC), days
    without jobs included (zeros). One query."""
    rows = {
        row["day"]: row
        for row in _month_records(month, "UTC").exclude(kind=UsageRecord.ADJUSTMENT)
        .annotate(day=TruncDate("ended_at", tzinfo=dt_timezone.utc)).values("day").annotate(**_waits())
    }
    return [
        QueueWait(day.isoformat(), rows[day]["jobs"], rows[day]["p50"] or 0.0, rows[day]["p95"] or 0.0)
        if day in rows else QueueWait(day.isoformat(), 0, 0.0, 0.0)
        for day in month_days(month)
    ]


def queue_wait_per_tenant(*, month: str) -> list[QueueWait]:
    """p50/p95 of the queue waits of each tenant's jobs that ended in `month` (UTC), tenants with
    jobs only, by slug. One query."""
    rows = (
        _month_records(month, "UTC").exclude(kind=UsageRecord.ADJUSTMENT)
        .values("tenant__slug").annotate(**_waits()).order_by("tenant__slug")
    )
    return [QueueWait(row["tenant__slug"], row["jobs"], row["p50"] or 0.0, row["p95"] or 0.0) for row in rows]


def worker_utilisation(*, since: datetime, until: datetime) -> list[WorkerBusy]:
    """Every worker (by name) with the jobs it finished between `since` and `until` and its busy
    fraction over that window. Two queries."""
    from inference.models import Job, Worker

    window = max((until - since).total_seconds(), 1e-9)
    rows = {
        row["worker"]: row
        for row in Job.objects.filter(worker__isnull=False, finished_at__gte=since, finished_at__lt=until)
        .order_by().values("worker").annotate(jobs=Count("id"), gpu_seconds=Sum("gpu_seconds"))
    }
    busy = []
    for worker in Worker.objects.order_by("name"):
        row = rows.get(worker.pk, {})
        gpu_seconds = float(row.get("gpu_seconds") or 0.0)
        busy.append(WorkerBusy(worker.name, worker.get_state_display(), worker.slots, int(row.get("jobs") or 0),
                               gpu_seconds, gpu_seconds / window))
    return busy


def active_jobs_per_tenant() -> list[ActiveJobs]:
    """The jobs queued, dispatched and running now, per tenant that has any, by slug. One query."""
    from inference.models import Job

    counts: dict[str, dict[str, int]] = {}
    for row in (Job.objects.filter(status__in=Job.ACTIVE).order_by()
                .values("tenant__slug", "status").annotate(jobs=Count("id"))):
        counts.setdefault(row["tenant__slug"], {})[row["status"]] = row["jobs"]
    return [
        ActiveJobs(slug, by_status.get(Job.Status.QUEUED, 0), by_status.get(Job.Status.DISPATCHED, 0),
                   by_status.get(Job.Status.RUNNING, 0))
        for slug, by_status in sorted(counts.items())
    ]
