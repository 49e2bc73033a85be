"""Checking a job against the limits in force: request limits (403), queued caps and rate windows
(429), at submit (`quota_check`, under the tenant's row lock) and again at dispatch
(`dispatch_refusals`)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from django.contrib.auth.models import AbstractUser
from django.utils import timezone

from a1111.errors import Forbidden, TooMany
from tenants.limits import LABELS, RATE_KEYS, REQUEST_KEYS, Limits
from tenants.models import Membership, Tenant
from tenants.quotas.terms import Terms, terms_for_membership
from tenants.quotas.usage import Usage, images_of, metric_of, usage_for, window_of

QUEUED_KEYS = ("user_queued_jobs", "tenant_queued_jobs")
RUNNING_KEYS = ("user_running_jobs", "tenant_running_jobs")


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
class Demand:
    """What one job asks for, as the limits count it."""

    images: int = 0
    pixels: int = 0  # width × height of one image
    steps: int = 0
    pixel_steps: int = 0


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


def _local(moment: dt.datetime, time_zone: str) -> str:
    from tenants.money import validate_time_zone

    return moment.astimezone(validate_time_zone(time_zone)).isoformat(timespec="seconds")


def _figure(key: str, value: float) -> str:
    return f"{value:,.1f}" if metric_of(key) == "gpu_seconds" and key in RATE_KEYS else f"{value:,.0f}"


def _rate_refusal(key: str, used: float, limit: float, usage: Usage, time_zone: str, extra: str = "") -> QuotaExceeded:
    resets = usage.windows[window_of(key)][1]
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
        scope, metric = ("user" if key.startswith("user_") else "tenant"), metric_of(key)
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
            images = images_of(job.kind, job.seeds, job.total_steps)
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
