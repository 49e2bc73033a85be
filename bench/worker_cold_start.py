"""A worker's start, from process start to its first image, with the model cache cold and warm (issue 18).

Starts a platform (`tests/harness.py`: daphne and the sweeper, no worker) whose web process keeps
members' files and model blobs in an S3-compatible server (moto on loopback, `tests/objectstore.py`),
then, `--rounds` times each, alternating:

  * cold: a Celery worker process with a DATA_DIR of its own, empty (no model folders, an empty
    model cache): it fetches the checkpoint from the bucket into its cache before generating;
  * warm: the same, with a DATA_DIR whose model cache already holds the checkpoint.

Each round starts the worker process, submits one tiny txt2img job (64×64, 2 steps, the tiny
model) at once, and measures from the worker's `Popen` to the moment the job is seen succeeded
(polled every 20 ms; also when the worker first shows online), then stops the worker. A first cold round is run and not counted (it
publishes the checkpoint and warms the OS's file cache for Python's imports). Printed: each
round's seconds, the medians of each kind side by side (to first image, to online, and between:
where the fetch falls), the checkpoint's size, the load average, one final JSON line.

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


def _online(platform, name: str) -> bool:
    workers = platform.get("admin", "/api/v1/workers").json()["workers"]
    return any(worker["name"] == name and worker["state"] == "online" for worker in workers)


def one_round(platform, data_dir: Path, label: str, index: int) -> tuple[float, float]:
    """Seconds from the worker process's start to its registration, and to its first image."""
    from inference.processes import worker_command

    name = platform.worker_name(f"{label}{index}")
    log = open(platform.data_dir / f"{label}{index}.log", "ab")  # noqa: SIM115 - closed below
    started = time.perf_counter()
    process = subprocess.Popen(worker_command(name, app="config"), cwd=REPO, env=_worker_env(platform, data_dir),
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        job_id = platform.submit("alice", **JOB)
        online = 0.0
        while True:
            if not online and _online(platform, name):
                online = time.perf_counter() - started
            status = platform.get("alice", f"/api/v1/jobs/{job_id}").json()["status"]
            if status == "succeeded":
                image = time.perf_counter() - started
                return online or image, image
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
            cold, warm, cold_online, warm_online = [], [], [], []
            for index in range(args.rounds):
                cold_dir = scratch / f"cold{index}"
                registered, image = one_round(platform, cold_dir, "cold", index)
                cold_online.append(registered)
                cold.append(image)
                shutil.rmtree(cold_dir, ignore_errors=True)
                registered, image = one_round(platform, warm_dir, "warm", index)
                warm_online.append(registered)
                warm.append(image)
                print(f"round {index + 1}: cold {cold[-1]:.2f} s (online at {cold_online[-1]:.2f})   "
                      f"warm {warm[-1]:.2f} s (online at {warm_online[-1]:.2f})", flush=True)
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    cold_median, warm_median = statistics.median(cold), statistics.median(warm)
    print(f"\nprocess start → first image (median of {args.rounds}, checkpoint {size / 2**20:.1f} MiB from moto):")
    print(f"  {'':<12}{'first image':>12}{'online':>10}{'online → image':>16}")
    for label, images, onlines in (("cache cold", cold, cold_online), ("cache warm", warm, warm_online)):
        image, online = statistics.median(images), statistics.median(onlines)
        print(f"  {label:<12}{image:10.2f} s{online:8.2f} s"
              f"{statistics.median(i - o for i, o in zip(images, onlines, strict=True)):14.2f} s")
    print(f"  {'difference':<12}{cold_median - warm_median:10.2f} s   (warm: the baseline, same run)")
    print(f"  load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (timings are noisy when it is high)")
    print(json.dumps({
        "bench": "worker_cold_start", "rounds": args.rounds, "checkpoint_bytes": size,
        "cold_s": [round(value, 3) for value in cold], "warm_s": [round(value, 3) for value in warm],
        "cold_online_s": [round(value, 3) for value in cold_online],
        "warm_online_s": [round(value, 3) for value in warm_online],
        "cold_median_s": round(cold_median, 3), "warm_median_s": round(warm_median, 3),
    }))


if __name__ == "__main__":
    main()
