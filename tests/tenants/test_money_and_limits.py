"""The pure billing vocabulary: money rounding and allocation, periods in a tenant's time zone,
and limits (parsing, a member's limits within the plan's)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from tenants.limits import MEMBER_KEYS, InvalidLimits, Limits
from tenants.money import (
    InvalidMoney,
    InvalidPeriod,
    allocate,
    format_money,
    month_bounds,
    parse_month,
    parse_price,
    window_bounds,
)


@pytest.mark.parametrize(
    "exact",
    [
        [Decimal("0.3333"), Decimal("0.3333"), Decimal("0.3334")],
        [Decimal("1.005"), Decimal("2.005"), Decimal("3.005")],
        [Decimal("0.001")] * 7,
        [Decimal("10"), Decimal("-0.004"), Decimal("0.0049")],
        [],
    ],
)
def test_allocated_lines_add_up_to_the_total_and_each_is_within_a_cent(exact) -> None:
    total, lines = allocate(exact, "USD")
    assert total == sum(exact, Decimal(0)).quantize(Decimal("0.01"), rounding="ROUND_HALF_UP")
    assert sum(lines, Decimal(0)) == total
    for line, amount in zip(lines, exact, strict=True):
        assert abs(line - amount) < Decimal("0.01")
        assert line == line.quantize(Decimal("0.01"))


def test_a_currency_without_minor_units_rounds_to_whole_units() -> None:
    total, lines = allocate([Decimal("10.4"), Decimal("10.4"), Decimal("10.4")], "JPY")
    assert total == Decimal(31) and sum(lines) == 31 and sorted(lines) == [10, 10, 11]
    assert format_money(Decimal("1200"), "JPY") == "1,200 JPY"
    assert format_money(Decimal("12.3"), "USD") == "12.30 USD"


def test_a_price_with_more_decimals_than_its_currency_is_refused() -> None:
    assert parse_price("2.50", "USD") == Decimal("2.50")
    assert parse_price("0.125", "KWD") == Decimal("0.125")
    with pytest.raises(InvalidMoney, match="2 decimal places"):
        parse_price("0.001", "USD")
    with pytest.raises(InvalidMoney, match="0 decimal places"):
        parse_price("1.5", "JPY")
    with pytest.raises(InvalidMoney, match="0 or more"):
        parse_price("-1", "USD")
    with pytest.raises(InvalidMoney, match="not a number"):
        parse_price("two", "USD")
    with pytest.raises(InvalidMoney, match="unknown currency"):
        parse_price("1", "XYZ")


@pytest.mark.parametrize("month", ["2026-13", "2026-00", "-2026-11", "2026-1", "26-11", "", None, "1999-12"])
def test_a_malformed_month_is_refused_saying_how_to_write_it(month) -> None:
    with pytest.raises(InvalidPeriod, match="YYYY-MM"):
        parse_month(month)


def test_a_month_runs_between_local_midnights_of_the_tenant_zone() -> None:
    start, end = month_bounds("2026-12", "Asia/Shanghai")
    assert start.astimezone(dt.UTC) == dt.datetime(2026, 11, 30, 16, tzinfo=dt.UTC)
    assert end.astimezone(dt.UTC) == dt.datetime(2026, 12, 31, 16, tzinfo=dt.UTC)
    with pytest.raises(InvalidPeriod, match="time zone"):
        month_bounds("2026-12", "Mars/Olympus")


def test_quota_windows_reset_at_the_next_local_boundary_across_daylight_saving() -> None:
    # 2026-03-29 is 23 hours long in Berlin (clocks go forward at 02:00).
    now = dt.datetime(2026, 3, 29, 10, 30, tzinfo=dt.UTC)
    start, reset = window_bounds("day", now, "Europe/Berlin")
    assert (start.astimezone(dt.UTC), reset.astimezone(dt.UTC)) == (
        dt.datetime(2026, 3, 28, 23, tzinfo=dt.UTC), dt.datetime(2026, 3, 29, 22, tzinfo=dt.UTC))
    start, reset = window_bounds("minute", now, "UTC")
    assert reset - start == dt.timedelta(minutes=1) and start <= now < reset
    start, reset = window_bounds("month", now, "UTC")
    assert (start.day, reset.month) == (1, 4)


def test_limits_parse_strictly() -> None:
    limits = Limits.from_json({"user_images_per_day": "10", "user_gpu_seconds_per_hour": 12.5, "max_steps": None})
    assert limits.to_json() == {"user_gpu_seconds_per_hour": 12.5, "user_images_per_day": 10}
    for bad, key in [({"user_images_per_day": -1}, "user_images_per_day"), ({"max_steps": 2.5}, "max_steps"),
                     ({"nope": 1}, "nope"), ({"max_pixels": True}, "max_pixels"), ({"max_pixels": "x"}, "max_pixels")]:
        with pytest.raises(InvalidLimits) as error:
            Limits.from_json(bad)
        assert error.value.key == key
    with pytest.raises(InvalidLimits, match="unknown limit"):
        Limits.from_json({"tenant_images_per_day": 5}, allowed=MEMBER_KEYS)


def test_a_members_limits_stay_within_the_plan_and_the_lower_bound_applies() -> None:
    plan = Limits.from_json({"user_images_per_day": 100, "max_steps": 50})
    member = Limits.from_json({"user_images_per_day": 20, "user_running_jobs": 1})
    member.check_within(plan)
    assert plan.tightened_by(member).to_json() == {"user_images_per_day": 20, "user_running_jobs": 1, "max_steps": 50}
    with pytest.raises(InvalidLimits, match="above the plan's 50") as error:
        Limits.from_json({"max_steps": 80}).check_within(plan)
    assert error.value.key == "max_steps"
