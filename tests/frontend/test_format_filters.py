"""The number, money and time filters every platform page writes with (`frontend/templatetags/atelier_format.py`)."""

from __future__ import annotations

from datetime import date, datetime
from datetime import timezone as dt_timezone
from decimal import Decimal

import pytest
from django.template import Context, Template

from frontend.templatetags.atelier_format import count, gpu_seconds, local_date, local_datetime, money, percent


@pytest.mark.parametrize(("value", "text"), [
    (0, "0.0"), (0.04, "0.0"), (0.05, "0.1"), (12.25, "12.3"), (12.26, "12.3"), (1234.56, "1,234.6"),
    (-0.75, "-0.8"), (-0.01, "0.0"), ("3.5", "3.5"), (None, "—"), ("", "—"), ("x", "—"), (float("inf"), "—"),
    (True, "—"),
])
def test_gpu_seconds_to_a_tenth(value, text) -> None:
    assert gpu_seconds(value) == text


def test_counts_and_percentages() -> None:
    assert [count(v) for v in (0, 7, 1200, 1234567, -3, None)] == ["0", "7", "1,200", "1,234,567", "-3", "—"]
    assert [percent(v) for v in (0, 0.1, 0.4567, 1.5, None)] == ["0.0 %", "10.0 %", "45.7 %", "150.0 %", "—"]


def test_money_in_the_currencys_minor_unit() -> None:
    assert money(Decimal("12.3"), "USD") == "12.30 USD"
    assert money(Decimal("1200.4"), "JPY") == "1,200 JPY"
    assert money("0.0005", "BHD") == "0.001 BHD"
    assert money("12.345", "EUR") == "12.35 EUR"  # half up
    assert money("x", "USD") == "—" and money(1, "XXX") == "—"


def test_times_in_the_tenants_time_zone() -> None:
    moment = datetime(2026, 11, 3, 23, 30, tzinfo=dt_timezone.utc)
    assert local_datetime(moment, "Asia/Shanghai") == "2026-11-04 07:30 CST"
    assert local_datetime(moment, "UTC") == "2026-11-03 23:30 UTC"
    assert local_datetime(moment, "") == "2026-11-03 23:30 UTC"  # an operator: no tenant
    assert local_datetime(moment, "Not/AZone") == "2026-11-03 23:30 UTC"
    assert local_date(moment, "Asia/Shanghai") == "2026-11-04" and local_date(date(2026, 11, 3)) == "2026-11-03"
    assert local_datetime(None, "UTC") == "—" and local_date("yesterday") == "—"


def test_the_filters_in_a_template() -> None:
    template = Template("{% load atelier_format %}{{ s|gpu_seconds }} {{ a|money:c }} {{ t|local_datetime:z }}")
    context = Context({"s": 1234.56, "a": Decimal("5"), "c": "USD",
                       "t": datetime(2026, 7, 1, 12, tzinfo=dt_timezone.utc), "z": "Europe/Berlin"})
    assert template.render(context) == "1,234.6 5.00 USD 2026-07-01 14:00 CEST"
