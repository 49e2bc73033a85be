"""The PAI-EAS async queue through the official SDK, against the sync `/sdapi/v1/txt2img` path.

Starts a platform (tests/harness.py: daphne + one Celery worker + sweeper, tiny model), creates an
async service with `manage.py create_eas_service`, and measures, for the same tiny job
(64x64, 4 steps, fixed seed):
  * sync:   POST /sdapi/v1/txt2img until its JSON answer (httpx, keep-alive), `--runs` times;
  * async:  the SDK's `put` into `<service>/sdapi/v1/txt2img` until the result frame arrives on the
            sink watcher (already connected; each result committed), `--runs` times;
  * put throughput: `--puts` back-to-back SDK puts (sequential, then from `--threads` threads),
            results not awaited: requests/s the queue accepts.
Each mode runs one warm-up first. Prints a side-by-side table, then one JSON line of the figures.
The SDK runs in its own virtual environment (tests/e2e/eas_sdk.py, built once into .cache/).

    .venv/bin/python bench/eas_queue.py [--runs 5] [--puts 50] [--threads 4]

Set DATABASE_URL / REDIS_URL to measure cluster mode; by default it is the embedded default.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

BODY = {"prompt": "a lighthouse at dawn", "steps": 4, "width": 64, "height": 64, "seed": 1234,
        "sampler_name": "Euler a", "alwayson_scripts": {"sd_model_checkpoint": "atelier-tiny.safetensors"}}


def sync_runs(platform, runs: int) -> list[float]:
    seconds = []
    with httpx.Client(base_url=platform.base_url, headers=platform.headers("alice"), timeout=300) as client:
        for _ in range(runs + 1):  # the first is the warm-up
            started = time.perf_counter()
            response = client.post("/sdapi/v1/txt2img", json=BODY)
            seconds.append(time.perf_counter() - started)
            response.raise_for_status()
    return seconds[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--puts", type=int, default=50)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()

    import django

    django.setup()
    from tests.e2e.eas_sdk import run_client, sdk_python
    from tests.harness import Platform

    python = sdk_python()
    platform = Platform()
    try:
        platform.start(workers=1)
        host = platform.base_url.removeprefix("http://")
        printed = platform.manage("create_eas_service", "sd_bench", "--owner", "alice", "--host", host)
        fields = dict(line.split(": ", 1) for line in printed.splitlines() if ": " in line)
        client = {"endpoint": fields["endpoint"].strip(), "service": "sd_bench", "token": fields["token"].strip(),
                  "route": "sdapi/v1/txt2img", "body": json.dumps(BODY)}

        sync = sync_runs(platform, args.runs)
        lines = run_client(python, "roundtrip", {**client, "runs": args.runs + 1, "puts": args.puts, "threads": 1}, timeout=600)
        runs = [line for line in lines if "run" in line]
        assert all(line["status"] == 0 for line in runs), runs
        queued = [line["seconds"] for line in runs[1:]]
        sequential = next(line for line in lines if "puts" in line)
        parallel = next(
            line for line in run_client(python, "roundtrip", {**client, "runs": 0, "puts": args.puts, "threads": args.threads})
            if "puts" in line
        )
    except BaseException:
        print(platform.logs())
        raise
    finally:
        platform.stop()

    sync_median, queued_median = statistics.median(sync), statistics.median(queued)
    figures = {
        "mode": "cluster" if os.environ.get("DATABASE_URL") else "embedded",
        "runs": args.runs,
        "sync_median_s": round(sync_median, 4),
        "async_median_s": round(queued_median, 4),
        "async_overhead_s": round(queued_median - sync_median, 4),
        "put_rps_sequential": round(sequential["puts"] / sequential["seconds"], 1),
        "put_rps_threads": round(parallel["puts"] / parallel["seconds"], 1),
        "threads": args.threads,
        "puts": args.puts,
    }
    print(f"{'tiny job, 64x64, 4 steps':<34}{'sync /sdapi/v1':>16}{'SDK put → sink':>16}")
    print(f"{'median seconds':<34}{sync_median:>16.3f}{queued_median:>16.3f}")
    print(f"{'min seconds':<34}{min(sync):>16.3f}{min(queued):>16.3f}")
    print(f"{'max seconds':<34}{max(sync):>16.3f}{max(queued):>16.3f}")
    print(f"{'async overhead (median)':<34}{'':>16}{queued_median - sync_median:>+16.3f}")
    print(f"{'SDK put throughput, 1 thread':<34}{'':>16}{figures['put_rps_sequential']:>12.1f} r/s")
    print(f"{f'SDK put throughput, {args.threads} threads':<34}{'':>16}{figures['put_rps_threads']:>12.1f} r/s")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
