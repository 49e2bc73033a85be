"""Billing at scale (issue 16): a month's usage export and a statement over a million records.

On PostgreSQL only (`DATABASE_URL=postgres://…`; it refuses without it). It makes its own database
(Django's test-database machinery: `test_<name>`, migrated, dropped at the end whatever happens),
then:

  1. creates `--tenants` tenants (50) in five time zones, each on a plan whose price changes mid-month,
     `--users` members (1000), and `--records` jobs with their usage records (1,000,000) ending in
     one month, with `INSERT … SELECT generate_series` (not the ORM);
  2. times the month's CSV export of every tenant as `manage.py export_usage` and the API stream it
     (`tenants.exports.record_chunks`: `values_list` + `iterator(chunk_size=…)`, a server-side
     cursor), written to /dev/null: rows/s, seconds, and how much the process's peak RSS grew;
  3. times one tenant's statement (`tenants.statements.statement_for`);
  4. the baseline, in the same run: a naive ORM export (model instances with `select_related`, the
     queryset evaluated into a list, no iterator, `csv.writer` over attributes) of a `--subset`
     (100,000) records, beside the streamed export of that same subset.

  5. how much quota checking adds to one submission: `bench/quota_check.py` (its own scratch
     database; `job_submit` with no plan beside a plan carrying every limit), run as a child
     process after the export, its figures folded in (`--no-quota` skips it).

Printed side by side, then one JSON line.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/atelier_bench .venv/bin/python bench/billing.py
    DATABASE_URL=… .venv/bin/python bench/billing.py --records 100000 --subset 20000   # quicker
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

MONTH = "2026-11"
ZONES = ("UTC", "Asia/Shanghai", "Europe/Berlin", "America/New_York", "Asia/Kolkata")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class DevNull:
    """Counts what is written; keeps nothing."""

    def __init__(self) -> None:
        self.chars = 0

    def write(self, text: str) -> int:
        self.chars += len(text)
        return len(text)


def fill(args: argparse.Namespace) -> dict:
    """Tenants, plans, users through the ORM (a few thousand rows); jobs and records in SQL."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.db import connection

    from tenants.models import Membership, Plan, PlanPrice, Tenant, TenantPlan
    from tenants.money import month_bounds

    tenants = Tenant.objects.bulk_create(
        [Tenant(slug=f"bench-{i:03d}", name=f"Bench {i}", time_zone=ZONES[i % len(ZONES)]) for i in range(args.tenants)])
    plan = Plan.objects.create(slug="bench", name="Bench", currency="USD")
    start, end = month_bounds(MONTH, "UTC")
    PlanPrice.objects.create(plan=plan, effective_from=start.replace(year=2026, month=1), price_per_gpu_hour="2.50",
                             price_per_image="0.010", included_gpu_seconds=3600, included_images=100, monthly_fee="20.00")
    PlanPrice.objects.create(plan=plan, effective_from=start.replace(day=15), price_per_gpu_hour="3.00",
                             price_per_image="0.020", included_gpu_seconds=3600, included_images=100, monthly_fee="20.00")
    TenantPlan.objects.bulk_create([TenantPlan(tenant=t, plan=plan, effective_from=start.replace(month=1)) for t in tenants])
    password = make_password(None)
    users = get_user_model().objects.bulk_create(
        [get_user_model()(username=f"bench-user-{i:04d}", password=password) for i in range(args.users)])
    Membership.objects.bulk_create(
        [Membership(user=user, tenant=tenants[i % len(tenants)]) for i, user in enumerate(users)])

    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE bench_users (idx int PRIMARY KEY, user_id bigint, tenant_id bigint)")
        cursor.executemany("INSERT INTO bench_users VALUES (%s, %s, %s)",
                           [(i, u.pk, tenants[i % len(tenants)].pk) for i, u in enumerate(users)])
        job_values = _job_columns(cursor, {
            "public_id": "'bench-' || g", "owner_id": "u.user_id", "tenant_id": "u.tenant_id", "kind": "'txt2img'",
            "params": "'{}'::jsonb", "checkpoint_title": "'sd15-base'", "status": "'succeeded'",
            "gpu_seconds": "(g %% 997) / 33.0", "created_at": "%(start)s::timestamptz + ((g::bigint * 2477) %% 2500000) * interval '1 second'",
            "finished_at": "%(start)s::timestamptz + ((g::bigint * 2477) %% 2500000) * interval '1 second' + interval '20 seconds'",
        })
        cursor.execute(
            f"INSERT INTO inference_job ({', '.join(job_values)}) SELECT {', '.join(job_values.values())} "
            "FROM generate_series(1, %(n)s) g JOIN bench_users u ON u.idx = g %% %(users)s",
            {"n": args.records, "users": args.users, "start": start},
        )
        cursor.execute(
            "INSERT INTO tenants_usagerecord (job_id, user_id, tenant_id, kind, service_name, checkpoint_title, "
            "checkpoint_sha256, gpu_seconds, images, texts, pixel_steps, queue_wait_seconds, status, started_at, "
            "ended_at, reason, created_at) "
            "SELECT id, owner_id, tenant_id, kind, '', checkpoint_title, '', gpu_seconds, 1 + id % 4, 0, "
            "(1 + id % 4) * 512 * 512 * 20, 0.5, status, finished_at - interval '20 seconds', finished_at, '', now() "
            "FROM inference_job WHERE public_id LIKE 'bench-%'"
        )
        cursor.execute("ANALYZE tenants_usagerecord")
        cursor.execute("ANALYZE inference_job")
    return {"tenants": tenants}


def _job_columns(cursor, given: dict[str, str]) -> dict[str, str]:
    """`given`, plus a value for every other NOT NULL column of `inference_job` (Django's defaults
    are not the database's, so an INSERT must name them all)."""
    cursor.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'inference_job' "
        "AND is_nullable = 'NO' AND column_default IS NULL AND column_name <> 'id'"
    )
    blank = {"jsonb": "'[]'::jsonb", "boolean": "false", "timestamp with time zone": "now()"}
    values = dict(given)
    for name, data_type in cursor.fetchall():
        values.setdefault(name, blank.get(data_type, "0" if data_type in {"integer", "bigint", "smallint", "double precision", "real", "numeric"} else "''"))
    return values


def timed_export(records) -> tuple[float, int, float]:
    """Stream `records` as CSV into a counter: (seconds, rows, peak RSS growth in MiB)."""
    from tenants.exports import record_chunks

    sink, before = DevNull(), peak_rss_mib()
    started = time.perf_counter()
    rows = -1  # the header line
    for chunk in record_chunks(records, "csv"):
        sink.write(chunk)
        rows += chunk.count("\n")
    return time.perf_counter() - started, rows, peak_rss_mib() - before


def naive_export(records) -> tuple[float, int, float]:
    """The baseline: model instances, the whole queryset in memory, attributes read one by one."""
    before = peak_rss_mib()
    started = time.perf_counter()
    writer = csv.writer(DevNull())
    instances = list(records.select_related("job", "tenant", "user", "created_by"))
    for record in instances:
        writer.writerow([
            record.pk, record.job.public_id if record.job else "", record.tenant.slug, record.user.username,
            record.service_name, record.kind, record.checkpoint_title, record.status, record.images,
            record.gpu_seconds, record.pixel_steps, record.queue_wait_seconds,
            record.started_at.isoformat() if record.started_at else "", record.ended_at.isoformat(), record.reason,
        ])
    return time.perf_counter() - started, len(instances), peak_rss_mib() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--subset", type=int, default=100_000, help="records of the baseline comparison")
    parser.add_argument("--no-quota", action="store_true", help="skip the quota check's cost (bench/quota_check.py)")
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        sys.exit("bench/billing.py runs on PostgreSQL only: set DATABASE_URL=postgres://user@host:5432/name "
                 "(it creates and drops its own database, test_<name>)")

    import django

    django.setup()
    from django.db import connection

    creation = connection.creation
    old_name = connection.settings_dict["NAME"]
    print(f"creating and migrating {creation._get_test_db_name()} …", flush=True)
    creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        figures = run(args)
    finally:
        creation.destroy_test_db(old_name, verbosity=0, keepdb=False)
    if not args.no_quota:
        figures["quota_check"] = quota_check_figures()
    print(json.dumps(figures))


def quota_check_figures() -> dict:
    """`bench/quota_check.py`'s figures (its table printed as it runs; its last line is its JSON)."""
    import subprocess

    print("\nwhat quota checking adds to a submission (bench/quota_check.py):", flush=True)
    child = subprocess.run([sys.executable, str(REPO / "bench" / "quota_check.py")], capture_output=True, text=True,
                           check=True)
    lines = child.stdout.strip().splitlines()
    print("\n".join(lines[:-1]), flush=True)
    return json.loads(lines[-1])


def run(args: argparse.Namespace) -> dict:
    from tenants.exports import UsagePeriod, UsageScope, usage_records
    from tenants.models import UsageRecord
    from tenants.statements import statement_for

    started = time.perf_counter()
    data = fill(args)
    fill_s = time.perf_counter() - started
    count = UsageRecord.objects.count()
    print(f"{count:,} usage records in {args.tenants} tenants / {args.users} members, made in {fill_s:.1f} s", flush=True)

    period = UsagePeriod(month=MONTH)
    everything = usage_records(period, UsageScope(tenant=None, user=None))
    all_s, all_rows, all_rss = timed_export(everything)

    tenant = data["tenants"][1]  # Asia/Shanghai
    started = time.perf_counter()
    statement = statement_for(tenant=tenant, month=MONTH)
    statement_s = time.perf_counter() - started

    per_tenant = max(1, count // args.tenants)
    subset_tenants = [t.pk for t in data["tenants"][: max(1, round(args.subset / per_tenant))]]
    subset = UsageRecord.objects.filter(tenant_id__in=subset_tenants).order_by("ended_at", "pk")
    fast_s, fast_rows, fast_rss = timed_export(subset)
    naive_s, naive_rows, naive_rss = naive_export(subset)

    print()
    print(f"{'':44}{'rows':>10}{'s':>9}{'rows/s':>11}{'peak RSS +MiB':>15}")
    print(f"{'streamed export, every tenant (month)':44}{all_rows:>10,}{all_s:>9.2f}{all_rows / all_s:>11,.0f}{all_rss:>15.1f}")
    print(f"{'streamed export, subset':44}{fast_rows:>10,}{fast_s:>9.2f}{fast_rows / fast_s:>11,.0f}{fast_rss:>15.1f}")
    print(f"{'naive ORM export, same subset (baseline)':44}{naive_rows:>10,}{naive_s:>9.2f}{naive_rows / naive_s:>11,.0f}{naive_rss:>15.1f}")
    print(f"statement of {tenant.slug} ({tenant.time_zone}): {statement.jobs:,} jobs, {len(statement.members)} members, "
          f"total {statement.total} {statement.currency}, in {statement_s:.2f} s")
    return {
        "bench": "billing", "records": count, "tenants": args.tenants, "users": args.users, "fill_s": round(fill_s, 2),
        "export_all_rows": all_rows, "export_all_s": round(all_s, 3), "export_all_rows_per_s": round(all_rows / all_s),
        "export_all_peak_rss_growth_mib": round(all_rss, 1),
        "statement_tenant_records": statement.jobs, "statement_s": round(statement_s, 3), "statement_total": str(statement.total),
        "subset_rows": fast_rows, "subset_streamed_s": round(fast_s, 3), "subset_naive_s": round(naive_s, 3),
        "subset_streamed_rows_per_s": round(fast_rows / fast_s), "subset_naive_rows_per_s": round(naive_rows / naive_s),
        "subset_streamed_peak_rss_growth_mib": round(fast_rss, 1), "subset_naive_peak_rss_growth_mib": round(naive_rss, 1),
    }


if __name__ == "__main__":
    main()
