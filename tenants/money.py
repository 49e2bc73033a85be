"""Money and billing periods. Pure: no database.

Amounts are `Decimal`s in a currency's major unit, rounded half-up to its minor unit (ISO 4217's
exponent, `CURRENCY_DECIMALS`) only where a bill shows them; a price may not have more decimals
than its currency has. Prices per GPU time are given per GPU-hour, as GPUs are priced: a price
per GPU-second in cents could not say $2.50 an hour.

A period is a calendar month in the tenant's time zone: `month_bounds("2026-11", "Asia/Shanghai")`
is the two aware datetimes it runs between. A job counts in the period its end time falls in.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

# ISO 4217 minor-unit exponents of the currencies a plan may bill in.
CURRENCY_DECIMALS: dict[str, int] = {
    "USD": 2, "EUR": 2, "GBP": 2, "CNY": 2, "HKD": 2, "SGD": 2, "AUD": 2, "CAD": 2, "CHF": 2, "INR": 2,
    "JPY": 0, "KRW": 0, "TWD": 2, "BHD": 3, "KWD": 3,
}
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


class InvalidMoney(ValueError):
    pass


class InvalidPeriod(ValueError):
    pass


def currency_decimals(currency: str) -> int:
    try:
        return CURRENCY_DECIMALS[currency]
    except KeyError:
        raise InvalidMoney(
            f"unknown currency {currency!r}; use one of {', '.join(sorted(CURRENCY_DECIMALS))}"
        ) from None


def minor_unit(currency: str) -> Decimal:
    return Decimal(1).scaleb(-currency_decimals(currency))


def parse_price(value: object, currency: str, *, field: str = "price") -> Decimal:
    """A price as given by an operator: 0 or more, at most the currency's decimals."""
    try:
        price = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise InvalidMoney(f"{field}: {value!r} is not a number") from None
    if not price.is_finite() or price < 0:
        raise InvalidMoney(f"{field}: must be 0 or more")
    decimals = currency_decimals(currency)
    if price != price.quantize(minor_unit(currency), rounding=ROUND_HALF_UP):
        raise InvalidMoney(f"{field}: {currency} has {decimals} decimal places; {value} has more")
    return price


def round_money(amount: Decimal, currency: str) -> Decimal:
    return amount.quantize(minor_unit(currency), rounding=ROUND_HALF_UP)


def allocate(exact: Sequence[Decimal], currency: str) -> tuple[Decimal, list[Decimal]]:
    """Round a total and its lines so the lines add up to the total exactly.

    The total is the exact sum rounded once; each line gets its exact amount rounded down to the
    minor unit, and the minor units left over go to the lines with the largest remainders
    (largest-remainder method): every line is within one minor unit of its exact amount, and no
    cent appears or disappears between the lines and the total.
    """
    unit = minor_unit(currency)
    total = round_money(sum(exact, Decimal(0)), currency)
    floors = [(amount / unit).to_integral_value(rounding="ROUND_FLOOR") * unit for amount in exact]
    left = int(((total - sum(floors, Decimal(0))) / unit).to_integral_value())
    order = sorted(range(len(exact)), key=lambda index: exact[index] - floors[index], reverse=True)
    if left < 0:  # (only with negative adjustments) take back from the smallest remainders
        order.reverse()
    lines = list(floors)
    for index in order[: abs(left)]:
        lines[index] += unit if left > 0 else -unit
    return total, lines


def format_money(amount: Decimal, currency: str) -> str:
    """`12.30 USD`, `1,200 JPY`: the currency's minor unit, thousands separated."""
    decimals = currency_decimals(currency)
    return f"{round_money(amount, currency):,.{decimals}f} {currency}"


def validate_time_zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidPeriod(f"unknown time zone {name!r}; use an IANA name such as 'Europe/Berlin' or 'UTC'") from None


def parse_month(value: object) -> tuple[int, int]:
    """`"2026-11"` → (2026, 11). `InvalidPeriod` for anything else (a negative or 13th month...)."""
    match = _MONTH.match(str(value or "").strip())
    if not match:
        raise InvalidPeriod(f"month must be written YYYY-MM (e.g. 2026-11), not {value!r}")
    year, month = int(match.group(1)), int(match.group(2))
    if not 1 <= month <= 12 or year < 2000:
        raise InvalidPeriod(f"{value!r} is not a month: use YYYY-MM with a month from 01 to 12 and a year from 2000")
    return year, month


def month_bounds(month: str, time_zone: str) -> tuple[dt.datetime, dt.datetime]:
    """The start (inclusive) and end (exclusive) of `month` in `time_zone`, as aware datetimes."""
    year, number = parse_month(month)
    zone = validate_time_zone(time_zone)
    start = dt.datetime(year, number, 1, tzinfo=zone)
    end = dt.datetime(year + (number == 12), number % 12 + 1, 1, tzinfo=zone)
    return start, end


def window_bounds(window: str, now: dt.datetime, time_zone: str) -> tuple[dt.datetime, dt.datetime]:
    """The calendar minute / hour / day / month `now` falls in, in `time_zone`: (start, reset)."""
    local = now.astimezone(validate_time_zone(time_zone))
    if window == "minute":
        start = local.replace(second=0, microsecond=0)
        return start, start + dt.timedelta(minutes=1)
    if window == "hour":
        start = local.replace(minute=0, second=0, microsecond=0)
        return start, start + dt.timedelta(hours=1)
    if window == "day":
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + dt.timedelta(days=1)  # wall-clock arithmetic: the next midnight, DST or not
    if window == "month":
        return month_bounds(f"{local.year:04d}-{local.month:02d}", time_zone)
    raise ValueError(f"unknown window {window!r}")
