"""What the platform adds on top of diffusers, per job, and where that time goes.

Runs, in one process and one session, alternating, for each case:
  * bare:     `pipeline(...)` on the tiny checkpoint, loaded once with the worker's own loader;
  * platform: POST /api/v1/jobs → websocket until `succeeded` → GET the PNG, against a running
              platform (daphne + one Celery worker process + the sweeper) on the same tiny model
              and parameters;
  * sync:     POST /sdapi/v1/txt2img (64×64, 2 steps) as an A1111 client sees it: its wall time
              minus the GPU-seconds the platform recorded for that job.

Cases: `small` (64×64, 2 steps: the overhead dominates), `large` (`--size`×`--size`, `--steps`,
by default 512×512, 20 steps) and `sync`. For every platform job the stages are timed from what
the platform records anyway (the Job row's created_at / dispatched_at / started_at / finished_at
and gpu_seconds, read from the platform's database after the run) and from timestamps the bench
takes itself (submit response, final websocket event, PNG received); nothing is added to the
platform's own code path. All processes share this machine's wall clock.

    submit       request sent → job row inserted (parse, resolve, insert)
    dispatch     row inserted → submit response (the commit and the dispatcher's wake-up)
    broker       submit response → the worker logs the task received (the sweeper's pass, woken,
                 the broker publish and delivery)
    claim        task received → claimed (task start, the claim UPDATE)
    pipeline     the worker's gpu_seconds (spec built, pipeline call, NSFW check)
    store+finish claimed + gpu_seconds → finished_at (PNG encode, store)
    notify       finished_at → final websocket event here (finish transaction, usage record,
                 event relay, websocket)
    png get      final event → PNG bytes received

After the runs, the request floors: the median wall time of requests that do almost nothing
(`/healthz`, a 404 through every middleware, one job's GET) on the same platform and client, the
cost any call pays before its own work.

Usage (from the repository root):

    .venv/bin/python bench/e2e_overhead.py [--runs 7] [--cases small large sync] [--size 512] [--steps 20]

Set DATABASE_URL / REDIS_URL to measure cluster mode; by default it is the embedded default.
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

STAGES = ("submit", "dispatch", "broker", "claim", "pipeline", "store+finish", "notify", "png get")
# Celery's own INFO line when the worker takes a task off the broker (local time, milliseconds).
RECEIVED = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}).*Task atelier\.run_batch\[[^\]]+\] received")
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class Case:
    name: str
    size: int
    steps: int
    bare: list[float] = field(default_factory=list)
    platform: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=lambda: {stage: [] for stage in STAGES})
    marks: list[tuple[str, float, float, float, float]] = field(default_factory=list)  # job id, sent, answered, evented, done


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (p95 of 7 runs is the slowest)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(fraction * len(ordered) + 0.5)) - 1))
    return ordered[index]


def ms(value: float) -> float:
    return round(value * 1000, 1)


def received_times(platform: Any) -> list[float]:
    """When the worker received each batch task, in order, from its log (wall clock)."""
    text = (platform.data_dir / "w0.log").read_text(errors="replace")
    return [datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() for stamp in RECEIVED.findall(text)]


def job_rows(platform: Any, public_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The Job rows' timestamps and gpu_seconds, read straight from the platform's database."""
    columns = "public_id, created_at, dispatched_at, started_at, finished_at, gpu_seconds"
    if platform._database:
        import psycopg

        with psycopg.connect(platform._database) as conn:
            rows = conn.execute(
                f"SELECT {columns} FROM inference_job WHERE public_id = ANY(%s)", [public_ids]
            ).fetchall()
    else:
        with sqlite3.connect(platform.data_dir / "db.sqlite3") as conn:
            marks = ",".join("?" * len(public_ids))
            rows = conn.execute(f"SELECT {columns} FROM inference_job WHERE public_id IN ({marks})", public_ids).fetchall()

    def stamp(value: Any) -> float | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()

    return {
        row[0]: {"created": stamp(row[1]), "dispatched": stamp(row[2]), "started": stamp(row[3]),
                 "finished": stamp(row[4]), "gpu_seconds": float(row[5])}
        for row in rows
    }


def request_floors(client: Any, job_ids: list[str], runs: int = 30) -> dict[str, float]:
    """Median wall time of requests that do (almost) nothing, on the same platform and client: what
    any HTTP call costs here before the work it asks for (what the submit and PNG GET stand on)."""
    paths = {
        "GET /healthz (answered by the first middleware)": "/healthz",
        "GET /api/v1/no-such-route (every middleware, URL resolver, 404)": "/api/v1/no-such-route",
    }
    if job_ids:
        paths["GET /api/v1/jobs/<id> (token, one job query)"] = f"/api/v1/jobs/{job_ids[0]}"
    floors = {}
    for label, path in paths.items():
        for _ in range(3):
            client.get(path)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            client.get(path)
            times.append(time.perf_counter() - started)
        floors[label] = ms(statistics.median(times))
    return floors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--cases", nargs="+", choices=["small", "large", "sync"], default=["small", "large", "sync"])
    parser.add_argument("--size", type=int, default=512, help="the large case's width and height")
    parser.add_argument("--steps", type=int, default=20, help="the large case's steps")
    parser.add_argument("--small-size", type=int, default=64)
    parser.add_argument("--small-steps", type=int, default=2)
    args = parser.parse_args()

    import django

    django.setup()
    import httpx
    import torch
    from websockets.sync.client import connect

    from a1111.samplers import resolve_sampler
    from runtime.engine import WorkerRuntime
    from runtime.specs import GenerationSpec
    from tests.harness import Platform

    cases = {
        "small": Case("small", args.small_size, args.small_steps),
        "large": Case("large", args.size, args.steps),
        "sync": Case("sync", args.small_size, args.small_steps),
    }
    platform = Platform()
    try:
        platform.start(workers=1)
        checkpoint = next(platform.data_dir.glob("public/models/Stable-diffusion/*.safetensors"))
        runtime = WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=platform.data_dir / "cache")
        sampler = resolve_sampler("Euler a")

        def params(case: Case) -> dict[str, Any]:
            return {"prompt": "a lighthouse at dawn", "width": case.size, "height": case.size,
                    "steps": case.steps, "sampler_name": "Euler a", "seed": 1234}

        def bare(case: Case) -> float:
            spec = GenerationSpec(
                checkpoint_path=str(checkpoint), checkpoint_sha256="bench", prompts=["a lighthouse at dawn"],
                negative_prompts=[""], steps=case.steps, cfg_scale=7.0, width=case.size, height=case.size,
                seeds=[1234], max_batch=1, scheduler_class=sampler.scheduler_class,
                scheduler_kwargs=sampler.scheduler_kwargs,
            )
            started = time.perf_counter()
            runtime.generate(spec)
            return time.perf_counter() - started

        # One keep-alive client, as a real one would hold: a new httpx client per call costs ~40 ms
        # here (it builds a TLS context), which is the bench's cost, not the platform's.
        client = httpx.Client(base_url=platform.base_url, headers=platform.headers("alice"), timeout=600)

        def through_platform(case: Case) -> float:
            sent_wall, started = time.time(), time.perf_counter()
            response = client.post("/api/v1/jobs", json=params(case))
            answered_wall = time.time()
            assert response.status_code == 201, response.text
            job_id = response.json()["id"]
            url = platform.base_url.replace("http://", "ws://") + f"/ws/jobs/{job_id}"
            with connect(url, additional_headers=platform.headers("alice")) as socket:
                while (event := json.loads(socket.recv(timeout=600)))["status"] not in TERMINAL:
                    pass
            evented_wall = time.time()
            assert event["status"] == "succeeded", event
            png = client.get(event["images"][0])
            assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
            elapsed = time.perf_counter() - started
            case.marks.append((job_id, sent_wall, answered_wall, evented_wall, sent_wall + elapsed))
            return elapsed

        def sync_call(case: Case) -> float:
            body = {**params(case), "sampler_name": "Euler a"}
            started = time.perf_counter()
            response = client.post("/sdapi/v1/txt2img", json=body)
            elapsed = time.perf_counter() - started
            assert response.status_code == 200, response.text
            job_id = json.loads(response.json()["info"])["id_task"]
            case.marks.append((job_id, 0.0, 0.0, 0.0, elapsed))
            return elapsed

        chosen = [cases[name] for name in args.cases]
        for case in chosen:  # warm-up: load the pipeline in both processes, at each size
            bare(case)
            sync_call(case) if case.name == "sync" else through_platform(case)
            case.marks.clear()
        for _ in range(args.runs):
            for case in chosen:
                case.bare.append(bare(case))
                case.platform.append(sync_call(case) if case.name == "sync" else through_platform(case))
        rows = job_rows(platform, [mark[0] for case in chosen for mark in case.marks])
        received = received_times(platform)
        floors = request_floors(client, [mark[0] for case in chosen for mark in case.marks if mark[1]][:1])
        client.close()
    finally:
        platform.stop()

    figures: dict[str, Any] = {
        "mode": "cluster" if os.environ.get("REDIS_URL") else "embedded", "runs": args.runs,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    mode = "PostgreSQL + Redis" if os.environ.get("REDIS_URL") else "embedded (SQLite, file broker)"
    print(f"tiny model, Euler a, {args.runs} runs per case, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {mode}")
    for case in chosen:
        if case.name == "sync":
            overheads = [case.platform[i] - rows[mark[0]]["gpu_seconds"] for i, mark in enumerate(case.marks)]
            print(f"\n/sdapi/v1/txt2img, {case.size}x{case.size}, {case.steps} steps (sync, as a client sees it)")
            print(f"{'':34}{'median ms':>10}{'p95 ms':>10}{'min ms':>10}")
            for label, values in (("bare diffusers pipeline", case.bare), ("sync call wall time", case.platform),
                                  ("recorded gpu_seconds", [rows[m[0]]["gpu_seconds"] for m in case.marks]),
                                  ("overhead (wall - gpu_seconds)", overheads)):
                print(f"{label:34}{ms(statistics.median(values)):10.1f}{ms(percentile(values, 0.95)):10.1f}{ms(min(values)):10.1f}")
            figures["sync"] = {"size": case.size, "steps": case.steps,
                               "bare_ms": ms(statistics.median(case.bare)),
                               "wall_ms": ms(statistics.median(case.platform)),
                               "overhead_median_ms": ms(statistics.median(overheads)),
                               "overhead_p95_ms": ms(percentile(overheads, 0.95))}
            continue
        for (job_id, sent, answered, evented, done) in case.marks:
            row = rows[job_id]
            stage = case.stages
            stage["submit"].append(row["created"] - sent)
            stage["dispatch"].append(answered - row["created"])
            # the received line just before the claim (one job at a time: each job is its own batch)
            got = max((stamp for stamp in received if stamp <= row["started"] + 0.001), default=row["started"])
            stage["broker"].append(got - answered)
            stage["claim"].append(row["started"] - got)
            stage["pipeline"].append(row["gpu_seconds"])
            stage["store+finish"].append(row["finished"] - row["started"] - row["gpu_seconds"])
            stage["notify"].append(evented - row["finished"])
            stage["png get"].append(done - evented)
        # Each platform run minus the bare run beside it, then the median and p95 of those.
        overheads = [p - b for p, b in zip(case.platform, case.bare, strict=True)]
        # The same job's wall time minus the pipeline time it recorded: free of the bare run's noise.
        own = [p - rows[mark[0]]["gpu_seconds"] for p, mark in zip(case.platform, case.marks, strict=True)]
        print(f"\n/api/v1/jobs, {case.size}x{case.size}, {case.steps} steps: submit -> websocket -> PNG")
        print(f"{'':34}{'median ms':>10}{'p95 ms':>10}{'min ms':>10}")
        for label, values in (("bare diffusers pipeline", case.bare), ("platform submit -> PNG", case.platform),
                              ("overhead (platform - bare)", overheads), ("overhead (platform - gpu_seconds)", own)):
            print(f"{label:34}{ms(statistics.median(values)):10.1f}{ms(percentile(values, 0.95)):10.1f}{ms(min(values)):10.1f}")
        print("  stages of a platform job (each stage's median; the Job row's timestamps + the bench's own):")
        for name in STAGES:
            values = case.stages[name]
            print(f"    {name:30}{ms(statistics.median(values)):10.1f}{ms(percentile(values, 0.95)):10.1f}{ms(min(values)):10.1f}")
        figures[case.name] = {
            "size": case.size, "steps": case.steps,
            "bare_ms": ms(statistics.median(case.bare)), "platform_ms": ms(statistics.median(case.platform)),
            "overhead_median_ms": ms(statistics.median(overheads)), "overhead_p95_ms": ms(percentile(overheads, 0.95)),
            "overhead_vs_gpu_seconds_median_ms": ms(statistics.median(own)),
            "overhead_vs_gpu_seconds_p95_ms": ms(percentile(own, 0.95)),
            "stages_median_ms": {name: ms(statistics.median(values)) for name, values in case.stages.items()},
        }
    print("\nrequest floors on the same platform (median of 30, ms):")
    for label, value in floors.items():
        print(f"    {label:70}{value:8.1f}")
    figures["request_floors_ms"] = floors
    figures["loadavg"] = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
