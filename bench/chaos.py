"""Chaos run: jobs from alice, bob and charlie across two worker hosts, under scripted faults.

The same cluster as tests/cluster/test_multi_host.py (tests/cluster/netns.py: network namespaces,
relays, a private Redis, moto S3). Two phases on one cluster, so the figures compare:

1. baseline: N jobs, no fault;
2. chaos: N jobs again, and while they are submitted (one every `--spacing` s) a fault every
   `--gap` s: kill -9 the worker on host 1 (restarted at once, as a supervisor would), cut host
   2's link for `--cut-seconds`, restart Redis (its data lost).

Prints per phase: jobs submitted / succeeded / lost (not succeeded by the deadline) / duplicated
(more than one usage record, or more images in S3 than asked for), latency p50/p95/max (submit
to finish, from the jobs' own timestamps), and for the chaos phase the drain time from the last
fault until every job submitted before it had ended (0 when they all had by then). Ends with one JSON line.

Needs root, `ip netns`, PostgreSQL (DATABASE_URL) and redis-server. Run:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/atelier_bench PYTHONPATH=. python bench/chaos.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cluster.netns import Cluster  # noqa: E402

PERSONAS = ("alice", "bob", "charlie")
JOB = {"width": 64, "height": 64, "steps": 8, "sampler_name": "Euler"}
DEAD_AFTER = 4.0  # ATELIER_WORKER_DEAD_AFTER_SECONDS the harness sets


def submit_spread(cluster: Cluster, count: int, tag: str, spacing: float) -> list[tuple[str, str]]:
    """`count` jobs, one every `spacing` seconds, the personas in turn (so faults meet queued,
    dispatched and running jobs alike)."""
    jobs = []
    for i in range(count):
        owner = PERSONAS[i % len(PERSONAS)]
        jobs.append((owner, cluster.platform.submit(owner, **JOB, prompt=f"{tag} {i} a lighthouse")))
        time.sleep(spacing)
    return jobs


def warm_up(cluster: Cluster) -> None:
    """One held job on each worker, so both load the model before anything is timed."""
    jobs = [(owner, cluster.platform.submit(owner, **JOB, prompt="hold:warm-up")) for owner in ("alice", "charlie")]
    cluster.platform.wait_until(
        lambda: all(cluster.platform.get(o, f"/api/v1/jobs/{j}").json()["status"] == "running" for o, j in jobs),
        timeout=120, what="the warm-up jobs running")
    cluster.platform.release("warm-up")
    for owner, job_id in jobs:
        cluster.platform.wait_job(owner, job_id, timeout=120)


def timeline(cluster: Cluster, jobs: list[tuple[str, str]], faults: dict[str, float]) -> None:
    """Each chaos job's life relative to the first fault, on stderr: where the time went."""
    import psycopg

    origin = time.time() - (time.monotonic() - min(faults.values()))
    for name, at in faults.items():
        print(f"  fault at {at - min(faults.values()):6.1f} s: {name}", file=sys.stderr)
    with psycopg.connect(cluster.platform._database) as conn:
        rows = conn.execute(
            "SELECT public_id, attempts, extract(epoch from created_at), extract(epoch from dispatched_at), "
            "extract(epoch from started_at), extract(epoch from finished_at) FROM inference_job "
            "WHERE public_id = ANY(%s) ORDER BY created_at", [[job_id for _, job_id in jobs]]).fetchall()
    for public_id, attempts, *times in rows:
        cells = " ".join(f"{float(t) - origin:7.1f}" if t is not None else "      -" for t in times)
        print(f"  {public_id} attempts={attempts} created/dispatched/started/finished: {cells}", file=sys.stderr)


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
    parser.add_argument("--jobs", type=int, default=24, help="jobs per phase: submissions outlast the faults")
    parser.add_argument("--spacing", type=float, default=1.5, help="seconds between submissions")
    parser.add_argument("--gap", type=float, default=5.0, help="seconds between faults (the first after this too)")
    parser.add_argument("--cut-seconds", type=float, default=6.0, help="how long host 2's link stays down")
    parser.add_argument("--timeout", type=float, default=240.0, help="per phase: a job not ended by then is lost")
    args = parser.parse_args()

    cluster = Cluster(hosts=2)
    try:
        cluster.start_with_workers()
        host1, host2 = cluster.hosts

        warm_up(cluster)
        started = time.monotonic()
        baseline_jobs = submit_spread(cluster, args.jobs, "baseline", args.spacing)
        baseline = figures(cluster, baseline_jobs, wait_all(cluster, baseline_jobs, started + args.timeout))

        # The script runs beside the submissions: one fault every `gap` seconds from the first job on.
        faults = [
            ("kill -9 worker on host 1", lambda: (cluster.platform.kill("w1"), cluster.start_worker(host1, "w1"))),
            ("cut host 2's link", lambda: (host2.link_down(), time.sleep(args.cut_seconds), host2.link_up())),
            ("restart Redis (data lost)", cluster.redis.restart),
        ]
        fault_times: list[float] = []

        def script() -> None:
            for name, fault in faults:
                time.sleep(args.gap)
                print(f"fault: {name}", flush=True)
                fault()
                fault_times.append(time.monotonic())

        started = time.monotonic()
        deadline = started + args.timeout
        runner = threading.Thread(target=script, name="faults")
        runner.start()
        chaos_jobs = submit_spread(cluster, args.jobs, "chaos", args.spacing)
        runner.join()
        last_fault = fault_times[-1]
        done = wait_all(cluster, chaos_jobs, deadline)
        timeline(cluster, chaos_jobs, {name: at for (name, _), at in zip(faults, fault_times, strict=True)})
        # Drain: how long after the last fault the jobs submitted before it took to end (those
        # submitted later measure latency, not recovery).
        fault_at = time.time() - (time.monotonic() - last_fault)
        before = [j for j in done.values() if datetime.fromisoformat(j["created_at"]).timestamp() <= fault_at]
        last_end = max((datetime.fromisoformat(j["finished_at"]).timestamp() for j in before if j["finished_at"]),
                       default=fault_at)
        drain = round(max(0.0, last_end - fault_at), 2)  # a job that never ended is counted as lost
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
