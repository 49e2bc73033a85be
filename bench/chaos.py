"""Chaos run: jobs from alice, bob and charlie across two worker hosts, under scripted faults.

The same cluster as tests/cluster/test_multi_host.py (tests/cluster/netns.py: network namespaces,
relays, a private Redis, moto S3). Two phases on one cluster, so the figures compare:

1. baseline: N jobs, no fault;
2. chaos: N jobs, and while they run: kill -9 the worker on host 1 (restarted at once, as a
   supervisor would), cut host 2's link for a few seconds, restart Redis (its data lost).

Prints per phase: jobs submitted / succeeded / lost (not succeeded by the deadline) / duplicated
(more than one usage record, or more images in S3 than asked for), latency p50/p95/max (submit
to finish, from the jobs' own timestamps), and for the chaos phase the drain time from the last
fault to the last job's end. Ends with one JSON line.

Needs root, `ip netns`, PostgreSQL (DATABASE_URL) and redis-server. Run:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/atelier_bench PYTHONPATH=. python bench/chaos.py --jobs 12
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cluster.netns import Cluster  # noqa: E402

PERSONAS = ("alice", "bob", "charlie")
JOB = {"width": 64, "height": 64, "steps": 8, "sampler_name": "Euler"}
DEAD_AFTER = 4.0  # ATELIER_WORKER_DEAD_AFTER_SECONDS the harness sets


def submit_all(cluster: Cluster, count: int, tag: str) -> list[tuple[str, str]]:
    return [
        (owner, cluster.platform.submit(owner, **JOB, prompt=f"{tag} {i} a lighthouse"))
        for i in range(count) for owner in [PERSONAS[i % len(PERSONAS)]]
    ]


def ended(cluster: Cluster, jobs: list[tuple[str, str]]) -> dict[str, dict]:
    out = {}
    for owner, job_id in jobs:
        job = cluster.platform.get(owner, f"/api/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            out[job_id] = job
    return out


def wait_all(cluster: Cluster, jobs: list[tuple[str, str]], deadline: float) -> dict[str, dict]:
    done: dict[str, dict] = {}
    while time.monotonic() < deadline and len(done) < len(jobs):
        done = ended(cluster, jobs)
        time.sleep(0.5)
    return done


def figures(cluster: Cluster, jobs: list[tuple[str, str]], done: dict[str, dict]) -> dict:
    import psycopg

    with psycopg.connect(cluster.platform._database) as conn:
        usage = dict(conn.execute(
            "SELECT j.public_id, count(u.id) FROM inference_job j LEFT JOIN tenants_usagerecord u "
            "ON u.job_id = j.id GROUP BY j.public_id").fetchall())
    keys = cluster.moto.keys(cluster.bucket)
    latencies = sorted(
        (datetime.fromisoformat(j["finished_at"]) - datetime.fromisoformat(j["created_at"])).total_seconds()
        for j in done.values() if j["finished_at"]
    )
    duplicated = sum(1 for _, job_id in jobs if usage.get(job_id, 0) > 1 or sum(job_id in k for k in keys) > 1)

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 2) if latencies else 0.0

    return {
        "submitted": len(jobs), "succeeded": sum(1 for j in done.values() if j["status"] == "succeeded"),
        "lost": len(jobs) - sum(1 for j in done.values() if j["status"] == "succeeded"), "duplicated": duplicated,
        "p50_s": round(statistics.median(latencies), 2) if latencies else 0.0, "p95_s": pct(0.95),
        "max_s": round(latencies[-1], 2) if latencies else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=12, help="jobs per phase (default 12)")
    parser.add_argument("--cut-seconds", type=float, default=6.0, help="how long host 2's link stays down")
    parser.add_argument("--timeout", type=float, default=240.0, help="per phase: a job not ended by then is lost")
    args = parser.parse_args()

    cluster = Cluster(hosts=2)
    try:
        cluster.start()
        for host in cluster.hosts:
            cluster.start_worker(host)
        cluster.platform.wait_for_workers(2)
        host1, host2 = cluster.hosts

        baseline_jobs = submit_all(cluster, args.jobs, "baseline")
        baseline = figures(cluster, baseline_jobs, wait_all(cluster, baseline_jobs, time.monotonic() + args.timeout))

        chaos_jobs = submit_all(cluster, args.jobs, "chaos")
        deadline = time.monotonic() + args.timeout
        # The script: each fault once a few more of the jobs have ended, so every fault lands mid-run.
        step = max(1, args.jobs // 4)
        faults = [
            ("kill -9 worker on host 1", lambda: (cluster.platform.kill("w1"), cluster.start_worker(host1, "w1"))),
            ("cut host 2's link", lambda: (host2.link_down(), time.sleep(args.cut_seconds), host2.link_up())),
            ("restart Redis (data lost)", cluster.redis.restart),
        ]
        last_fault = time.monotonic()
        for number, (name, fault) in enumerate(faults, start=1):
            while time.monotonic() < deadline and len(ended(cluster, chaos_jobs)) < min(step * number, len(chaos_jobs) - 1):
                time.sleep(0.3)
            print(f"fault: {name}", flush=True)
            fault()
            last_fault = time.monotonic()
        done = wait_all(cluster, chaos_jobs, deadline)
        drain = round(time.monotonic() - last_fault, 2)
        chaos = {**figures(cluster, chaos_jobs, done), "drain_s": drain}
    except BaseException:
        print(cluster.platform.logs(), file=sys.stderr)
        raise
    finally:
        cluster.close()

    print(f"{'':10} {'submitted':>9} {'succeeded':>9} {'lost':>5} {'dup':>4} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'drain s':>8}")
    for name, row in (("baseline", baseline), ("chaos", chaos)):
        print(f"{name:10} {row['submitted']:>9} {row['succeeded']:>9} {row['lost']:>5} {row['duplicated']:>4} "
              f"{row['p50_s']:>7} {row['p95_s']:>7} {row['max_s']:>7} {row.get('drain_s', ''):>8}")
    print(json.dumps({"bench": "chaos", "jobs": args.jobs, "dead_after_s": DEAD_AFTER,
                      "baseline": baseline, "chaos": chaos}))


if __name__ == "__main__":
    main()
