"""Usage exports (`tenants/exports.py`) through their three doors: `manage.py export_usage`, the
API (`/api/v1/usage/records`, `/api/v1/usage/statement`) and the bill page; plus the operators'
admin views (export, adjustment)."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from tenants.models import AuditEntry, Tenant, UsageRecord
from tenants.exports import RECORD_COLUMNS
from tests.tenants.usage_helpers import november_of_studio_a

pytestmark = pytest.mark.django_db


@pytest.fixture
def november(personas):
    return november_of_studio_a(personas)


def _command(*args: str) -> str:
    out = io.StringIO()
    call_command("export_usage", *args, stdout=out)
    return out.getvalue()


def _body(response) -> str:
    return b"".join(response.streaming_content).decode() if response.streaming else response.content.decode()


def test_the_months_records_stream_one_row_each_in_the_tenants_zone_with_their_own_amount(api, november) -> None:
    response = api("alice").get("/api/v1/usage/records?month=2026-11&format=csv")
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="usage-studio-a-2026-11.csv"' in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(_body(response))))
    assert tuple(rows[0]) == RECORD_COLUMNS
    expected = ["straddling", "r2", "r3", "r4", "adjustment", "r5"]  # by end; October's and December's left out
    assert [int(row["record_id"]) for row in rows] == [november[name].pk for name in expected]
    straddling = rows[0]
    assert (straddling["user"], straddling["tenant"], straddling["job_id"]) == (
        "bob", "studio-a", november["straddling"].job.public_id)
    assert straddling["started_at"] == "2026-10-31T23:55:00+08:00"
    assert straddling["ended_at"] == "2026-11-01T00:05:00+08:00"
    # each at its own price: 600 s at 2.50/h + 2 images at 0.010; 1000.25 s at 3.00/h + 3 at 0.020
    assert [row["amount"] for row in rows] == ["0.44", "1.29", "1.96", "0.89", "-0.10", "0.03"]
    assert {row["currency"] for row in rows} == {"USD"}
    adjustment = rows[4]
    assert (adjustment["kind"], adjustment["job_id"], adjustment["reason"]) == ("adjustment", "", "refund of a failed batch")


def test_json_holds_the_same_rows_and_from_to_dates_narrow_the_period(api, november) -> None:
    as_csv = list(csv.DictReader(io.StringIO(_body(api("alice").get("/api/v1/usage/records?month=2026-11&format=csv")))))
    as_json = json.loads(_body(api("alice").get("/api/v1/usage/records?month=2026-11")))
    assert (as_json["month"], as_json["tenant"], as_json["user"]) == ("2026-11", "studio-a", None)
    assert [{key: str(value) for key, value in row.items()} for row in as_json["records"]] == as_csv
    days = json.loads(_body(api("alice").get("/api/v1/usage/records?from=2026-11-01&to=2026-11-02&user=alice")))
    assert [row["record_id"] for row in days["records"]] == [november["r2"].pk]


def test_the_commands_csv_is_the_apis_and_the_statement_matches_the_bill_page(api, client, personas, november, tmp_path) -> None:
    from_api = _body(api("alice").get("/api/v1/usage/records?month=2026-11&format=csv"))
    assert _command("--month", "2026-11", "--tenant", "studio-a") == from_api
    output = tmp_path / "bob.json"
    _command("--month", "2026-11", "--tenant", "studio-a", "--user", "bob", "--format", "json", "--output", str(output))
    assert output.read_text() == _body(api("alice").get("/api/v1/usage/records?month=2026-11&user=bob"))

    statement_csv = _command("--month", "2026-11", "--tenant", "studio-a", "--statement")
    assert statement_csv == _body(api("alice").get("/api/v1/usage/statement?month=2026-11&format=csv"))
    statement = json.loads(_command("--month", "2026-11", "--tenant", "studio-a", "--statement", "--format", "json"))
    assert statement == json.loads(_body(api("admin").get("/api/v1/usage/statement?month=2026-11&tenant=studio-a")))
    assert (statement["total"], statement["allowance_credit"], statement["monthly_fee"]) == ("21.90", "-2.60", "20.00")
    lines = {row["line"]: row for row in csv.DictReader(io.StringIO(statement_csv))}
    assert lines["total"]["amount"] == "21.90"

    client.force_login(personas["alice"])
    page = client.get("/team/bill/?month=2026-11")
    assert page.status_code == 200
    html = page.content.decode()
    for shown in ("21.90 USD", "2.21 USD", "2.39 USD", "-0.10 USD", "20.00 USD", "-2.60 USD", "3,300.5", "2,810.3",
                  "2026-11-01 to 2026-11-30 (Asia/Shanghai)", "2026-11-25 09:00", "refund of a failed batch"):
        assert shown in html, shown
    assert 'id="download-csv" href="/api/v1/usage/statement?month=2026-11&amp;format=csv"' in html
    assert 'id="download-json" href="/api/v1/usage/statement?month=2026-11&amp;format=json"' in html
    # the links are the API's: what they download is the command's statement
    assert _body(client.get("/api/v1/usage/statement?month=2026-11&format=csv")) == statement_csv


def test_every_tenant_is_exported_in_its_own_zone_when_none_is_named(api, personas, november) -> None:
    from tests.tenants.usage_helpers import at, job_record

    charlie_utc = job_record(personas["charlie"], ended=at("2026-10-31 20:00"), gpu_seconds=5, images=1)  # 12:00 UTC
    everything = list(csv.DictReader(io.StringIO(_command("--month", "2026-10"))))
    assert [int(row["record_id"]) for row in everything] == [charlie_utc.pk, november["october"].pk]
    assert everything[0]["ended_at"] == "2026-10-31T12:00:00+00:00" and everything[0]["amount"] == ""


@pytest.mark.parametrize("args, message", [
    (("--month", "2026-13"), "YYYY-MM"),
    (("--month=-2026-11",), "YYYY-MM"),
    (("--month", "2026-1"), "YYYY-MM"),
    ((), "month"),
    (("--month", "2026-11", "--tenant", "nowhere"), "no tenant 'nowhere'"),
    (("--month", "2026-11", "--user", "nobody"), "no member 'nobody'"),
    (("--month", "2026-11", "--tenant", "studio-b", "--user", "alice"), "no member 'alice' in studio-b"),
    (("--month", "2026-11", "--statement"), "--tenant"),
    (("--from", "2026-11-05", "--to", "2026-11-01"), "after"),
    (("--from", "2026-11-05"), "YYYY-MM"),
    (("--month", "2026-11", "--from", "2026-11-05", "--to", "2026-11-06"), "not both"),
])
def test_the_command_refuses_bad_input_clearly(personas, args, message) -> None:
    with pytest.raises(CommandError, match=message):
        _command(*args)


def test_operators_export_and_adjust_in_admin_and_records_stay_unchangeable(client, personas, november) -> None:
    client.force_login(personas["admin"])
    listing = client.get("/admin/tenants/usagerecord/").content.decode()
    assert 'id="usage-export" href="/admin/tenants/usagerecord/export/"' in listing
    assert 'id="usage-adjust" href="/admin/tenants/usagerecord/adjust/"' in listing
    assert client.get("/admin/tenants/usagerecord/export/").status_code == 200
    exported = client.get("/admin/tenants/usagerecord/export/?month=2026-11&tenant=studio-a&format=csv")
    assert _body(exported) == _command("--month", "2026-11", "--tenant", "studio-a")
    statement = client.get("/admin/tenants/usagerecord/export/?month=2026-11&tenant=studio-a&format=json&statement=on")
    assert json.loads(_body(statement))["total"] == "21.90"
    assert client.get("/admin/tenants/usagerecord/export/?month=2026-13&format=csv").status_code == 400
    assert client.get("/admin/tenants/usagerecord/export/?month=2026-11&format=csv&statement=on").status_code == 400

    form = {"tenant": november["tenant"].pk, "member": "bob", "gpu_seconds": "-30.5", "images": "-2", "reason": ""}
    refused = client.post("/admin/tenants/usagerecord/adjust/", form)
    assert refused.status_code == 400 and UsageRecord.objects.filter(kind="adjustment").count() == 1
    wrong_member = client.post("/admin/tenants/usagerecord/adjust/", {**form, "member": "charlie", "reason": "x"})
    assert wrong_member.status_code == 400 and "not a member of studio-a" in wrong_member.content.decode()
    done = client.post("/admin/tenants/usagerecord/adjust/", {**form, "reason": "duplicate job billed twice"})
    assert done.status_code == 302
    record = UsageRecord.objects.filter(kind="adjustment").order_by("-pk").first()
    assert (record.user.username, record.gpu_seconds, record.images, record.reason, record.created_by) == (
        "bob", -30.5, -2, "duplicate job billed twice", personas["admin"])
    entry = AuditEntry.objects.get(action="usage.adjust")
    assert (entry.actor_name, entry.tenant, entry.reason, entry.after["pk"]) == (
        "admin", november["tenant"], "duplicate job billed twice", record.pk)
    # still no way to change or delete one
    assert client.post(f"/admin/tenants/usagerecord/{record.pk}/change/", {"gpu_seconds": "0"}).status_code == 403
    assert client.post(f"/admin/tenants/usagerecord/{record.pk}/delete/", {"post": "yes"}).status_code == 403


def test_members_and_tenant_admins_get_no_admin_export_or_adjustment(client, personas) -> None:
    for name in ("alice", "bob"):
        client.force_login(personas[name])
        for url in ("/admin/tenants/usagerecord/export/?month=2026-11&format=csv", "/admin/tenants/usagerecord/adjust/"):
            assert client.get(url).status_code == 302  # to the admin sign-in
        assert client.post("/admin/tenants/usagerecord/adjust/", {"tenant": 1, "member": "bob", "gpu_seconds": "1000",
                                                                  "images": "0", "reason": "x"}).status_code == 302
    assert not UsageRecord.objects.exists()


def test_the_adjustment_service_refuses_what_it_cannot_record(personas) -> None:
    from a1111.errors import InvalidField
    from tenants.services import usage_adjust

    tenant = Tenant.objects.get(slug="studio-a")
    call = dict(actor=personas["admin"], tenant=tenant, user=personas["bob"], gpu_seconds=1.0, images=0, reason="r")
    for bad, field in ((dict(reason="  "), "reason"), (dict(gpu_seconds=float("nan")), "gpu_seconds"),
                       (dict(gpu_seconds=0, images=0), "gpu_seconds"), (dict(images=1.5), "images"),
                       (dict(user=personas["charlie"]), "user")):
        with pytest.raises(InvalidField) as refused:
            usage_adjust(**{**call, **bad})
        assert refused.value.field == field
    assert not UsageRecord.objects.exists() and not AuditEntry.objects.exists()
    assert usage_adjust(**call).gpu_seconds == Decimal("1.0")


def test_text_a_spreadsheet_would_run_as_a_formula_is_quoted_in_csv_and_left_as_is_in_json(api, personas) -> None:
    from tests.tenants.usage_helpers import adjustment, at, job_record

    job_record(personas["alice"], ended=at("2026-11-03 10:00"), gpu_seconds=5, images=1, checkpoint='=HYPERLINK("x")')
    adjustment(personas["bob"], ended=at("2026-11-04 10:00"), gpu_seconds=-5, images=0, reason="@SUM(A1)", by=personas["admin"])
    rows = list(csv.DictReader(io.StringIO(_body(api("alice").get("/api/v1/usage/records?month=2026-11&format=csv")))))
    assert [row["checkpoint"] for row in rows] == ["'=HYPERLINK(\"x\")", ""]
    assert rows[1]["reason"] == "'@SUM(A1)" and rows[1]["gpu_seconds"] == "-5.0"  # numbers keep their sign
    as_json = json.loads(_body(api("alice").get("/api/v1/usage/records?month=2026-11")))["records"]
    assert as_json[0]["checkpoint"] == '=HYPERLINK("x")'
    statement = _body(api("alice").get("/api/v1/usage/statement?month=2026-11&format=csv"))
    assert "'@SUM(A1)" in statement
