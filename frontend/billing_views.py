"""A tenant admin's bill page (`/team/bill/?month=YYYY-MM`): the month's statement
(`tenants/statements.py`) with money in the currency's minor unit, GPU-seconds to 0.1 and dates in
the tenant's time zone, a month picker, and downloads of the statement from `/api/v1/usage/statement`.
Who may see it is `tenants.exports.statement_tenant_for_user`'s answer: members get 404."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlencode

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from a1111.errors import InvalidField, NotFound
from frontend.eas_views import member_page
from tenants.exports import statement_tenant_for_user
from tenants.money import InvalidPeriod, format_money, parse_month, validate_time_zone
from tenants.statements import statement_for


@member_page  # a session or a member's API token, as every member page
def bill_page(request: HttpRequest) -> HttpResponse:
    try:
        tenant = statement_tenant_for_user(request.user, tenant_slug=request.GET.get("tenant"))
    except (NotFound, InvalidField):
        raise Http404("no bill for you") from None
    now = timezone.now().astimezone(validate_time_zone(tenant.time_zone))
    month = (request.GET.get("month") or f"{now.year:04d}-{now.month:02d}").strip()
    context: dict = {"tenant": tenant, "month": month, "is_tenant_admin": not request.user.is_staff}
    try:
        year, number = parse_month(month)
    except InvalidPeriod as exc:
        context["error"] = str(exc)
        return render(request, "frontend/bill.html", context, status=400)
    month = context["month"] = f"{year:04d}-{number:02d}"
    statement = statement_for(tenant=tenant, month=month)
    query = {"month": month, **({"tenant": tenant.slug} if request.user.is_staff else {})}

    def money(amount) -> str:
        return format_money(amount, statement.currency) if statement.currency else "—"

    context.update(
        statement=statement,
        members=[(line, money(line.amount)) for line in statement.members],
        # dates as the tenant's zone writes them (the template would convert aware times to the site's zone)
        adjustments=[(line, line.ended_at.strftime("%Y-%m-%d %H:%M"), money(line.amount)) for line in statement.adjustments],
        monthly_fee=money(statement.monthly_fee),
        allowance_credit=money(statement.allowance_credit),
        total=money(statement.total),
        first_day=statement.period_start.strftime("%Y-%m-%d"),
        last_day=(statement.period_end - dt.timedelta(days=1)).strftime("%Y-%m-%d"),
        csv_url="/api/v1/usage/statement?" + urlencode({**query, "format": "csv"}),
        json_url="/api/v1/usage/statement?" + urlencode({**query, "format": "json"}),
        records_csv_url="/api/v1/usage/records?" + urlencode({**query, "format": "csv"}),
    )
    return render(request, "frontend/bill.html", context)
