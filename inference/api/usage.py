"""`/api/v1/usage/records` and `/api/v1/usage/statement`: usage exports and monthly statements.

Thin adapters over `tenants/exports.py` (who may see what: `usage_scope_for_user`) and
`tenants/statements.py`. A token or the session cookie (reads). Everything the query names is
checked before the response starts, so a streamed export never fails half-way with a client error.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from a1111.errors import InvalidField
from inference.api.errors import api_view
from tenants.exports import (
    UsagePeriod,
    export_filename,
    parse_format,
    record_chunks,
    statement_chunks,
    statement_tenant_for_user,
    usage_records,
    usage_scope_for_user,
)
from tenants.money import InvalidPeriod
from tenants.statements import statement_for

CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json"}


def _period(request: HttpRequest, *, dates: bool) -> UsagePeriod:
    try:
        if dates:
            return UsagePeriod.parse(month=request.GET.get("month"), date_from=request.GET.get("from"),
                                     date_to=request.GET.get("to"))
        if request.GET.get("from") or request.GET.get("to"):
            raise InvalidPeriod("a statement is of a month: give month=YYYY-MM, not from/to dates")
        return UsagePeriod.parse(month=request.GET.get("month") or "-")
    except InvalidPeriod as exc:
        raise InvalidField(str(exc), field="month") from None


def _download(response: HttpResponse, filename: str) -> HttpResponse:
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response


@api_view("GET")
def usage_records_view(request: HttpRequest, user) -> HttpResponse:
    """The records of a month (or from/to dates) the caller may see, one row each, streamed."""
    period = _period(request, dates=True)
    fmt = parse_format(request.GET.get("format"))
    scope = usage_scope_for_user(user, tenant_slug=request.GET.get("tenant"), username=request.GET.get("user"))
    records = usage_records(period, scope)
    header = {**period.as_json(), "tenant": scope.tenant.slug if scope.tenant else None,
              "user": scope.user.get_username() if scope.user else None}
    response = StreamingHttpResponse(record_chunks(records, fmt, header=header), content_type=CONTENT_TYPES[fmt])
    name = scope.user.get_username() if scope.user else (scope.tenant.slug if scope.tenant else "all")
    return _download(response, export_filename("usage", period, name, fmt))


@api_view("GET")
def usage_statement_view(request: HttpRequest, user) -> HttpResponse:
    """A tenant's statement for a month: its admins' own tenant, any tenant for operators."""
    period = _period(request, dates=False)
    fmt = parse_format(request.GET.get("format"))
    tenant = statement_tenant_for_user(user, tenant_slug=request.GET.get("tenant"))
    assert period.month is not None
    statement = statement_for(tenant=tenant, month=period.month)
    response = HttpResponse("".join(statement_chunks(statement, fmt)), content_type=CONTENT_TYPES[fmt])
    return _download(response, export_filename("statement", period, tenant.slug, fmt))
