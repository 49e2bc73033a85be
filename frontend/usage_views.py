"""The usage pages: a member's own (`/usage/`), their team's for tenant admins (`/team/usage/`)
and the operators' dashboard (`/ops/`). Thin views: read the month, authorise, call the usage
selectors (`tenants/usage_selectors.py`) and draw the charts (`frontend/charts.py`).

A month is `?month=YYYY-MM` (default: the present month, in the tenant's time zone; UTC on the
operators' page). A month that is not one is a 400 with the month form and what to write.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from datetime import timezone as dt_timezone
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import render
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe

from frontend.charts import Bar, bar_chart
from frontend.eas_views import member_page
from frontend.member_selectors import language_for_user
from frontend.templatetags.atelier_format import count, gpu_seconds, percent
from frontend.workspace.i18n import strings
from inference.ops_selectors import failures_by_reason, model_cache_per_worker
from tenants.models import Membership
from tenants.money import InvalidPeriod, month_bounds, parse_month
from tenants.quotas import quota_status
from tenants.selectors import membership_for_user
from tenants.usage_selectors import (
    DayUsage,
    active_jobs_per_tenant,
    current_month,
    queue_wait_per_day,
    queue_wait_per_tenant,
    usage_month_totals,
    usage_per_day,
    usage_per_kind,
    usage_per_member,
    usage_per_tenant,
    worker_utilisation,
)

UTILISATION_WINDOW = timedelta(hours=24)


def _month(request: HttpRequest, time_zone: str) -> tuple[str, str]:
    """(month, error): the month asked for, or the present one; an error says what to write."""
    asked = request.GET.get("month", "").strip()
    if not asked:
        return current_month(time_zone), ""
    try:
        year, number = parse_month(asked)
    except InvalidPeriod as exc:
        return asked, str(exc)
    month = f"{year:04d}-{number:02d}"
    try:  # the year 9999's last month ends in the year 10000, which no datetime holds
        start, end = month_bounds(month, time_zone)
        start.astimezone(dt_timezone.utc), end.astimezone(dt_timezone.utc)
    except (OverflowError, ValueError):
        return asked, f"{asked!r} is too far ahead: write YYYY-MM, a month from 2000-01 to 9999-11"
    return month, ""


def _read_only(request: HttpRequest) -> HttpResponse | None:
    """A 405 for anything but GET and HEAD: asked after the authorisation, so that whoever may
    not see a page gets its 404 for every method."""
    return None if request.method in ("GET", "HEAD") else HttpResponseNotAllowed(["GET", "HEAD"])


def _render(request: HttpRequest, template_name: str, context: dict[str, Any], error: str) -> HttpResponse:
    return render(request, template_name, {**context, "month_error": error}, status=400 if error else 200)


def _chart(bars: Sequence[Bar], t: dict[str, str], **options: Any) -> SafeString:
    """`bar_chart`'s markup, safe to insert as it is: it escapes every text it writes."""
    return mark_safe(bar_chart(bars, empty_text=t["usage_no_data"], **options))  # noqa: S308


def _day_charts(days: Sequence[DayUsage], t: dict[str, str], prefix: str) -> dict[str, SafeString]:
    """The month's GPU-seconds and images per day, one bar a day, labelled by the day's number."""
    return {
        "gpu_chart": _chart(
            [Bar(str(day.day.day), day.totals.gpu_seconds, day.day.isoformat()) for day in days], t,
            title=t["usage_gpu_per_day"], chart_id=f"{prefix}-gpu-seconds", unit=t["usage_gpu_unit"],
            value_format=gpu_seconds, label_every=2),
        "images_chart": _chart(
            [Bar(str(day.day.day), day.totals.images, day.day.isoformat()) for day in days], t,
            title=t["usage_images_per_day"], chart_id=f"{prefix}-images", value_format=count, label_every=2,
            whole=True),
    }


@member_page  # a session or a member's API token, as every member page
def my_usage(request: HttpRequest) -> HttpResponse:
    """A member's own usage in a month: GPU-seconds and images per day, jobs by kind and checkpoint."""
    membership = membership_for_user(request.user)
    if membership is None:
        raise Http404("operators have no usage of their own: see /ops/")
    if refused := _read_only(request):
        return refused
    tenant = membership.tenant
    t = strings(language_for_user(request.user))
    month, error = _month(request, tenant.time_zone)
    context: dict[str, Any] = {
        "t": t, "month": month, "tenant": tenant, "time_zone": tenant.time_zone,
        "is_tenant_admin": membership.role == Membership.Role.ADMIN,
    }
    if not error:
        days = usage_per_day(month=month, tenant=tenant, user=request.user)
        context.update(
            days=days, **_day_charts(days, t, "my-usage"),
            totals=usage_month_totals(month=month, tenant=tenant, user=request.user),
            kinds=usage_per_kind(month=month, tenant=tenant, user=request.user),
        )
    context["quota_rows"] = quota_status(request.user)  # now, whatever month is shown
    return _render(request, "frontend/usage.html", context, error)


@member_page  # a session or a member's API token, as every member page
def team_usage(request: HttpRequest) -> HttpResponse:
    """Tenant admins: their team's usage in a month, per day and per member (members get 404)."""
    membership = membership_for_user(request.user)
    if membership is None or membership.role != Membership.Role.ADMIN:
        raise Http404("no team usage for you")
    if refused := _read_only(request):
        return refused
    tenant = membership.tenant
    t = strings(language_for_user(request.user))
    month, error = _month(request, tenant.time_zone)
    context: dict[str, Any] = {"t": t, "month": month, "tenant": tenant, "time_zone": tenant.time_zone,
                               "is_tenant_admin": True}
    if not error:
        days = usage_per_day(month=month, tenant=tenant)
        members = usage_per_member(month=month, tenant=tenant)
        member_bars = [Bar(row.username, row.totals.gpu_seconds) for row in members]
        context.update(
            days=days, **_day_charts(days, t, "team-usage"), members=members,
            member_chart=_chart(member_bars, t, title=t["usage_gpu_per_member"], chart_id="team-usage-members",
                                unit=t["usage_gpu_unit"], value_format=gpu_seconds),
            totals=usage_month_totals(month=month, tenant=tenant),
            kinds=usage_per_kind(month=month, tenant=tenant),
        )
    return _render(request, "frontend/team_usage.html", context, error)


def _model_cache_charts(t: dict[str, str]) -> dict[str, Any]:
    """Each worker's checkpoint loads and cache hits (`inference/ops_selectors.py`), two charts and the rows."""
    rows = model_cache_per_worker()
    return {
        "model_cache": rows,
        "model_loads_chart": _chart([Bar(row.name, row.loads) for row in rows], t, title=t["ops_model_loads_per_worker"],
                                    chart_id="ops-model-loads", value_format=count, whole=True),
        "model_hits_chart": _chart([Bar(row.name, row.hits) for row in rows], t, title=t["ops_model_hits_per_worker"],
                                   chart_id="ops-model-hits", value_format=count, whole=True),
    }


@member_page  # a session or a member's API token, as every member page
def operations(request: HttpRequest) -> HttpResponse:
    """Operators (staff): usage by tenant, queue waits by day and tenant, worker utilisation over
    the last 24 hours and the jobs queued and running now. Everyone else gets 404. UTC."""
    if not request.user.is_staff:
        raise Http404("operators only")
    if refused := _read_only(request):
        return refused
    t = strings(language_for_user(request.user))
    month, error = _month(request, "UTC")
    now = timezone.now()
    workers = worker_utilisation(since=now - UTILISATION_WINDOW, until=now)
    context: dict[str, Any] = {
        "t": t, "month": month, "time_zone": "UTC", "now": now, "window_start": now - UTILISATION_WINDOW,
        "workers": workers, "active": active_jobs_per_tenant(),
        "worker_chart": _chart([Bar(row.name, row.busy_fraction) for row in workers], t, title=t["ops_worker_busy"],
                               chart_id="ops-workers", value_format=percent, axis_format=percent),
        **_model_cache_charts(t),
    }
    if not error:
        tenants = usage_per_tenant(month=month)
        waits = queue_wait_per_day(month=month)
        start, end = month_bounds(month, "UTC")
        failures = failures_by_reason(since=start, until=end)
        context.update(
            failures=failures,
            failure_chart=_chart([Bar(row.reason, row.jobs) for row in failures], t, title=t["ops_failures_chart"],
                                 chart_id="ops-failures", value_format=count, whole=True),
            tenants=tenants, waits=waits, tenant_waits=queue_wait_per_tenant(month=month),
            tenant_chart=_chart([Bar(row.slug, row.totals.gpu_seconds, row.name or row.slug) for row in tenants], t,
                                title=t["ops_gpu_per_tenant"], chart_id="ops-tenants", unit=t["usage_gpu_unit"],
                                value_format=gpu_seconds),
            wait_chart=_chart([Bar(row.label[-2:].lstrip("0"), row.p95_seconds, row.label) for row in waits], t,
                              title=t["ops_wait_p95_per_day"], chart_id="ops-waits", unit="s",
                              value_format=gpu_seconds, label_every=2),
        )
    return _render(request, "frontend/ops.html", context, error)
