"""What the platform adds on top of diffusers, per job.

Runs, in one process and one session, alternating:
  * bare:     `pipeline(...)` on the tiny checkpoint, loaded once with the worker's own loader;
  * platform: POST /api/v1/jobs → websocket until `succeeded` → GET the PNG, against a running
              platform (daphne + one Celery worker process) on the same tiny model and parameters.

and prints the median of each and their difference. Usage (from the repository root):

    .venv/bin/python bench/e2e_overhead.py [--runs 5] [--size 512] [--steps 20]

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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    import django

    django.setup()
    import torch
    from websockets.sync.client import connect

    from a1111.samplers import resolve_sampler
    from runtime.engine import WorkerRuntime
    from runtime.specs import GenerationSpec
    from tests.harness import Platform

    params = {"prompt": "a lighthouse at dawn", "width": args.size, "height": args.size,
              "steps": args.steps, "sampler_name": "Euler a", "seed": 1234}

    platform = Platform()
    try:
        platform.start(workers=1)
        checkpoint = next(platform.data_dir.glob("public/models/Stable-diffusion/*.safetensors"))
        runtime = WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=platform.data_dir / "cache")
        sampler = resolve_sampler("Euler a")
        spec = GenerationSpec(
            checkpoint_path=str(checkpoint), checkpoint_sha256="bench", prompts=[params["prompt"]], negative_prompts=[""],
            steps=args.steps, cfg_scale=7.0, width=args.size, height=args.size, seeds=[1234], max_batch=1,
            scheduler_class=sampler.scheduler_class, scheduler_kwargs=sampler.scheduler_kwargs,
        )

        def bare() -> float:
            started = time.perf_counter()
            runtime.generate(spec)
            return time.perf_counter() - started

        def through_platform() -> float:
            started = time.perf_counter()
            job_id = platform.submit("alice", **params)
            url = platform.base_url.replace("http://", "ws://") + f"/ws/jobs/{job_id}"
            with connect(url, additional_headers=platform.headers("alice")) as socket:
                while (event := json.loads(socket.recv(timeout=600)))["status"] not in ("succeeded", "failed", "cancelled"):
                    pass
            assert event["status"] == "succeeded", event
            png = platform.get("alice", event["images"][0])
            assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
            return time.perf_counter() - started

        bare(), through_platform()  # warm-up: load the pipeline in both processes
        bare_times, platform_times = [], []
        for _ in range(args.runs):
            bare_times.append(bare())
            platform_times.append(through_platform())
    finally:
        platform.stop()

    bare_ms = statistics.median(bare_times) * 1000
    platform_ms = statistics.median(platform_times) * 1000
    mode = "PostgreSQL + Redis" if os.environ.get("REDIS_URL") else "embedded (SQLite, file broker)"
    print(f"tiny model, {args.size}x{args.size}, {args.steps} steps, Euler a, {args.runs} runs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {mode}")
    print(f"{'':28}{'median ms':>12}{'min ms':>10}{'max ms':>10}")
    print(f"{'bare diffusers pipeline':28}{bare_ms:12.1f}{min(bare_times) * 1000:10.1f}{max(bare_times) * 1000:10.1f}")
    print(f"{'platform submit -> PNG':28}{platform_ms:12.1f}{min(platform_times) * 1000:10.1f}{max(platform_times) * 1000:10.1f}")
    print(f"{'overhead':28}{platform_ms - bare_ms:12.1f}   ({(platform_ms / bare_ms - 1) * 100:.1f}%)")


if __name__ == "__main__":
    main()
