"""`manage.py export_usage --month 2026-11 [--tenant SLUG] [--user NAME] [--format csv|json]
[--statement] [--output FILE]`: an operator's export of usage records (every tenant's unless
narrowed), or with `--statement` one tenant's monthly statement, in the same format as the API
(`/api/v1/usage/records`, `/api/v1/usage/statement`), streamed to a file or stdout."""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError

from a1111.errors import RequestError
from tenants.exports import (
    FORMATS,
    UsagePeriod,
    record_chunks,
    statement_chunks,
    usage_records,
    usage_scope_for_operator,
)
from tenants.money import InvalidPeriod
from tenants.statements import statement_for


class Command(BaseCommand):
    help = "Export usage records (CSV or JSON) of a month or of dates, or a tenant's monthly statement."

    def add_arguments(self, parser):
        parser.add_argument("--month", help="YYYY-MM, in each tenant's time zone")
        parser.add_argument("--from", dest="date_from", help="first day, YYYY-MM-DD (with --to, instead of --month)")
        parser.add_argument("--to", dest="date_to", help="last day, YYYY-MM-DD (inclusive)")
        parser.add_argument("--tenant", help="one tenant's slug (all tenants without it)")
        parser.add_argument("--user", help="one member's username")
        parser.add_argument("--format", default="csv", choices=FORMATS)
        parser.add_argument("--statement", action="store_true", help="the tenant's statement instead of its records")
        parser.add_argument("--output", help="write to this file (default: stdout)")

    def handle(self, *args, month=None, date_from=None, date_to=None, tenant=None, user=None, format="csv",
               statement=False, output=None, **options):
        try:
            period = UsagePeriod.parse(month=month, date_from=date_from, date_to=date_to)
            scope = usage_scope_for_operator(tenant_slug=tenant, username=user)
        except (InvalidPeriod, RequestError) as exc:
            raise CommandError(str(exc)) from None
        if statement:
            if scope.tenant is None or period.month is None:
                raise CommandError("--statement needs --tenant SLUG and --month YYYY-MM")
            if scope.user is not None:
                raise CommandError("--statement is the whole tenant's: leave out --user")
            try:
                chunks = statement_chunks(statement_for(tenant=scope.tenant, month=period.month), format)
            except RequestError as exc:
                raise CommandError(str(exc)) from None
        else:
            header = {**period.as_json(), "tenant": scope.tenant.slug if scope.tenant else None,
                      "user": scope.user.get_username() if scope.user else None}
            chunks = record_chunks(usage_records(period, scope), format, header=header)
        if output:
            try:
                with open(output, "w", encoding="utf-8", newline="") as handle:
                    for chunk in chunks:
                        handle.write(chunk)
            except OSError as exc:
                raise CommandError(f"cannot write {output}: {exc.strerror}") from None
            return
        stream = self.stdout if self.stdout else sys.stdout
        for chunk in chunks:
            stream.write(chunk, ending="")
