"""Monthly statements (`tenants/statements.py`): exact to the cent on effective-dated prices, the
allowance consumed in end order, adjustments, reserved capacity, no plan, the tenant's time zone."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tenants.models import Plan, Tenant
from tenants.money import InvalidPeriod
from tenants.statements import statement_for
from tests.tenants.usage_helpers import at, job_record, november_of_studio_a, plan, price

pytestmark = pytest.mark.django_db


def test_november_is_priced_record_by_record_at_the_price_of_its_end_with_the_allowance_and_fee(personas) -> None:
    november_of_studio_a(personas)
    statement = statement_for(tenant=Tenant.objects.get(slug="studio-a"), month="2026-11")

    assert (statement.currency, statement.billing_mode, statement.plan_name) == ("USD", "generation_time", "Pro")
    assert statement.period_start.isoformat() == "2026-11-01T00:00:00+08:00"
    assert statement.period_end.isoformat() == "2026-12-01T00:00:00+08:00"
    lines = {line.username: line for line in statement.members}
    # alice: 1800 s + 4 images at 2.50/0.010 (1.29), then 1010.25 s + 4 images at 3.00/0.020 (0.921875): 2.211875
    # bob: the job straddling midnight (counted once, on its end, in November) and 2700.5 s: 3300.5 s at 2.50 + 10 images
    # at 0.010 = 2.392013…; October's and December's records are not in it
    assert (lines["alice"].jobs, lines["alice"].images, lines["alice"].gpu_seconds) == (3, 8, 2810.25)
    assert (lines["bob"].jobs, lines["bob"].images, lines["bob"].gpu_seconds) == (2, 10, 3300.5)
    assert (lines["alice"].amount, lines["bob"].amount) == (Decimal("2.21"), Decimal("2.39"))
    [refund] = statement.adjustments
    # -100 s and -1 image at the price of its date (3.00, 0.020): -0.10333…, rounded up by the largest remainder
    assert (refund.username, refund.reason, refund.created_by, refund.amount) == (
        "bob", "refund of a failed batch", "admin", Decimal("-0.10"))
    # the fee and allowance of the price in effect on 1 November (not the 99.00 of the 15th); the allowance
    # (3600 s, 10 images, at 2.50 and 0.010) is used up by the first three records, all before the price change
    assert statement.monthly_fee == Decimal("20.00")
    assert (statement.allowance_gpu_seconds_used, statement.allowance_images_used) == (3600.0, 10)
    assert statement.allowance_credit == Decimal("-2.60")
    # the exact sum 21.900555… rounded once; the lines add up to it
    assert statement.total == Decimal("21.90")
    assert sum(line.amount for line in statement.members) + refund.amount + statement.monthly_fee \
        + statement.allowance_credit == statement.total
    assert statement.note == ""


def test_a_later_price_never_changes_a_past_month(personas) -> None:
    data = november_of_studio_a(personas)
    before = statement_for(tenant=data["tenant"], month="2026-11")
    price(data["plan"], since=at("2026-12-01 00:00"), per_hour="9.00", per_image="1.000", fee="500.00")
    assert statement_for(tenant=data["tenant"], month="2026-11") == before
    december = statement_for(tenant=data["tenant"], month="2026-12")
    # December: bob's job that ended at 00:10 on the 1st, at December's price, plus its fee
    assert [(line.username, line.jobs) for line in december.members] == [("alice", 0), ("bob", 1)]
    assert december.total == Decimal("501.18")  # 500 + 0.175 + 1.00, rounded once


def test_the_total_is_the_exact_sum_rounded_once_not_a_sum_of_rounded_lines(personas) -> None:
    tenant = Tenant.objects.get(slug="studio-a")
    cheap = plan(tenant, since=at("2026-01-01 00:00"))
    price(cheap, since=at("2026-01-01 00:00"), per_hour="1.00")
    tenant.time_zone = "Asia/Shanghai"
    tenant.save()
    # three records of 6 s at 1.00 an hour: 0.001666… each, 0.005 together: half a cent, rounded up once
    for user in (personas["alice"], personas["bob"], personas["alice"]):
        job_record(user, ended=at("2026-11-03 10:00"), gpu_seconds=6, images=0)
    statement = statement_for(tenant=tenant, month="2026-11")
    assert statement.total == Decimal("0.01")
    assert sorted(line.amount for line in statement.members) == [Decimal("0.00"), Decimal("0.01")]


def test_reserved_capacity_bills_the_monthly_fee_only_and_shows_usage_at_zero(personas) -> None:
    tenant = Tenant.objects.get(slug="studio-a")
    reserved = plan(tenant, slug="reserved", since=at("2026-01-01 00:00"), mode=Plan.BillingMode.RESERVED_CAPACITY)
    price(reserved, since=at("2026-01-01 00:00"), per_hour="2.00", per_image="0.100", fee="1500.00", gpu_free=10)
    job_record(personas["alice"], ended=at("2026-11-03 10:00"), gpu_seconds=7200, images=50)
    statement = statement_for(tenant=tenant, month="2026-11")
    assert statement.total == Decimal("1500.00")
    [alice, bob] = statement.members
    assert (alice.jobs, alice.images, alice.gpu_seconds, alice.amount) == (1, 50, 7200.0, Decimal("0.00"))
    assert (bob.jobs, bob.amount) == (0, Decimal("0.00"))
    assert statement.allowance_credit == 0 and "Reserved capacity" in statement.note


def test_a_tenant_without_a_plan_gets_its_usage_only_and_is_told_so(personas) -> None:
    job_record(personas["charlie"], ended=at("2026-11-03 10:00"), gpu_seconds=30, images=2)
    statement = statement_for(tenant=Tenant.objects.get(slug="studio-b"), month="2026-11")
    assert statement.currency is None and statement.total == 0
    assert [(line.username, line.jobs, line.images, line.amount) for line in statement.members] == [("charlie", 1, 2, 0)]
    assert statement.note.startswith("No plan")
    assert statement.as_json()["total"] == "0"


def test_records_in_two_currencies_in_one_month_are_refused(personas) -> None:
    from a1111.errors import Conflict

    tenant = Tenant.objects.get(slug="studio-a")
    price(plan(tenant, slug="usd", since=at("2026-01-01 00:00")), since=at("2026-01-01 00:00"), per_hour="1.00")
    price(plan(tenant, slug="eur", since=at("2026-11-10 00:00"), currency="EUR"), since=at("2026-01-01 00:00"), per_hour="1.00")
    job_record(personas["alice"], ended=at("2026-11-20 10:00"), gpu_seconds=30, images=2)
    with pytest.raises(Conflict):
        statement_for(tenant=tenant, month="2026-11")


@pytest.mark.parametrize("month", ["2026-13", "2026-00", "-2026-11", "2026-1", "", "1999-12", "november"])
def test_a_malformed_month_is_refused_saying_the_format(personas, month) -> None:
    with pytest.raises(InvalidPeriod, match="YYYY-MM"):
        statement_for(tenant=Tenant.objects.get(slug="studio-a"), month=month)


def test_the_allowance_is_used_in_end_order_and_credited_at_the_prices_of_the_records_it_covered(personas) -> None:
    tenant = Tenant.objects.get(slug="studio-a")
    pro = plan(tenant, since=at("2026-01-01 00:00"))
    price(pro, since=at("2026-01-01 00:00"), per_hour="2.50", gpu_free=3600)
    price(pro, since=at("2026-11-15 00:00"), per_hour="3.00", gpu_free=0)
    # written out of order: the allowance follows the ends, not the insertion
    job_record(personas["bob"], ended=at("2026-11-20 10:00"), gpu_seconds=1000, images=0)  # 600 s covered, at 3.00
    job_record(personas["alice"], ended=at("2026-11-03 10:00"), gpu_seconds=3000, images=0)  # all covered, at 2.50
    job_record(personas["alice"], ended=at("2026-11-25 10:00"), gpu_seconds=360, images=0)  # none left
    statement = statement_for(tenant=tenant, month="2026-11")
    assert statement.allowance_gpu_seconds_used == 3600.0
    assert statement.allowance_credit == Decimal("-2.58")  # 3000 s at 2.50 (2.0833…) + 600 s at 3.00 (0.50)
    # 4000 s at 2.50/3.00 (2.0833… + 0.8333…) + 360 s at 3.00 (0.30) − 2.5833…: 0.6333… for 760 s billed
    assert statement.total == Decimal("0.63")
    assert {line.username: line.amount for line in statement.members} == {"alice": Decimal("2.38"), "bob": Decimal("0.83")}
