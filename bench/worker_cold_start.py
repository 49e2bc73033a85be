"""A worker's start, from process start to its first image, with the model cache cold and warm (issue 18).

Starts a platform (`tests/harness.py`: daphne and the sweeper, no worker) whose web process keeps
members' files and model blobs in an S3-compatible server (moto on loopback, `tests/objectstore.py`),
then, `--rounds` times each, alternating:

  * cold: a Celery worker process with a DATA_DIR of its own, empty (no model folders, an empty
    model cache): it fetches the checkpoint from the bucket into its cache before generating;
  * warm: the same, with a DATA_DIR whose model cache already holds the checkpoint.

Each round starts the worker process, submits one tiny txt2img job (64×64, 2 steps, the tiny
model) at once, and measures from the worker's `Popen` to the moment the job is seen succeeded
(polled every 20 ms), then stops the worker. A first cold round is run and not counted (it
publishes the checkpoint and warms the OS's file cache for Python's imports). Printed: each
round's seconds, the median of each kind side by side, the checkpoint's size, one final JSON line.

Needs the cluster mode (the worker shares only PostgreSQL, Redis and the bucket with the web):

    DATABASE_URL=postgres://… REDIS_URL=redis://… .venv/bin/python bench/worker_cold_start.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

JOB = {"prompt": "a lighthouse at dawn", "width": 64, "height": 64, "steps": 2, "sampler_name": "Euler", "seed": 1}


def _worker_env(platform, data_dir: Path) -> dict[str, str]:
    return {
        **platform.env(worker=True),
        "DATA_DIR": str(data_dir),
        "ATELIER_PROBE_DIR": str(data_dir / "probes"),
        "SECRET_KEY": (platform.data_dir / "secret_key").read_text(),
    }


def one_round(platform, data_dir: Path, label: str, index: int) -> float:
    """Seconds from the worker process's start to its first image."""
    from inference.processes import worker_command

    name = platform.worker_name(f"{label}{index}")
    log = open(platform.data_dir / f"{label}{index}.log", "ab")  # noqa: SIM115 - closed below
    started = time.perf_counter()
    process = subprocess.Popen(worker_command(name, app="config"), cwd=REPO, env=_worker_env(platform, data_dir),
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        job_id = platform.submit("alice", **JOB)
        while True:
            status = platform.get("alice", f"/api/v1/jobs/{job_id}").json()["status"]
            if status == "succeeded":
                return time.perf_counter() - started
            if status in ("failed", "cancelled"):
                raise RuntimeError(f"the {label} round's job {status}:\n{platform.logs()}")
            if time.perf_counter() - started > 300:
                raise TimeoutError(f"the {label} round took over 300 s:\n{platform.logs()}")
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")):
        sys.exit("set DATABASE_URL and REDIS_URL: a worker on another host shares only those and the bucket")

    from tests.harness import TINY_CHECKPOINT_NAME, running_platform
    from tests.objectstore import MotoServer

    server = MotoServer().start()
    scratch = Path(tempfile.mkdtemp(prefix="atelier-cold-start-"))
    try:
        bucket = server.bucket_create()
        with running_platform(workers=0, env_overrides=server.storage_environment(bucket)) as platform:
            size = (platform.data_dir / "public" / "models" / "Stable-diffusion" / TINY_CHECKPOINT_NAME).stat().st_size
            warm_dir = scratch / "warm"
            one_round(platform, warm_dir, "warmup", 0)  # not counted: publishes, fills warm_dir's cache
            cold, warm = [], []
            for index in range(args.rounds):
                cold_dir = scratch / f"cold{index}"
                cold.append(one_round(platform, cold_dir, "cold", index))
                shutil.rmtree(cold_dir, ignore_errors=True)
                warm.append(one_round(platform, warm_dir, "warm", index))
                print(f"round {index + 1}: cold {cold[-1]:.2f} s   warm {warm[-1]:.2f} s", flush=True)
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    cold_median, warm_median = statistics.median(cold), statistics.median(warm)
    print(f"\nprocess start → first image (median of {args.rounds}, checkpoint {size / 2**20:.1f} MiB from moto):")
    print(f"  {'cache cold':<12}{cold_median:8.2f} s")
    print(f"  {'cache warm':<12}{warm_median:8.2f} s   (baseline, same run)")
    print(f"  {'difference':<12}{cold_median - warm_median:8.2f} s")
    print(json.dumps({
        "bench": "worker_cold_start", "rounds": args.rounds, "checkpoint_bytes": size,
        "cold_s": [round(value, 3) for value in cold], "warm_s": [round(value, 3) for value in warm],
        "cold_median_s": round(cold_median, 3), "warm_median_s": round(warm_median, 3),
    }))


if __name__ == "__main__":
    main()
