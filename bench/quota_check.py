"""What quota checking adds to one `job_submit`: a member whose plan carries every limit vs a member
with no plan, in the same run, alternated.

Real `inference.services.job_submit` calls (dispatch left out: `dispatch=False`) on a scratch
database: PostgreSQL when `DATABASE_URL` is set (a database `atelier_bench_quota` on that server,
created and dropped here), else a throw-away SQLite file. The limited member's team has a plan with
every key of `tenants/limits.py` set high enough never to refuse (so every check runs to the end:
the tenant row lock, the aggregate over the month's usage records, the read of the team's
unfinished jobs), `--records` usage records this month and `--in-flight` queued jobs; the other
team the same records and jobs, and no plan. Each submitted job is deleted again outside the timing,
so the queue does not grow. The checkpoint is a dummy file (submit hashes it once; nothing loads it).

Printed: median and p95 milliseconds and SQL queries per submit for both, side by side, and the
difference; the last line is one JSON object.

    .venv/bin/python bench/quota_check.py
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/atelier .venv/bin/python bench/quota_check.py --submits 300
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SCRATCH_DB = "atelier_bench_quota"


def _maintenance(server_url: str) -> str:
    return server_url.replace("postgres://", "postgresql://", 1).rpartition("/")[0] + "/postgres"


def _recreate(server_url: str, *, drop_only: bool = False) -> None:
    import psycopg

    with psycopg.connect(_maintenance(server_url), autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {SCRATCH_DB} WITH (FORCE)")
        if not drop_only:
            connection.execute(f"CREATE DATABASE {SCRATCH_DB}")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(fraction * len(ordered)), len(ordered) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submits", type=int, default=200, help="timed submits per member")
    parser.add_argument("--records", type=int, default=500, help="usage records this month per team")
    parser.add_argument("--in-flight", type=int, default=20, help="queued jobs per team")
    args = parser.parse_args()

    server_url = os.environ.get("DATABASE_URL", "")
    data_dir = tempfile.mkdtemp(prefix="atelier-bench-quota-")
    os.environ["DATA_DIR"] = data_dir
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.pop("REDIS_URL", None)
    if server_url:
        _recreate(server_url)
        os.environ["DATABASE_URL"] = server_url.rpartition("/")[0] + "/" + SCRATCH_DB
    else:
        os.environ["DATABASE_URL"] = f"sqlite:///{data_dir}/bench.sqlite3"
    try:
        result = _run(args, data_dir)
    finally:
        if server_url:
            from django.db import connections

            connections.close_all()
            _recreate(server_url, drop_only=True)
    print(json.dumps(result))


def _run(args: argparse.Namespace, data_dir: str) -> dict:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from a1111.generation import parse_generation_request
    from inference.models import Job
    from inference.services import job_submit
    from tenants.limits import ALL_KEYS
    from tenants.models import Plan, TenantPlan, UsageRecord
    from tenants.services import member_create, tenant_create

    call_command("migrate", verbosity=0)
    settings.ATELIER_MAX_QUEUED_JOBS_PER_USER = 10**6
    checkpoint = Path(settings.ATELIER_PUBLIC_MODEL_DIRS["Stable-diffusion"]) / "bench.safetensors"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(os.urandom(4096))

    limited_team, plain_team = tenant_create(slug="limited"), tenant_create(slug="plain")
    limited, plain = member_create(tenant=limited_team, username="limited"), member_create(tenant=plain_team, username="plain")
    plan = Plan.objects.create(slug="everything", name="Every limit", limits={key: 10**9 for key in ALL_KEYS})
    TenantPlan.objects.create(tenant=limited_team, plan=plan, effective_from=timezone.now() - timezone.timedelta(days=40))
    request = parse_generation_request({"prompt": "a bench", "steps": 20, "width": 512, "height": 512})
    now = timezone.now()
    for user, team in ((limited, limited_team), (plain, plain_team)):
        UsageRecord.objects.bulk_create([
            UsageRecord(user=user, tenant=team, kind="adjustment", gpu_seconds=1.5, images=1, pixel_steps=512 * 512 * 20,
                        status="adjustment", ended_at=now - timezone.timedelta(minutes=index), reason="bench")
            for index in range(args.records)
        ])
        for _ in range(args.in_flight):
            job_submit(user=user, request=request, dispatch=False)

    timings: dict[str, list[float]] = {"plan": [], "none": []}
    queries: dict[str, list[int]] = {"plan": [], "none": []}
    for round_index in range(args.submits + 5):  # the first rounds warm caches (file hashes, plans)
        order = (("plan", limited), ("none", plain)) if round_index % 2 else (("none", plain), ("plan", limited))
        for name, user in order:
            with CaptureQueriesContext(connection) as captured:
                started = time.perf_counter()
                job = job_submit(user=user, request=request, dispatch=False)
                elapsed = time.perf_counter() - started
            Job.objects.filter(pk=job.pk).delete()
            if round_index >= 5:
                timings[name].append(elapsed * 1000)
                queries[name].append(len(captured.captured_queries))

    summary = {
        name: {"median_ms": statistics.median(values), "p95_ms": _percentile(values, 0.95),
               "queries": statistics.median(queries[name])}
        for name, values in timings.items()
    }
    database = connection.vendor
    print(f"job_submit on {database}, {args.submits} submits each, {args.records} records and "
          f"{args.in_flight} queued jobs per team")
    print(f"{'':24}{'median ms':>12}{'p95 ms':>12}{'queries':>10}")
    for label, name in (("no plan (no limits)", "none"), ("plan with every limit", "plan")):
        row = summary[name]
        print(f"{label:24}{row['median_ms']:12.2f}{row['p95_ms']:12.2f}{row['queries']:10.0f}")
    added = summary["plan"]["median_ms"] - summary["none"]["median_ms"]
    print(f"{'quota check adds':24}{added:12.2f}{summary['plan']['p95_ms'] - summary['none']['p95_ms']:12.2f}"
          f"{summary['plan']['queries'] - summary['none']['queries']:10.0f}")
    return {"bench": "quota_check", "database": database, "submits": args.submits, "records": args.records,
            "in_flight": args.in_flight, "no_plan": summary["none"], "every_limit": summary["plan"],
            "added_median_ms": round(added, 3)}


if __name__ == "__main__":
    main()
