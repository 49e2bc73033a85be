"""How the platform pages write numbers, money, dates and times: `{% load atelier_format %}`.

- `{{ seconds|gpu_seconds }}`: GPU-seconds to 0.1 s, thousands separated (`1,234.5`).
- `{{ n|count }}`: a whole number, thousands separated (`12,345`).
- `{{ fraction|percent }}`: a fraction as a percentage to 0.1 (`0.4567` → `45.7 %`).
- `{{ amount|money:currency }}`: the currency's minor unit (`tenants.money.format_money`).
- `{{ moment|local_datetime:time_zone }}`, `{{ moment|local_date:time_zone }}`: an aware datetime
  in the tenant's time zone (an operator's pages pass "UTC"), with the zone's abbreviation.

A value that is not a number (None, "") is written "—", never an error page.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal, InvalidOperation

from django import template

from tenants.money import InvalidMoney, InvalidPeriod, format_money, validate_time_zone

register = template.Library()
MISSING = "—"


def _number(value: object) -> float | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@register.filter
def gpu_seconds(value: object) -> str:
    number = _number(value)
    if number is None:
        return MISSING
    # half up on the decimal value written (2810.25 → 2,810.3), as bills round, not half-even on the binary float
    rounded = Decimal(repr(number)).quantize(Decimal("0.1"), rounding="ROUND_HALF_UP")
    text = f"{rounded:,.1f}"
    return "0.0" if text == "-0.0" else text


@register.filter
def count(value: object) -> str:
    number = _number(value)
    return MISSING if number is None else f"{round(number):,d}"


@register.filter
def percent(value: object) -> str:
    number = _number(value)
    return MISSING if number is None else f"{number * 100:,.1f} %"


@register.filter
def money(value: object, currency: str) -> str:
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
        return format_money(amount, str(currency))
    except (InvalidOperation, InvalidMoney, ValueError):
        return MISSING


def _local(value: object, time_zone: str) -> dt.datetime | None:
    if not isinstance(value, dt.datetime):
        return None
    try:
        zone = validate_time_zone(str(time_zone or "UTC"))
    except InvalidPeriod:
        zone = validate_time_zone("UTC")
    aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)
    return aware.astimezone(zone)


@register.filter
def local_datetime(value: object, time_zone: str = "UTC") -> str:
    local = _local(value, time_zone)
    return MISSING if local is None else f"{local:%Y-%m-%d %H:%M} {local.tzname()}"


@register.filter
def local_date(value: object, time_zone: str = "UTC") -> str:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value.isoformat()
    local = _local(value, time_zone)
    return MISSING if local is None else local.date().isoformat()
