"""The usage pages (`/usage/`, `/team/usage/`, `/ops/`): the numbers on each page are the sums of
the usage records on the real database, days are the tenant's time zone's, an empty month is
zeros, and a month that is not one is a 400 with the form."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference.models import Job
from inference.transitions import worker_heartbeat, worker_register
from tenants.models import Tenant
from tenants.usage_selectors import (
    queue_wait_per_day,
    queue_wait_per_tenant,
    usage_per_day,
    usage_per_member,
    usage_per_tenant,
)
from tests.frontend.usage_records import Recorder

pytestmark = pytest.mark.django_db


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=dt_timezone.utc)


@pytest.fixture
def recorder(tiny_checkpoint_path) -> Recorder:
    return Recorder()


def row(page: str, table_id: str, first_cell: str) -> list[str]:
    """The cells of the row of table `table_id` whose first cell is `first_cell`."""
    table = page.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S):
        cells = [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", tr, re.S)]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in {table_id}")


def figure(page: str, element_id: str) -> str:
    return re.search(rf'id="{element_id}">([^<]*)<', page).group(1)


def test_my_usage_page_shows_the_sums_of_my_records_per_day_and_kind(client, personas, recorder) -> None:
    alice, bob = personas["alice"], personas["bob"]
    recorder.add(alice, ended_at=utc(2026, 11, 3, 10), gpu_seconds=12.25, images=2)
    recorder.add(alice, ended_at=utc(2026, 11, 3, 11), gpu_seconds=0.5, images=1)
    recorder.add(alice, ended_at=utc(2026, 11, 20, 9), gpu_seconds=1000.04, images=4, kind=Job.Kind.IMG2IMG)
    recorder.add(alice, ended_at=utc(2026, 11, 21, 9), gpu_seconds=3.0, images=0, kind=Job.Kind.EXTRAS,
                 checkpoint_title="")
    Recorder.adjust(alice, ended_at=utc(2026, 11, 25), gpu_seconds=-0.75, images=-1, by=personas["admin"])
    recorder.add(alice, ended_at=utc(2026, 10, 31, 23), gpu_seconds=50.0, images=9)  # October
    recorder.add(bob, ended_at=utc(2026, 11, 3, 10), gpu_seconds=70.0, images=7)  # bob's

    client.force_login(alice)
    response = client.get("/usage/?month=2026-11")
    assert response.status_code == 200
    page = response.content.decode()
    assert figure(page, "usage-gpu-seconds") == "1,015.0"  # 12.25 + 0.5 + 1000.04 + 3 - 0.75, to 0.1 s
    assert figure(page, "usage-images") == "6" and figure(page, "usage-jobs") == "4"  # the adjustment is no job
    assert row(page, "usage-days-table", "2026-11-03") == ["2026-11-03", "12.8", "3", "2"]
    assert row(page, "usage-days-table", "2026-11-20") == ["2026-11-20", "1,000.0", "4", "1"]
    assert row(page, "usage-days-table", "2026-11-25") == ["2026-11-25", "-0.8", "-1", "0"]
    assert row(page, "usage-days-table", "2026-11-30") == ["2026-11-30", "0.0", "0", "0"]
    assert row(page, "usage-days-table", "Total") == ["Total", "1,015.0", "6", "4"]
    assert page.count("<tr><td class=\"nowrap\">") == 30  # every day of November, once
    assert row(page, "usage-kinds", "img2img") == ["img2img", "tiny.safetensors", "1,000.0", "4", "1"]
    assert row(page, "usage-kinds", "txt2img") == ["txt2img", "tiny.safetensors", "12.8", "3", "2"]
    assert row(page, "usage-kinds", "extras") == ["extras", "—", "3.0", "0", "1"]
    assert row(page, "usage-kinds", "adjustment")[2:] == ["-0.8", "-1", "0"]
    # the charts: inline SVG, a tooltip per day, no script and no inline style (the CSP)
    assert '<svg class="chart" id="my-usage-gpu-seconds"' in page and '<svg class="chart" id="my-usage-images"' in page
    assert "<title>2026-11-03: 12.8 GPU-s</title>" in page and "<title>2026-11-20: 4 </title>" not in page
    assert "<title>2026-11-20: 4</title>" in page
    assert "<script" not in page and "style=" not in page
    assert ">70.0<" not in page and ": 70.0 GPU-s" not in page  # bob's


def test_days_are_the_tenants_time_zone(client, personas, recorder) -> None:
    """23:30 UTC on the 3rd is the 4th in Shanghai (UTC+8); 17:00 UTC on 30 November is December there."""
    studio_a = Tenant.objects.get(slug="studio-a")
    studio_a.time_zone = "Asia/Shanghai"
    studio_a.save()
    alice = personas["alice"]
    alice.membership.refresh_from_db()
    recorder.add(alice, ended_at=utc(2026, 11, 3, 23, 30), gpu_seconds=2.0, images=1)
    recorder.add(alice, ended_at=utc(2026, 11, 30, 17), gpu_seconds=5.0, images=1)
    recorder.add(alice, ended_at=utc(2026, 10, 31, 16, 30), gpu_seconds=7.0, images=1)  # 1 November, 00:30 there

    days = {entry.day.isoformat(): entry.totals for entry in usage_per_day(month="2026-11", tenant=studio_a, user=alice)}
    assert days["2026-11-03"].gpu_seconds == 0 and days["2026-11-04"].gpu_seconds == 2.0
    assert days["2026-11-01"].gpu_seconds == 7.0 and days["2026-11-30"].gpu_seconds == 0
    assert len(days) == 30
    assert usage_per_day(month="2026-12", tenant=studio_a)[0].totals.gpu_seconds == 5.0

    client.force_login(alice)
    page = client.get("/usage/?month=2026-11").content.decode()
    assert "Asia/Shanghai" in page
    assert row(page, "usage-days-table", "2026-11-04")[1:] == ["2.0", "1", "1"]
    assert row(page, "usage-days-table", "2026-11-03")[1:] == ["0.0", "0", "0"]
    assert figure(page, "usage-gpu-seconds") == "9.0"
    page = client.get("/team/usage/?month=2026-12").content.decode()
    assert row(page, "usage-days-table", "2026-12-01")[1:] == ["5.0", "1", "1"]
    # the operators' page is UTC: the same record is November's there
    client.force_login(personas["admin"])
    page = client.get("/ops/?month=2026-11").content.decode()
    assert row(page, "ops-tenants-table", "studio-a")[1:] == ["7.0", "2", "2"]  # 3 and 30 November UTC


def test_an_empty_month_is_zeros_and_the_present_month_is_the_default(client, personas, recorder) -> None:
    alice = personas["alice"]
    recorder.add(alice, ended_at=timezone.now(), gpu_seconds=1.25, images=1)
    client.force_login(alice)
    page = client.get("/usage/?month=2001-02").content.decode()
    assert figure(page, "usage-gpu-seconds") == "0.0" and figure(page, "usage-jobs") == "0"
    assert page.count('<tr><td class="nowrap">') == 28 and "No usage in this month." in page
    page = client.get("/usage/").content.decode()
    assert figure(page, "usage-gpu-seconds") == "1.3" and f'value="{timezone.now():%Y-%m}"' in page
    for path in ("/team/usage/?month=2001-02", "/ops/?month=2001-02"):
        client.force_login(personas["admin"] if path.startswith("/ops") else alice)
        response = client.get(path)
        assert response.status_code == 200 and "No usage in this month." in response.content.decode()


@pytest.mark.parametrize("month", ["2026-13", "2026-1", "november", "1999-12", "<b>x</b>", "2026-11-01", "9999-12"])
def test_a_bad_month_is_a_400_with_the_form_saying_what_to_write(client, personas, month) -> None:
    for user, path in ((personas["bob"], "/usage/"), (personas["alice"], "/team/usage/"), (personas["admin"], "/ops/")):
        client.force_login(user)
        response = client.get(path, {"month": month})
        assert response.status_code == 400, path
        page = response.content.decode()
        assert 'type="month"' in page and 'id="month-error"' in page and "YYYY-MM" in page
        assert "<b>x</b>" not in page  # escaped


def test_team_usage_is_per_day_and_per_member_and_sums_to_the_records(client, personas, recorder) -> None:
    alice, bob, charlie = personas["alice"], personas["bob"], personas["charlie"]
    recorder.add(alice, ended_at=utc(2026, 11, 2, 8), gpu_seconds=10.0, images=2)
    recorder.add(bob, ended_at=utc(2026, 11, 2, 9), gpu_seconds=4.5, images=1)
    recorder.add(bob, ended_at=utc(2026, 11, 9, 9), gpu_seconds=0.25, images=3)
    recorder.add(charlie, ended_at=utc(2026, 11, 2, 9), gpu_seconds=99.0, images=9)

    members = {entry.username: entry.totals for entry in usage_per_member(month="2026-11", tenant=alice.membership.tenant)}
    assert set(members) == {"alice", "bob"} and members["bob"].gpu_seconds == 4.75 and members["bob"].jobs == 2

    client.force_login(alice)
    page = client.get("/team/usage/?month=2026-11").content.decode()
    assert row(page, "usage-members-table", "alice") == ["alice", "Tenant admin", "10.0", "2", "1"]
    assert row(page, "usage-members-table", "bob") == ["bob", "Member", "4.8", "4", "2"]
    assert row(page, "usage-members-table", "Total") == ["Total", "14.8", "6", "3"]
    assert row(page, "usage-days-table", "2026-11-02")[1:] == ["14.5", "3", "2"]
    assert "<title>bob: 4.8 GPU-s</title>" in page and "charlie" not in page and ">99.0<" not in page


def test_the_operators_page_shows_usage_by_tenant_queue_waits_workers_and_jobs_now(client, personas, recorder) -> None:
    alice, bob, charlie = personas["alice"], personas["bob"], personas["charlie"]
    for wait in (1.0, 2.0, 3.0, 4.0, 10.0):
        recorder.add(alice, ended_at=utc(2026, 11, 5, 12), gpu_seconds=1.0, images=1, queue_wait_seconds=wait)
    recorder.add(charlie, ended_at=utc(2026, 11, 6, 12), gpu_seconds=2.0, images=2, queue_wait_seconds=8.0)
    Recorder.adjust(bob, ended_at=utc(2026, 11, 6, 13), gpu_seconds=-1.0, images=0, by=personas["admin"])

    assert [(w.label, w.jobs, w.p50_seconds, pytest.approx(w.p95_seconds)) for w in queue_wait_per_tenant(month="2026-11")] \
        == [("studio-a", 5, 3.0, 8.8), ("studio-b", 1, 8.0, 8.0)]  # percentile_cont: 4 + 0.8 × (10 - 4)
    by_day = {w.label: w for w in queue_wait_per_day(month="2026-11")}
    assert (by_day["2026-11-05"].jobs, by_day["2026-11-05"].p50_seconds) == (5, 3.0) and by_day["2026-11-07"].jobs == 0
    assert {u.slug: u.totals.gpu_seconds for u in usage_per_tenant(month="2026-11")} == {"studio-a": 4.0, "studio-b": 2.0}

    now = timezone.now()
    busy = worker_register(name="gpu-busy@h", device="cpu", device_memory_bytes=None)
    worker_register(name="gpu-idle@h", device="cpu", device_memory_bytes=None)
    recorder.job(alice, worker=busy, gpu_seconds=8640.0, finished_at=now - timedelta(hours=1))  # 10 % of a day
    recorder.job(alice, worker=busy, gpu_seconds=5000.0, finished_at=now - timedelta(hours=30))  # outside the window
    recorder.job(alice, status=Job.Status.QUEUED)
    recorder.job(bob, status=Job.Status.QUEUED)
    recorder.job(charlie, status=Job.Status.RUNNING, worker=busy)
    # the model cache counters as the busy worker's heartbeat reports them (Worker.model_counters)
    worker_heartbeat(name="gpu-busy@h", loaded_models=[], model_counters={
        "loads": 2, "restores": 1, "hits": 7, "blob_fetches": 3, "blob_fetched_bytes": 2_000_000, "blob_hits": 5})
    # failed jobs by reason, this month's only (one in October is not counted)
    for error, finished in (("CUDA out of memory", utc(2026, 11, 7)), ("worker w lost; gave up after 3 attempts", utc(2026, 11, 8)),
                            ("out of memory again", utc(2026, 11, 9)), ("generation failed: boom", utc(2026, 10, 30))):
        Job.objects.filter(pk=recorder.job(alice, status=Job.Status.FAILED, finished_at=finished).pk).update(error=error)

    client.force_login(personas["admin"])
    page = client.get("/ops/?month=2026-11").content.decode()
    assert row(page, "ops-model-cache-table", "gpu-busy@h") == [
        "gpu-busy@h", "2", "1", "7", "70.0 %", "3", "2,000,000", "5"]
    assert row(page, "ops-model-cache-table", "gpu-idle@h")[1:] == ["0", "0", "0", "0.0 %", "0", "0", "0"]
    assert "<title>gpu-busy@h: 2</title>" in page and "<title>gpu-busy@h: 7</title>" in page  # the two charts' bars
    assert row(page, "ops-failures-table", "out_of_memory") == ["out_of_memory", "2"]
    assert row(page, "ops-failures-table", "attempts_exhausted") == ["attempts_exhausted", "1"]
    assert row(page, "ops-failures-table", "generation_error") == ["generation_error", "0"]
    assert 'id="ops-failures"' in page and 'id="ops-model-loads"' in page and 'id="ops-model-hits"' in page
    assert row(page, "ops-tenants-table", "studio-a") == ["studio-a", "4.0", "5", "5"]
    assert row(page, "ops-tenants-table", "studio-b") == ["studio-b", "2.0", "2", "1"]
    assert row(page, "ops-waits-tenants", "studio-a") == ["studio-a", "5", "3.0", "8.8"]
    assert row(page, "ops-waits-days", "2026-11-05") == ["2026-11-05", "5", "3.0", "8.8"]
    assert row(page, "ops-workers-table", "gpu-busy@h") == ["gpu-busy@h", "Online", "1", "1", "8,640.0", "10.0 %"]
    assert row(page, "ops-workers-table", "gpu-idle@h")[3:] == ["0", "0.0", "0.0 %"]
    assert row(page, "ops-active-table", "studio-a") == ["studio-a", "2", "0", "0"]
    assert row(page, "ops-active-table", "studio-b") == ["studio-b", "0", "0", "1"]
    assert 'id="ops-tenants"' in page and 'id="ops-waits"' in page and 'id="ops-workers"' in page
    assert "UTC" in page and "<script" not in page and "style=" not in page


def test_home_page_formats_numbers_and_links_the_usage_pages(client, personas, recorder) -> None:
    alice = personas["alice"]
    # the home page's own month (usage_this_month) counts records by creation: recent ones
    recorder.add(alice, ended_at=timezone.now(), gpu_seconds=1234.56, images=1200)
    client.force_login(alice)
    page = client.get("/").content.decode()
    assert 'id="usage-gpu-seconds">1,234.6<' in page and 'id="usage-images">1,200<' in page
    assert 'href="/usage/"' in page and 'href="/team/usage/"' in page and 'href="/ops/"' not in page
    client.force_login(personas["bob"])
    page = client.get("/").content.decode()
    assert 'href="/usage/"' in page and 'href="/team/usage/"' not in page
    client.force_login(personas["admin"])
    page = client.get("/").content.decode()
    assert 'href="/ops/"' in page and 'href="/usage/"' not in page


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(month=st.one_of(st.text(max_size=40), st.from_regex(r"\A[0-9]{4}-[0-9]{2}\Z"),
                       st.sampled_from(["9999-12", "9999-11", "2000-01", "0000-00", "\x00", "%00"])))
def test_any_month_is_a_page_never_a_server_error(personas, month: str) -> None:
    """Whatever `?month=` says, in any time zone: 200 for a month, 400 with the form for anything else."""
    Tenant.objects.filter(slug="studio-a").update(time_zone="Pacific/Kiritimati")  # UTC+14: the far edge
    client = Client()
    for user, path in ((personas["bob"], "/usage/"), (personas["alice"], "/team/usage/"), (personas["admin"], "/ops/")):
        client.force_login(user)
        response = client.get(path, {"month": month})
        assert response.status_code in (200, 400), (path, month, response.status_code)


def test_the_pages_and_their_charts_have_nothing_inline_under_the_csp(client, personas, recorder) -> None:
    from tests.security.test_platform_headers import INLINE

    recorder.add(personas["alice"], ended_at=timezone.now(), gpu_seconds=3.0, images=2)
    worker_register(name="gpu0@h", device="cpu", device_memory_bytes=None)
    for user, path in ((personas["alice"], "/usage/"), (personas["alice"], "/team/usage/"), (personas["admin"], "/ops/")):
        client.force_login(user)
        response = client.get(path)
        body = response.content.decode()
        assert "script-src 'self'" in response["Content-Security-Policy"] and '<svg class="chart"' in body
        assert not INLINE.search(body), (path, INLINE.search(body))


def test_the_usage_page_shows_the_members_limits_and_what_is_used_of_them_now(client, personas) -> None:
    from tenants.models import Membership, Plan, TenantPlan

    tenant = Tenant.objects.get(slug="studio-a")
    plan = Plan.objects.create(slug="small", name="Small", limits={"user_images_per_day": 50, "max_steps": 30})
    TenantPlan.objects.create(tenant=tenant, plan=plan, effective_from=timezone.now() - timedelta(days=1))
    Membership.objects.filter(user=personas["bob"]).update(limits={"user_images_per_day": 10})
    client.force_login(personas["bob"])
    page = client.get("/usage/").content.decode()
    assert 'id="usage-quotas"' in page
    assert 'data-key="user_images_per_day"' in page and 'data-key="max_steps"' in page
    client.force_login(personas["charlie"])  # studio-b has no plan: no limits to show
    assert 'id="usage-quotas"' not in client.get("/usage/").content.decode()
