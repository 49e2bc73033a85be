"""Quotas: which limits are in force for a member, and checking a job against them.

The limits in force for a member are their tenant's current plan's (`Plan.limits`, the
`TenantPlan` effective now; no plan: no limits) tightened by their own (`Membership.limits`), in
the vocabulary of `tenants/limits.py`. They are checked three times:

- **Request limits** (`max_pixels`, `max_steps`, `max_batch_size`): at submit, a `Forbidden` (403)
  naming the limit: the same request can never pass, so it is not "try later".
- **Rate windows** (`*_images_per_*`, `*_gpu_seconds_per_*`, calendar minute / hour / day / month in
  the tenant's time zone, `tenants.money.window_bounds`) and the **queued caps**
  (`user_queued_jobs`, `tenant_queued_jobs`): at submit, a `QuotaExceeded` (`TooMany`, 429) naming
  the limit, the used and limit figures and when it resets (ISO time in the tenant's zone).
  Used = Σ `UsageRecord` ended in the window, plus what the member's (for `tenant_*`, the
  team's) queued, dispatched and running jobs will use: their images, and for GPU-seconds an
  estimate (their pixel-steps × the tenant's GPU-seconds per pixel-step in the records read; 0
  before the tenant has any). An image limit is refused when this job's images would pass it; a
  GPU-seconds limit when nothing is left of it (a job's time is known only once it ran).
- **At dispatch** (`inference/dispatch.py`): `user_running_jobs` / `tenant_running_jobs` hold a job
  queued until a slot frees (an input to the scheduler's pure policy), and a job whose owner is
  over a rate window by then (a limit lowered, or GPU time that ran over its estimate) fails with
  the same message instead of running (`dispatch_refusal`).

Bound on overshoot: images never pass a limit (the check counts in-flight images and is
serialised per tenant). GPU-seconds can pass a limit by what the jobs admitted while some was
left use beyond their estimate: at most the GPU time of the jobs in flight when the last one was
admitted (with `user_running_jobs` set, of that many running jobs); the dispatch re-check stops
anything still queued once the limit is reached.

Concurrency: `quota_check` runs in the transaction that inserts the job and first locks the
tenant's row (`SELECT … FOR UPDATE`), so two submissions of one team are checked one after the
other and the second sees the first's job: it costs that lock, one aggregate over the usage
records and one read of the team's unfinished jobs, and nothing beyond one plan lookup when
neither the plan nor the member has a rate or queue limit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import AbstractUser
from django.db.models import JSONField, OuterRef, Subquery
from django.utils import timezone

from a1111.errors import Forbidden, TooMany
from tenants.limits import CONCURRENCY_KEYS, LABELS, RATE_KEYS, REQUEST_KEYS, WINDOWS, Limits
from tenants.models import Membership, Plan, Tenant, TenantPlan, UsageRecord
from tenants.money import window_bounds

QUEUED_KEYS = ("user_queued_jobs", "tenant_queued_jobs")
RUNNING_KEYS = ("user_running_jobs", "tenant_running_jobs")
WAITING = ("queued", "dispatched")  # Job.Status values of jobs not yet running
ACTIVE = ("queued", "dispatched", "running")


class QuotaExceeded(TooMany):
    """A rate window or queued cap is full for now (429). `key` names the limit; `resets_at` is
    when the window starts again (None for a cap: when a job ends); `retry_after` in seconds."""

    def __init__(self, message: str, *, key: str, used: float, limit: float, resets_at: dt.datetime | None) -> None:
        super().__init__(message, field="quota")
        self.key, self.used, self.limit, self.resets_at = key, used, limit, resets_at
        self.retry_after = max(int((resets_at - timezone.now()).total_seconds()) + 1, 1) if resets_at else None

    @property
    def waits(self) -> bool:
        """A queued cap: the job may be submitted as soon as another ends (an EAS item waits)."""
        return self.key in QUEUED_KEYS


class RequestOverLimit(Forbidden):
    """A request over one of the member's request limits (403: sent again, it is refused again)."""


@dataclasses.dataclass(frozen=True)
class Terms:
    """What applies to a member now: their limits in force and the checkpoints the plan allows."""

    limits: Limits
    allowed_checkpoints: tuple[str, ...]
    time_zone: str
    plan_id: int | None = None
    has_model_rules: bool = False  # whether a team admin's model access rule applies to the member


@dataclasses.dataclass(frozen=True)
class Demand:
    """What one job asks for, as the limits count it."""

    images: int = 0
    pixels: int = 0  # width × height of one image
    steps: int = 0
    pixel_steps: int = 0


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


def plan_in_force(tenant: Tenant, at: dt.datetime | None = None) -> Plan | None:
    """The plan `tenant` is on at `at` (now): its latest `TenantPlan` from then or before."""
    assignment = (
        TenantPlan.objects.select_related("plan").filter(tenant=tenant, effective_from__lte=at or timezone.now())
        .order_by("-effective_from").first()
    )
    return assignment.plan if assignment else None


def terms_for_membership(membership: Membership, *, at: dt.datetime | None = None) -> Terms:
    """The member's plan limits tightened by their own, the plan's allowed checkpoints, and whether
    any model access rule applies to them (`tenants/access.py`): ONE query, so a submit with no
    limits and no rules costs that query alone."""
    from tenants.access import member_rules_exist, json_value

    assignments = TenantPlan.objects.filter(tenant=OuterRef("pk"), effective_from__lte=at or timezone.now()).order_by(
        "-effective_from")
    row = (
        Tenant.objects.filter(pk=membership.tenant_id)
        .annotate(plan_id=Subquery(assignments.values("plan_id")[:1]),
                  plan_limits=Subquery(assignments.values("plan__limits")[:1], output_field=JSONField()),
                  plan_patterns=Subquery(assignments.values("plan__allowed_checkpoints")[:1], output_field=JSONField()),
                  has_rules=member_rules_exist(membership.user_id))
        .values_list("plan_id", "plan_limits", "plan_patterns", "has_rules").first()
    )
    plan_id, plan_limits, patterns, has_rules = row or (None, None, None, False)
    limits = Limits.from_json(json_value(plan_limits) or {}) if plan_id else Limits()
    return Terms(
        limits=limits.tightened_by(Limits.from_json(membership.limits or {})),
        allowed_checkpoints=tuple(str(p) for p in json_value(patterns) or ()) if plan_id else (),
        time_zone=membership.tenant.time_zone or "UTC",
        plan_id=plan_id,
        has_model_rules=bool(has_rules),
    )


def demand_of(request: Any) -> Demand:
    """What a request asks for: a `GenerationRequest`, or an Extras / promptgen / interrogate one."""
    from inference.metering import request_pixel_steps

    kind = getattr(request, "kind", None)
    if kind in ("txt2img", "img2img"):
        width, height = request.width, request.height
        if request.hires:
            width, height = max(width, request.hr_width), max(height, request.hr_height)
        return Demand(images=request.image_count, pixels=width * height, steps=request.steps,
                      pixel_steps=request_pixel_steps(request))
    sizes = getattr(request, "sizes", None)
    if sizes is not None:  # Extras: one output per input image
        return Demand(images=len(sizes), pixels=max((w * h for w, h in sizes), default=0),
                      pixel_steps=sum(w * h for w, h in sizes))
    return Demand()  # promptgen, interrogate: no images kept


def check_request_limits(limits: Limits, demand: Demand) -> None:
    """`RequestOverLimit` (403) for a request over `max_pixels`, `max_steps` or `max_batch_size`."""
    figures = {"max_pixels": demand.pixels, "max_steps": demand.steps, "max_batch_size": demand.images}
    fields = {"max_pixels": "width", "max_steps": "steps", "max_batch_size": "batch_size"}
    for key in REQUEST_KEYS:
        bound = limits.get(key)
        if bound is not None and figures[key] > bound:
            raise RequestOverLimit(
                f"over your limit of {LABELS[key]}: this request asks for {figures[key]:,}, the limit is {bound:,.0f} "
                f"({key}); send a smaller request or ask your team's admin", field=fields[key],
            )


def _window_of(key: str) -> str:
    return key.rsplit("_per_", 1)[1]


def _metric_of(key: str) -> str:
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
               for window in WINDOWS if any(_window_of(key) == window for key in rate_keys)}
    used: dict[str, float] = {}
    gpu_per_pixel_step = 0.0
    needs_gpu = any(_metric_of(key) == "gpu_seconds" for key in rate_keys)
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
        images = _images_of(row["kind"], row["seeds"], row["total_steps"])
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
                       f"THEN {_metric_of(key)} ELSE 0 END)")
        params.append(ops.adapt_datetimefield_value(windows[_window_of(key)][0]))
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


def _images_of(kind: str, seeds: Any, total_steps: int) -> int:
    """Images an unfinished job will keep: one per seed for a generation, one per input for Extras."""
    if kind in ("txt2img", "img2img"):
        return len(seeds or [])
    if kind == "extras":
        return int(total_steps or 0)  # one step per image
    return 0


def _local(moment: dt.datetime, time_zone: str) -> str:
    from tenants.money import validate_time_zone

    return moment.astimezone(validate_time_zone(time_zone)).isoformat(timespec="seconds")


def _figure(key: str, value: float) -> str:
    return f"{value:,.1f}" if _metric_of(key) == "gpu_seconds" and key in RATE_KEYS else f"{value:,.0f}"


def _rate_refusal(key: str, used: float, limit: float, usage: Usage, time_zone: str, extra: str = "") -> QuotaExceeded:
    resets = usage.windows[_window_of(key)][1]
    return QuotaExceeded(
        f"quota reached: {LABELS[key]} ({key}): {_figure(key, used)} of {_figure(key, limit)} used{extra}; "
        f"resets at {_local(resets, time_zone)}",
        key=key, used=used, limit=limit, resets_at=resets,
    )


def check_rates(terms: Terms, usage: Usage, demand: Demand | None) -> None:
    """`QuotaExceeded` for the first rate window with no room for a job asking `demand` (None: a
    job already counted in flight, re-checked at dispatch: refused only once a limit is passed)."""
    for key in RATE_KEYS:
        limit = terms.limits.get(key)
        if limit is None:
            continue
        scope, metric = ("user" if key.startswith("user_") else "tenant"), _metric_of(key)
        in_flight = getattr(usage, f"{scope}_{'images' if metric == 'images' else 'gpu'}_in_flight")
        used = usage.used.get(key, 0.0) + in_flight
        if demand is None:
            if used > limit:
                raise _rate_refusal(key, used, limit, usage, terms.time_zone)
        elif metric == "images":
            if used + demand.images > limit:
                extra = f", this job would add {demand.images:,}" if demand.images else ""
                raise _rate_refusal(key, used, limit, usage, terms.time_zone, extra)
        elif used >= limit:
            raise _rate_refusal(key, used, limit, usage, terms.time_zone)


def check_queued(terms: Terms, usage: Usage) -> None:
    """`QuotaExceeded` when the member or their team has the most jobs allowed waiting."""
    for key, waiting in (("user_queued_jobs", usage.user_waiting), ("tenant_queued_jobs", usage.tenant_waiting)):
        limit = terms.limits.get(key)
        if limit is not None and waiting >= limit:
            who = "you have" if key.startswith("user_") else "your team has"
            raise QuotaExceeded(
                f"quota reached: {LABELS[key]} ({key}): {who} {waiting} of {limit:.0f} waiting; "
                "submit again when one starts or ends, or cancel one",
                key=key, used=waiting, limit=limit, resets_at=None,
            )


def quota_needs_lock(limits: Limits) -> bool:
    """Whether checking `limits` reads usage (and so locks the tenant's row): a rate or queued limit."""
    return any(limits.get(key) is not None for key in (*RATE_KEYS, *QUEUED_KEYS))


def quota_check(*, user: AbstractUser, tenant: Tenant, request: Any, membership: Membership | None = None,
                terms: Terms | None = None) -> Terms:
    """Refuse a job `user` is about to submit in `tenant` when it is over a limit in force.

    Call it in the transaction that then inserts the job (`inference.services.job_submit` does):
    with a rate or queued limit in force it locks the tenant's row, so concurrent submissions of
    one team are checked one after the other. `RequestOverLimit` (403) for a request limit,
    `QuotaExceeded` (429) for a window or cap. Returns the terms it checked against.
    """
    if terms is None:
        if membership is None:
            membership = Membership.objects.select_related("tenant").get(user=user)
        terms = terms_for_membership(membership)
    if not terms.limits.values:
        return terms
    demand = demand_of(request)
    check_request_limits(terms.limits, demand)
    if not quota_needs_lock(terms.limits):
        return terms
    list(Tenant.objects.select_for_update().filter(pk=tenant.pk).values_list("pk", flat=True))
    usage = usage_for(user.pk, tenant, terms.limits.values.keys())
    check_queued(terms, usage)
    check_rates(terms, usage, demand)
    return terms


def running_caps(limits: Limits) -> tuple[int | None, int | None]:
    """(`user_running_jobs`, `tenant_running_jobs`) in force, None where unset: scheduler inputs."""
    user_cap, tenant_cap = limits.get("user_running_jobs"), limits.get("tenant_running_jobs")
    return (int(user_cap) if user_cap is not None else None, int(tenant_cap) if tenant_cap is not None else None)


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
            scope, metric = key.split("_", 1)[0], _metric_of(key)
            used = usage.used.get(key, 0.0) + getattr(
                usage, f"{scope}_{'images' if metric == 'images' else 'gpu'}_in_flight")
            resets = usage.windows[_window_of(key)][1].astimezone(validate_time_zone(zone))
        elif key in CONCURRENCY_KEYS:
            used = float({
                "user_queued_jobs": usage.user_waiting, "tenant_queued_jobs": usage.tenant_waiting,
                "user_running_jobs": usage.user_running, "tenant_running_jobs": usage.tenant_running,
            }[key])
        else:
            used = None
        rows.append(QuotaStatus(key=key, label=LABELS[key], used=used, limit=limit, resets_at=resets))
    return rows


# --- at dispatch ---------------------------------------------------------------------------------


def terms_for_members(user_ids: Iterable[int], *, at: dt.datetime | None = None) -> dict[int, Terms]:
    """`terms_for_membership` of many members at once (two queries: memberships, plan assignments):
    the dispatcher reads the terms of every owner in its queued window."""
    at = at or timezone.now()
    memberships = list(Membership.objects.select_related("tenant").filter(user_id__in=set(user_ids)))
    plans: dict[int, Plan] = {}
    for assignment in (
        TenantPlan.objects.select_related("plan")
        .filter(tenant_id__in={m.tenant_id for m in memberships}, effective_from__lte=at)
        .order_by("tenant_id", "effective_from")
    ):
        plans[assignment.tenant_id] = assignment.plan  # the latest one wins
    terms: dict[int, Terms] = {}
    for membership in memberships:
        plan = plans.get(membership.tenant_id)
        plan_limits = Limits.from_json(plan.limits) if plan else Limits()
        terms[membership.user_id] = Terms(
            limits=plan_limits.tightened_by(Limits.from_json(membership.limits or {})),
            allowed_checkpoints=tuple(plan.allowed_checkpoints or ()) if plan else (),
            time_zone=membership.tenant.time_zone or "UTC", plan_id=plan.pk if plan else None,
        )
    return terms


def dispatch_refusals(jobs: list[Any], terms: dict[int, Terms], *, now: dt.datetime | None = None) -> dict[int, str]:
    """Queued `jobs` (Job rows, in queue order) whose owner is over a rate window now: job pk → the
    message it fails with (the one a submit would get). Each owner's jobs are admitted in order
    while they fit (records in the window + what already runs + the jobs admitted before them);
    owners without a rate limit cost nothing."""
    from inference.metering import job_pixel_steps

    refused: dict[int, str] = {}
    by_owner: dict[int, list[Any]] = {}
    for job in jobs:
        owner_terms = terms.get(job.owner_id)
        if owner_terms is not None and any(owner_terms.limits.get(key) is not None for key in RATE_KEYS):
            by_owner.setdefault(job.owner_id, []).append(job)
    for owner_id, owned in by_owner.items():
        owner_terms = terms[owner_id]
        usage = usage_for(owner_id, owned[0].tenant, owner_terms.limits.values.keys(), now=now, include_waiting=False)
        for job in owned:
            images = _images_of(job.kind, job.seeds, job.total_steps)
            gpu = job_pixel_steps(job.kind, job.params) * usage.gpu_per_pixel_step
            try:
                check_rates(owner_terms, usage, Demand(images=images))
            except QuotaExceeded as exc:
                refused[job.pk] = exc.message
                continue
            usage.user_images_in_flight += images
            usage.tenant_images_in_flight += images
            usage.user_gpu_in_flight += gpu
            usage.tenant_gpu_in_flight += gpu
    return refused
