"""A tenant's monthly statement: what each member used and owes, from the usage records alone.

`statement_for(tenant=…, month="2026-11")` reads the records whose `ended_at` falls in the month
(in the tenant's time zone: a job straddling midnight counts once, in the period of its end) and
prices them. The rules:

* **Effective-dated prices.** A record is priced by the plan the tenant was on at its `ended_at`
  and that plan's `PlanPrice` in effect then (`PriceBook`): a later price never changes a past month.
* **The month's terms** (currency, billing mode, monthly fee, included allowance) are those of the
  price in effect at the period's start, or, for a tenant that got its first plan during the
  month, at that first assignment.
* **The included allowance** (GPU-seconds, images) is consumed by the period's job records in
  `ended_at` order (then record id), so which record it covers is exact and deterministic; what it
  covers is shown as one credit line (negative), each member line being their usage at its price.
  Adjustments (`kind="adjustment"`, signed) are priced at the price of their own date, outside the
  allowance.
* **Reserved capacity** bills the monthly fee only: usage is listed at 0.
* **No plan**: usage only, nothing charged, and the statement says so (`note`).
* **Exact arithmetic**: amounts are summed exactly as Decimals (per GPU-hour prices are carried as
  amount × 3600 until the end), the total is the exact sum rounded once, and the lines are rounded
  with `tenants.money.allocate` so they add up to the total to the minor unit.

`PriceBook` is shared with the exports (`tenants/exports.py`), which show each record's own amount.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Any

from a1111.errors import Conflict
from tenants.models import Membership, Plan, PlanPrice, Tenant, TenantPlan, UsageRecord
from tenants.money import allocate, month_bounds, round_money, validate_time_zone

SECONDS_PER_HOUR = 3600
_PRECISION = 80  # digits: enough that sums of the scaled amounts below are exact
_FINE = Decimal(1).scaleb(-40)  # lines are carried to 40 decimals before rounding to the minor unit
ZERO = Decimal(0)


def exact_seconds(value: float) -> Decimal:
    """A float GPU-seconds measurement as the Decimal it prints as (deterministic, no binary noise)."""
    return Decimal(repr(float(value)))


@dataclass(frozen=True)
class Terms:
    """The prices in effect at one moment: a plan and its `PlanPrice` (zeros before its first price)."""

    plan_slug: str
    plan_name: str
    currency: str
    billing_mode: str
    price_per_gpu_hour: Decimal
    price_per_image: Decimal
    included_gpu_seconds: int
    included_images: int
    monthly_fee: Decimal

    @property
    def reserved(self) -> bool:
        return self.billing_mode == Plan.BillingMode.RESERVED_CAPACITY

    def scaled_amount(self, gpu_seconds: Decimal, images: int | Decimal) -> Decimal:
        """The exact amount × 3600 of this usage at these prices (0 in reserved-capacity mode)."""
        if self.reserved:
            return ZERO
        with localcontext() as ctx:
            ctx.prec = _PRECISION
            return gpu_seconds * self.price_per_gpu_hour + Decimal(images) * self.price_per_image * SECONDS_PER_HOUR


def unscale(scaled: Decimal) -> Decimal:
    """An amount × 3600 back to the amount, to 40 decimals (exact wherever the amount is a finite decimal)."""
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return (scaled / SECONDS_PER_HOUR).quantize(_FINE)


def record_amount(terms: Terms | None, gpu_seconds: float, images: int) -> Decimal | None:
    """One record's amount at its own prices, to the currency's minor unit (None: no plan)."""
    if terms is None:
        return None
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return round_money(unscale(terms.scaled_amount(exact_seconds(gpu_seconds), images)), terms.currency)


class PriceBook:
    """One tenant's plan assignments and their plans' prices, loaded once (a few rows): the terms
    in effect at any moment, by bisection."""

    def __init__(self, tenant_id: int) -> None:
        assignments = list(TenantPlan.objects.filter(tenant_id=tenant_id).select_related("plan").order_by("effective_from"))
        self._plan_dates = [a.effective_from for a in assignments]
        self._plans = [a.plan for a in assignments]
        self.first_plan_from: dt.datetime | None = self._plan_dates[0] if assignments else None
        self._prices: dict[int, tuple[list[dt.datetime], list[PlanPrice]]] = {}
        for price in PlanPrice.objects.filter(plan_id__in={p.pk for p in self._plans}).order_by("effective_from"):
            dates, rows = self._prices.setdefault(price.plan_id, ([], []))
            dates.append(price.effective_from)
            rows.append(price)
        self._cache: dict[tuple[int, int], Terms] = {}

    def plan_dates_between(self, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
        return [date for date in self._plan_dates if start <= date < end]

    def at(self, moment: dt.datetime) -> Terms | None:
        """The terms in effect at `moment`; None when the tenant had no plan then."""
        index = bisect.bisect_right(self._plan_dates, moment) - 1
        if index < 0:
            return None
        plan = self._plans[index]
        dates, rows = self._prices.get(plan.pk, ([], []))
        price_index = bisect.bisect_right(dates, moment) - 1
        key = (plan.pk, price_index)
        terms = self._cache.get(key)
        if terms is None:
            price = rows[price_index] if price_index >= 0 else None
            terms = Terms(
                plan_slug=plan.slug, plan_name=str(plan), currency=plan.currency, billing_mode=plan.billing_mode,
                price_per_gpu_hour=price.price_per_gpu_hour if price else ZERO,
                price_per_image=price.price_per_image if price else ZERO,
                included_gpu_seconds=price.included_gpu_seconds if price else 0,
                included_images=price.included_images if price else 0,
                monthly_fee=price.monthly_fee if price else ZERO,
            )
            self._cache[key] = terms
        return terms


@dataclass(frozen=True)
class MemberLine:
    username: str
    jobs: int
    images: int
    gpu_seconds: float
    amount: Decimal  # their usage at its prices (the allowance is the statement's own credit line)


@dataclass(frozen=True)
class AdjustmentLine:
    record_id: int
    username: str
    gpu_seconds: float  # signed
    images: int  # signed
    reason: str
    created_by: str
    ended_at: dt.datetime  # in the tenant's zone
    amount: Decimal


@dataclass(frozen=True)
class Statement:
    tenant_slug: str
    tenant_name: str
    month: str
    time_zone: str
    period_start: dt.datetime  # inclusive, in the tenant's zone
    period_end: dt.datetime  # exclusive
    plan_name: str | None
    currency: str | None  # None: no plan
    billing_mode: str | None
    members: tuple[MemberLine, ...]
    adjustments: tuple[AdjustmentLine, ...]
    monthly_fee: Decimal
    included_gpu_seconds: int
    included_images: int
    allowance_gpu_seconds_used: float
    allowance_images_used: int
    allowance_credit: Decimal  # 0 or negative: what the allowance took off
    total: Decimal
    note: str

    @property
    def jobs(self) -> int:
        return sum(line.jobs for line in self.members)

    @property
    def images(self) -> int:
        return sum(line.images for line in self.members)

    @property
    def gpu_seconds(self) -> float:
        return sum((line.gpu_seconds for line in self.members), 0.0)

    def as_json(self) -> dict[str, Any]:
        """JSON-safe: money as strings in the minor unit ("12.30"), times in the tenant's zone (ISO)."""
        return {
            "tenant": self.tenant_slug, "tenant_name": self.tenant_name, "month": self.month,
            "time_zone": self.time_zone, "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(), "plan": self.plan_name, "currency": self.currency,
            "billing_mode": self.billing_mode,
            "members": [
                {"user": line.username, "jobs": line.jobs, "images": line.images,
                 "gpu_seconds": line.gpu_seconds, "amount": str(line.amount)}
                for line in self.members
            ],
            "adjustments": [
                {"id": line.record_id, "user": line.username, "gpu_seconds": line.gpu_seconds,
                 "images": line.images, "reason": line.reason, "created_by": line.created_by,
                 "ended_at": line.ended_at.isoformat(), "amount": str(line.amount)}
                for line in self.adjustments
            ],
            "monthly_fee": str(self.monthly_fee),
            "included_gpu_seconds": self.included_gpu_seconds, "included_images": self.included_images,
            "allowance_gpu_seconds_used": self.allowance_gpu_seconds_used,
            "allowance_images_used": self.allowance_images_used,
            "allowance_credit": str(self.allowance_credit),
            "jobs": self.jobs, "images": self.images, "gpu_seconds": self.gpu_seconds,
            "total": str(self.total), "note": self.note,
        }


STATEMENT_CSV_HEADER = ("line", "user", "jobs", "images", "gpu_seconds", "amount", "currency", "reason", "created_by")


def statement_csv_rows(statement: Statement) -> list[tuple[Any, ...]]:
    """The statement as CSV rows (after `STATEMENT_CSV_HEADER`): members, adjustments, fee, credit, total."""
    currency = statement.currency or ""
    rows: list[tuple[Any, ...]] = [
        ("member", line.username, line.jobs, line.images, line.gpu_seconds, line.amount, currency, "", "")
        for line in statement.members
    ]
    rows += [
        ("adjustment", line.username, "", line.images, line.gpu_seconds, line.amount, currency, line.reason, line.created_by)
        for line in statement.adjustments
    ]
    rows.append(("monthly_fee", "", "", "", "", statement.monthly_fee, currency, "", ""))
    rows.append(("allowance_credit", "", "", statement.allowance_images_used, statement.allowance_gpu_seconds_used,
                 statement.allowance_credit, currency, "", ""))
    rows.append(("total", "", statement.jobs, statement.images, statement.gpu_seconds, statement.total, currency,
                 statement.note, ""))
    return rows


def allocate_scaled(scaled_lines: Sequence[Decimal], currency: str) -> tuple[Decimal, list[Decimal]]:
    """`tenants.money.allocate` over amounts given × 3600: the total is the exact sum rounded once.

    Each line is carried to 40 decimals; what that cut off in all (at most a few 1e-40) goes to the
    largest line, so the lines handed to `allocate` add up to the exact total to 40 decimals and a
    total that is exactly half a minor unit is never pushed below or above it."""
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        lines = [unscale(value) for value in scaled_lines]
        exact_total = unscale(sum(scaled_lines, ZERO))
        residual = exact_total - sum(lines, ZERO)
        if residual and lines:
            largest = max(range(len(lines)), key=lambda index: abs(lines[index]))
            lines[largest] += residual
        return allocate(lines, currency)


def _month_terms(book: PriceBook, start: dt.datetime, end: dt.datetime) -> Terms | None:
    terms = book.at(start)
    if terms is None:
        later = book.plan_dates_between(start, end)
        terms = book.at(later[0]) if later else None
    return terms


def statement_for(*, tenant: Tenant, month: str) -> Statement:
    """The statement of `tenant` for `month` ("YYYY-MM", in the tenant's time zone).

    `tenants.money.InvalidPeriod` for a malformed month; `Conflict` when the month's records are
    priced in two currencies (a plan change to another currency mid-month)."""
    zone = validate_time_zone(tenant.time_zone)
    start, end = month_bounds(month, tenant.time_zone)
    book = PriceBook(tenant.pk)
    terms = _month_terms(book, start, end)
    reserved = terms is not None and terms.reserved
    left_seconds = Decimal(terms.included_gpu_seconds) if terms and not reserved else ZERO
    left_images = terms.included_images if terms and not reserved else 0
    allowance_seconds_used, allowance_images_used = ZERO, 0
    credit_scaled = ZERO

    usage: dict[str, list] = {}  # username → [jobs, images, gpu_seconds (Decimal), scaled amount]
    for membership in Membership.objects.filter(tenant=tenant).select_related("user"):
        usage[membership.user.get_username()] = [0, 0, ZERO, ZERO]
    adjustments: list[tuple[int, str, float, int, dt.datetime, str, str, Decimal]] = []
    rows = (
        UsageRecord.objects.filter(tenant=tenant, ended_at__gte=start, ended_at__lt=end)
        .order_by("ended_at", "pk")
        .values_list("pk", "user__username", "kind", "gpu_seconds", "images", "ended_at", "reason", "created_by__username")
    )
    for pk, username, kind, gpu_seconds, images, ended_at, reason, created_by in rows.iterator(chunk_size=5000):
        record_terms = book.at(ended_at)
        seconds = exact_seconds(gpu_seconds)
        if record_terms is not None and terms is not None and record_terms.currency != terms.currency:
            raise Conflict(f"{tenant.slug}'s records of {month} are priced in {terms.currency} and "
                           f"{record_terms.currency}: bill the month by hand", field="month")
        scaled = record_terms.scaled_amount(seconds, images) if record_terms else ZERO
        if kind == UsageRecord.ADJUSTMENT:
            adjustments.append((pk, username, gpu_seconds, images, ended_at, reason, created_by or "", scaled))
            continue
        line = usage.setdefault(username, [0, 0, ZERO, ZERO])
        line[0] += 1
        line[1] += images
        line[2] += seconds
        line[3] += scaled
        if record_terms is not None and not record_terms.reserved and not reserved:
            covered_seconds = min(left_seconds, max(seconds, ZERO))
            covered_images = min(left_images, max(images, 0))
            if covered_seconds or covered_images:
                left_seconds -= covered_seconds
                left_images -= covered_images
                allowance_seconds_used += covered_seconds
                allowance_images_used += covered_images
                credit_scaled -= record_terms.scaled_amount(covered_seconds, covered_images)

    names = sorted(usage)
    fee = terms.monthly_fee if terms else ZERO
    scaled_lines = [usage[name][3] for name in names] + [adjustment[-1] for adjustment in adjustments]
    scaled_lines += [fee * SECONDS_PER_HOUR, credit_scaled]
    if terms is None:
        total, amounts = ZERO, [ZERO] * len(scaled_lines)
    else:
        total, amounts = allocate_scaled(scaled_lines, terms.currency)
    member_amounts = amounts[: len(names)]
    adjustment_amounts = amounts[len(names): len(names) + len(adjustments)]
    fee_amount, credit_amount = amounts[-2], amounts[-1]

    if terms is None:
        note = "No plan: usage only, nothing is charged."
    elif reserved:
        note = f"Reserved capacity ({terms.plan_name}): the monthly fee only; usage is listed at 0."
    else:
        note = ""
    return Statement(
        tenant_slug=tenant.slug, tenant_name=tenant.name, month=month.strip(), time_zone=tenant.time_zone,
        period_start=start, period_end=end,
        plan_name=terms.plan_name if terms else None, currency=terms.currency if terms else None,
        billing_mode=terms.billing_mode if terms else None,
        members=tuple(
            MemberLine(username=name, jobs=usage[name][0], images=usage[name][1],
                       gpu_seconds=float(usage[name][2]), amount=amount)
            for name, amount in zip(names, member_amounts)
        ),
        adjustments=tuple(
            AdjustmentLine(record_id=pk, username=username, gpu_seconds=gpu_seconds, images=images, reason=reason,
                           created_by=created_by, ended_at=ended_at.astimezone(zone), amount=amount)
            for (pk, username, gpu_seconds, images, ended_at, reason, created_by, _), amount
            in zip(adjustments, adjustment_amounts)
        ),
        monthly_fee=fee_amount,
        included_gpu_seconds=terms.included_gpu_seconds if terms and not reserved else 0,
        included_images=terms.included_images if terms and not reserved else 0,
        allowance_gpu_seconds_used=float(allowance_seconds_used), allowance_images_used=allowance_images_used,
        allowance_credit=credit_amount, total=total, note=note,
    )
