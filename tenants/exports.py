"""Usage exports: the records of a period as CSV or JSON, streamed, and who may export what.

* `UsagePeriod` is a month ("2026-11") or a from/to pair of dates (both inclusive), always read in
  each tenant's own time zone: a record counts where its `ended_at` falls.
* `usage_scope_for_user` is the one access check of usage data (the API, the bill page and the
  command's callers go through it): a member sees their own records only, a tenant admin their
  tenant's, an operator (staff) any tenant's; anything else is `NotFound`, the same answer as for
  a tenant or member that does not exist.
* `record_chunks(...)` streams one row per record (`RECORD_COLUMNS`) as CSV or JSON text chunks.
  It reads with `values_list(...).iterator(chunk_size=…)` (a server-side cursor on PostgreSQL), so
  a million rows are never held in memory; a record's `amount` is its exact amount at its own
  price (`tenants.statements.PriceBook`), rounded to the minor unit.
* `statement_chunks(...)` writes a statement (`tenants/statements.py`) as CSV or JSON.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import zoneinfo
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from django.db.models import Q, QuerySet

from a1111.errors import InvalidField, NotFound
from tenants.models import Membership, Tenant, UsageRecord
from tenants.money import InvalidPeriod, month_bounds, parse_month, validate_time_zone
from tenants.statements import STATEMENT_CSV_HEADER, PriceBook, Statement, record_amount, statement_csv_rows

FORMATS = ("csv", "json")
CHUNK_ROWS = 5000  # rows per database fetch and per streamed chunk

RECORD_COLUMNS: tuple[str, ...] = (
    "record_id", "job_id", "tenant", "user", "service", "kind", "checkpoint", "status", "images", "gpu_seconds",
    "pixel_steps", "queue_wait_seconds", "started_at", "ended_at", "amount", "currency", "reason",
)
_FIELDS = (
    "pk", "job__public_id", "tenant_id", "tenant__slug", "user__username", "service_name", "kind",
    "checkpoint_title", "status", "images", "gpu_seconds", "pixel_steps", "queue_wait_seconds", "started_at",
    "ended_at", "reason",
)


def parse_format(value: str | None) -> str:
    fmt = (value or "json").strip().lower()
    if fmt not in FORMATS:
        raise InvalidField(f"use one of {', '.join(FORMATS)}, not {value!r}", field="format")
    return fmt


@dataclass(frozen=True)
class UsagePeriod:
    """A calendar month, or the days `date_from` to `date_to` (inclusive), in each tenant's zone."""

    month: str | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None

    @classmethod
    def parse(cls, *, month: str | None = None, date_from: str | None = None, date_to: str | None = None) -> UsagePeriod:
        """`InvalidPeriod` (a ValueError) saying what to write, for a malformed or empty period."""
        if month and (date_from or date_to):
            raise InvalidPeriod("give a month (YYYY-MM) or from/to dates (YYYY-MM-DD), not both")
        if month:
            year, number = parse_month(month)
            return cls(month=f"{year:04d}-{number:02d}")
        if not (date_from and date_to):
            raise InvalidPeriod("give a month written YYYY-MM (e.g. 2026-11), or both from and to dates (YYYY-MM-DD)")
        dates = []
        for name, value in (("from", date_from), ("to", date_to)):
            try:
                dates.append(dt.date.fromisoformat(str(value).strip()))
            except ValueError:
                raise InvalidPeriod(f"{name} must be a date written YYYY-MM-DD, not {value!r}") from None
        if dates[0] > dates[1]:
            raise InvalidPeriod(f"from ({dates[0]}) is after to ({dates[1]})")
        if dates[0].year < 2000:
            raise InvalidPeriod("dates start in the year 2000")
        return cls(date_from=dates[0], date_to=dates[1])

    def bounds(self, time_zone: str) -> tuple[dt.datetime, dt.datetime]:
        """Start (inclusive) and end (exclusive) in `time_zone`."""
        if self.month:
            return month_bounds(self.month, time_zone)
        zone = validate_time_zone(time_zone)
        assert self.date_from and self.date_to
        start = dt.datetime.combine(self.date_from, dt.time(), tzinfo=zone)
        end = dt.datetime.combine(self.date_to + dt.timedelta(days=1), dt.time(), tzinfo=zone)
        return start, end

    def as_json(self) -> dict[str, str | None]:
        return {"month": self.month, "from": self.date_from and self.date_from.isoformat(),
                "to": self.date_to and self.date_to.isoformat()}


@dataclass(frozen=True)
class UsageScope:
    """Whose records: one tenant's (or every tenant's: operators only), optionally one member's."""

    tenant: Tenant | None
    user: AbstractUser | None


def usage_scope_for_user(viewer: AbstractUser, *, tenant_slug: str | None = None,
                         username: str | None = None) -> UsageScope:
    """What `viewer` asks for, if they may see it; `NotFound` otherwise (an unknown tenant or member
    and someone else's are the same answer). Members: their own records (no `tenant`/`username`, or
    their own); tenant admins: their tenant and its members; operators (staff): any tenant or user."""
    tenant_slug, username = _name(tenant_slug, "tenant"), _name(username, "user")
    user_model = get_user_model()
    if viewer.is_staff:
        return usage_scope_for_operator(tenant_slug=tenant_slug, username=username)
    membership = Membership.objects.select_related("tenant").filter(user=viewer).first()
    if membership is None or (tenant_slug is not None and tenant_slug != membership.tenant.slug):
        raise NotFound(f"no tenant {tenant_slug!r}" if tenant_slug else "you belong to no tenant", field="tenant")
    tenant = membership.tenant
    if membership.role != Membership.Role.ADMIN:
        if username is not None and username != viewer.get_username():
            raise NotFound(f"no member {username!r}", field="user")
        return UsageScope(tenant=tenant, user=viewer)
    user = None
    if username is not None:
        user = user_model.objects.filter(username=username).first()
        if user is None or not _member_of(user, tenant):
            raise NotFound(f"no member {username!r} in {tenant.slug}", field="user")
    return UsageScope(tenant=tenant, user=user)


def usage_scope_for_operator(*, tenant_slug: str | None = None, username: str | None = None) -> UsageScope:
    """Any tenant's or user's records (operators, and `manage.py export_usage`); `NotFound` for an
    unknown tenant, an unknown user, or a user who never was in the named tenant."""
    tenant_slug, username = _name(tenant_slug, "tenant"), _name(username, "user")
    tenant = None
    if tenant_slug is not None:
        tenant = Tenant.objects.filter(slug=tenant_slug).first()
        if tenant is None:
            raise NotFound(f"no tenant {tenant_slug!r}", field="tenant")
    user = None
    if username is not None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None or (tenant is not None and not _member_of(user, tenant)):
            raise NotFound(f"no member {username!r}" + (f" in {tenant.slug}" if tenant else ""), field="user")
    return UsageScope(tenant=tenant, user=user)


def statement_tenant_for_user(viewer: AbstractUser, *, tenant_slug: str | None = None) -> Tenant:
    """The tenant whose statement `viewer` may see: a tenant admin's own, any for an operator
    (who must name it). `NotFound` for members, other tenants and unknown slugs; `InvalidField`
    when an operator names none."""
    scope = usage_scope_for_user(viewer, tenant_slug=tenant_slug)
    if scope.user is not None:  # a plain member: their records only, never the team's bill
        raise NotFound("statements are for tenant admins and operators", field="tenant")
    if scope.tenant is None:
        raise InvalidField("name the tenant (its slug) whose statement you want", field="tenant")
    return scope.tenant


def _name(value: str | None, field: str) -> str | None:
    """A slug or username as asked for (None: not asked); one no record could have (a NUL, which
    PostgreSQL cannot even compare, or past any length stored) is `NotFound` like any unknown name."""
    value = (value or "").strip()
    if not value:
        return None
    if "\x00" in value or len(value) > 150:
        raise NotFound(f"no {field} of that name", field=field)
    return value


def _member_of(user: AbstractUser, tenant: Tenant) -> bool:
    return (Membership.objects.filter(user=user, tenant=tenant).exists()
            or UsageRecord.objects.filter(user=user, tenant=tenant).exists())  # a former member's records


def usage_records(period: UsagePeriod, scope: UsageScope) -> QuerySet[UsageRecord]:
    """The scope's records whose `ended_at` falls in `period`, each in its own tenant's time zone,
    oldest first."""
    if scope.tenant is not None:
        start, end = period.bounds(scope.tenant.time_zone)
        records = UsageRecord.objects.filter(tenant=scope.tenant, ended_at__gte=start, ended_at__lt=end)
    else:  # every tenant: one condition per distinct time zone
        zones = sorted(set(Tenant.objects.values_list("time_zone", flat=True)))
        condition = Q(pk__in=[])
        for zone in zones:
            start, end = period.bounds(zone)
            condition |= Q(tenant__time_zone=zone, ended_at__gte=start, ended_at__lt=end)
        records = UsageRecord.objects.filter(condition)
    if scope.user is not None:
        records = records.filter(user=scope.user)
    return records.order_by("ended_at", "pk")


class _Line:
    """A file-like that hands back what `csv.writer` writes (no buffer kept)."""

    def write(self, value: str) -> str:
        return value


def record_rows(records: QuerySet[UsageRecord]) -> Iterator[tuple[Any, ...]]:
    """One tuple per record, in `RECORD_COLUMNS` order; times in the record's tenant's zone."""
    tenants: dict[int, tuple[zoneinfo.ZoneInfo, PriceBook]] = {}
    zone_names = dict(Tenant.objects.values_list("pk", "time_zone"))
    for (pk, job_id, tenant_id, tenant_slug, username, service, kind, checkpoint, status, images, gpu_seconds,
         pixel_steps, queue_wait, started_at, ended_at, reason) in records.values_list(*_FIELDS).iterator(chunk_size=CHUNK_ROWS):
        known = tenants.get(tenant_id)
        if known is None:
            known = tenants[tenant_id] = (validate_time_zone(zone_names.get(tenant_id, "UTC")), PriceBook(tenant_id))
        zone, book = known
        terms = book.at(ended_at)
        amount = record_amount(terms, gpu_seconds, images)
        yield (
            pk, job_id or "", tenant_slug, username, service, kind, checkpoint, status, images, gpu_seconds,
            pixel_steps, queue_wait, started_at.astimezone(zone).isoformat() if started_at else "",
            ended_at.astimezone(zone).isoformat(), "" if amount is None else str(amount),
            terms.currency if terms else "", reason,
        )


def _csv_text(rows: Iterable[tuple[Any, ...]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows(rows)
    return buffer.getvalue()


def _batched(rows: Iterator[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= CHUNK_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch


_TEXT_COLUMNS = frozenset(index for index, name in enumerate(RECORD_COLUMNS)
                          if name in {"tenant", "user", "service", "kind", "checkpoint", "status", "reason"})
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_safe(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A text cell a spreadsheet would run as a formula (a checkpoint named `=HYPERLINK(…)`) gets a
    leading `'` (OWASP's CSV injection advice); numbers and times are left as they are."""
    return tuple(
        "'" + value if index in _TEXT_COLUMNS and isinstance(value, str) and value.startswith(_FORMULA_STARTS) else value
        for index, value in enumerate(row)
    )


def record_chunks(records: QuerySet[UsageRecord], fmt: str, *, header: dict[str, Any] | None = None) -> Iterator[str]:
    """The records as text chunks of `CHUNK_ROWS` rows: CSV (a header line, then one line per
    record) or JSON (`{...header, "records": [{column: value}, ...]}`)."""
    rows = record_rows(records)
    if fmt == "csv":
        yield _csv_text([RECORD_COLUMNS])
        for batch in _batched(rows):
            yield _csv_text(map(_csv_safe, batch))
        return
    opening = json.dumps(header or {})[:-1]
    yield (opening + ", " if header else "{") + '"records": ['
    first = True
    for batch in _batched(rows):
        text = ",\n".join(json.dumps(dict(zip(RECORD_COLUMNS, row))) for row in batch)
        yield ("\n" if first else ",\n") + text
        first = False
    yield "\n]}\n"


def statement_chunks(statement: Statement, fmt: str) -> Iterator[str]:
    """The statement as JSON, or as CSV (`STATEMENT_CSV_HEADER`; its reason and who columns formula-safe)."""
    if fmt == "csv":
        yield _csv_text([STATEMENT_CSV_HEADER, *(
            (*row[:7], *(("'" + text) if str(text).startswith(_FORMULA_STARTS) else text for text in row[7:]))
            for row in statement_csv_rows(statement)
        )])
    else:
        yield json.dumps(statement.as_json(), indent=1) + "\n"


def export_filename(kind: str, period: UsagePeriod, scope_name: str, fmt: str) -> str:
    when = period.month or f"{period.date_from}_{period.date_to}"
    return f"{kind}-{scope_name}-{when}.{fmt}"
