"""The sync APIs at load: A1111 clients and pollers against one web process (issue 19, item 2).

Starts a platform (daphne, one Celery worker, the sweeper: `tests/harness.py`'s processes) on the
tiny model, then, for `--duration` seconds, from one asyncio loop with httpx:

  * `--clients` sync A1111 clients (default 20), each in a loop: `POST /sdapi/v1/txt2img`
    (64×64, 2 steps, Euler a), which holds the request open until the job's images are back;
    they are spread over the demo members alice, bob (studio-a) and charlie (studio-b);
  * `--pollers` pollers (default 50), each in a loop with `--poll-interval` seconds between a
    response and its next request: half `GET /api/v1/jobs/<id>` of one of their member's jobs
    that is queued or running (else their newest), half `GET /sdapi/v1/progress`;
  * one lister per member, `GET /api/v1/jobs?limit=25` every second, which finds the pollers
    their job ids (its figures are printed apart, not among the pollers');
  * a ticker that measures this bench loop's own lag (what of a latency is the client's).

The worker is saturated: twenty clients keep more jobs queued than it can run. Printed: images
submitted and finished, images/s through the platform beside the bare pipeline
(`WorkerRuntime.generate` in this process, after the load, at the batch sizes the scheduler
formed, read from the jobs' `batch_id`; the worker and the bare calls on `--torch-threads`
threads, 1 by default), the pollers' requests/s and p50/p99 latency per kind,
p50/p99 of the sync call, the CPU the web process and the worker used, the load average, and
one final JSON line. The issue's goal: a poll's p99 ≤ 50 ms while the workers are saturated.

    .venv/bin/python bench/api_load.py                                   # the issue's numbers
    .venv/bin/python bench/api_load.py --clients 4 --pollers 10 --duration 10
    DATABASE_URL=postgres://… REDIS_URL=redis://… .venv/bin/python bench/api_load.py   # cluster
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

MEMBERS = ("alice", "bob", "charlie")
ACTIVE = ("queued", "dispatched", "running")
PROMPT = "a lighthouse at dawn"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(fraction * len(ordered) + 0.5)) - 1))]


def ms(value: float) -> float:
    return round(value * 1000, 1)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (and its waited-for children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


@dataclass
class Load:
    """What the load phase saw, on the bench's clocks."""

    started: float = 0.0
    ended: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    sync_jobs: list[tuple[str, float, int]] = field(default_factory=list)  # job id, answered at, images
    sync_errors: list[str] = field(default_factory=list)
    submitted_images: int = 0
    loop_lag: list[float] = field(default_factory=list)
    job_ids: dict[str, list[str]] = field(default_factory=lambda: {member: [] for member in MEMBERS})


async def run_load(base_url: str, tokens: dict[str, str], args: argparse.Namespace) -> Load:
    import httpx

    load = Load()
    stop = asyncio.Event()
    headers = {member: {"Authorization": f"Bearer {tokens[member]}"} for member in MEMBERS}
    body = {"prompt": PROMPT, "width": args.size, "height": args.size, "steps": args.steps,
            "sampler_name": "Euler a", "seed": -1, "send_images": True}
    connections = args.clients + args.pollers + len(MEMBERS) + 4
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)

    async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits) as client:

        async def timed(kind: str, member: str, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
            started = time.perf_counter()
            try:
                response = await client.request(method, path, headers=headers[member], **kwargs)
            except httpx.HTTPError as exc:
                load.statuses[kind][type(exc).__name__] += 1
                return None
            if load.started <= started < load.ended or not load.ended:
                load.latencies[kind].append(time.perf_counter() - started)
                load.statuses[kind][response.status_code] += 1
            return response

        async def sync_client(index: int) -> None:
            member = MEMBERS[index % len(MEMBERS)]
            while not stop.is_set():
                load.submitted_images += 1
                response = await timed("txt2img", member, "POST", "/sdapi/v1/txt2img", json=body)
                if response is None or response.status_code != 200:
                    load.sync_errors.append(response.text[:200] if response is not None else "transport error")
                    await asyncio.sleep(0.5)
                    continue
                answer = response.json()
                job_id = json.loads(answer["info"])["id_task"]
                load.sync_jobs.append((job_id, time.perf_counter(), len(answer["images"])))

        async def lister(member: str) -> None:
            while not stop.is_set():
                response = await timed("list", member, "GET", "/api/v1/jobs", params={"limit": "25"})
                if response is not None and response.status_code == 200:
                    jobs = response.json()["jobs"]
                    active = [job["id"] for job in jobs if job["status"] in ACTIVE]
                    load.job_ids[member] = active or [job["id"] for job in jobs[:1]]
                await asyncio.sleep(1.0)

        async def poller(index: int) -> None:
            member = MEMBERS[index % len(MEMBERS)]
            kind = "job" if index % 2 == 0 else "progress"
            await asyncio.sleep(random.uniform(0, args.poll_interval))  # spread the pollers out
            while not stop.is_set():
                if kind == "progress":
                    await timed(kind, member, "GET", "/sdapi/v1/progress")
                elif ids := load.job_ids[member]:
                    await timed(kind, member, "GET", f"/api/v1/jobs/{random.choice(ids)}")
                await asyncio.sleep(args.poll_interval)

        async def ticker() -> None:
            while not stop.is_set():
                before = time.perf_counter()
                await asyncio.sleep(0.01)
                load.loop_lag.append(time.perf_counter() - before - 0.01)

        load.started = time.perf_counter()
        tasks = [asyncio.create_task(sync_client(i)) for i in range(args.clients)]
        tasks += [asyncio.create_task(lister(member)) for member in MEMBERS]
        tasks += [asyncio.create_task(poller(i)) for i in range(args.pollers)]
        tasks.append(asyncio.create_task(ticker()))
        await asyncio.sleep(args.duration)
        load.ended = time.perf_counter()
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=600)  # the sync calls in flight finish
    return load


def job_rows(platform: Any, public_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each job's batch, status, image count and pipeline seconds, from the platform's database."""
    columns = "public_id, batch_id, status, outputs, gpu_seconds"
    if platform._database:
        import psycopg

        with psycopg.connect(platform._database) as conn:
            rows = conn.execute(f"SELECT {columns} FROM inference_job WHERE public_id = ANY(%s)", [public_ids]).fetchall()
    else:
        with sqlite3.connect(platform.data_dir / "db.sqlite3") as conn:
            marks = ",".join("?" * len(public_ids))
            rows = conn.execute(f"SELECT {columns} FROM inference_job WHERE public_id IN ({marks})", public_ids).fetchall()
    return {
        row[0]: {"batch": row[1], "status": row[2],
                 "images": len(row[3] if isinstance(row[3], list) else json.loads(row[3] or "[]")),
                 "gpu_seconds": float(row[4])}
        for row in rows
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=20, help="sync /sdapi/v1/txt2img clients")
    parser.add_argument("--pollers", type=int, default=50, help="pollers: half job detail, half /sdapi/v1/progress")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--poll-interval", type=float, default=0.5, help="seconds between a poller's response and its next poll")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--bare-runs", type=int, default=3, help="bare pipeline calls per batch size (median)")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch threads of the worker (OMP_NUM_THREADS) and of the bare pipeline here: on a "
                             "busy 2-core machine two threads spin against each other (tests/conftest.py)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the platform's processes (repeatable)")
    args = parser.parse_args()

    import django

    django.setup()
    import httpx
    import torch

    from a1111.samplers import resolve_sampler
    from runtime.engine import WorkerRuntime
    from runtime.specs import GenerationSpec
    from tests.harness import Platform

    torch.set_num_threads(args.torch_threads)
    overrides = {"OMP_NUM_THREADS": str(args.torch_threads), **dict(item.split("=", 1) for item in args.env)}
    platform = Platform(env_overrides=overrides)
    try:
        platform.start(workers=args.workers)
        tokens = {member: platform.token(member) for member in MEMBERS}
        warm = {"prompt": PROMPT, "width": args.size, "height": args.size, "steps": args.steps, "sampler_name": "Euler a"}
        for member in MEMBERS:  # the worker's pipeline loaded, each member's options row made
            response = httpx.post(f"{platform.base_url}/sdapi/v1/txt2img", json=warm, timeout=600,
                                  headers=platform.headers(member))
            assert response.status_code == 200, response.text
        web_pid, worker_pids = platform.processes["web"].pid, [platform.processes[f"w{i}"].pid for i in range(args.workers)]
        cpu_before = {"web": cpu_seconds(web_pid), "workers": sum(cpu_seconds(pid) for pid in worker_pids)}
        load_before = loadavg()
        load = asyncio.run(run_load(platform.base_url, tokens, args))
        window = load.ended - load.started
        cpu = {"web": cpu_seconds(web_pid) - cpu_before["web"],
               "workers": sum(cpu_seconds(pid) for pid in worker_pids) - cpu_before["workers"]}
        load_after = loadavg()
        rows = job_rows(platform, [job_id for job_id, _, _ in load.sync_jobs]) if load.sync_jobs else {}

        # The batches the scheduler formed (all of this run's jobs are ours), and the bare pipeline at those sizes.
        batches: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows.values():
            batches[row["batch"] or row["status"]].append(row)
        batch_images = {key: sum(row["images"] for row in members) for key, members in batches.items()}
        batch_pipeline = {key: sum(row["gpu_seconds"] for row in members) for key, members in batches.items()}
        checkpoint = next(platform.data_dir.glob("public/models/Stable-diffusion/*.safetensors"))
        runtime = WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=platform.data_dir / "cache")
        sampler = resolve_sampler("Euler a")
        bare: dict[int, float] = {}
        for size in sorted({images for images in batch_images.values() if images}) or [1]:
            spec = GenerationSpec(
                checkpoint_path=str(checkpoint), checkpoint_sha256="bench", prompts=[PROMPT] * size,
                negative_prompts=[""] * size, steps=args.steps, cfg_scale=7.0, width=args.size, height=args.size,
                seeds=[1234 + i for i in range(size)], max_batch=size, scheduler_class=sampler.scheduler_class,
                scheduler_kwargs=sampler.scheduler_kwargs,
            )
            if not bare:
                runtime.generate(spec)  # the pipeline loaded and warm
            timings = []
            for _ in range(args.bare_runs):
                started = time.perf_counter()
                runtime.generate(spec)
                timings.append(time.perf_counter() - started)
            bare[size] = statistics.median(timings)
    finally:
        platform.stop()

    in_window = [images for _, answered, images in load.sync_jobs if answered <= load.ended]
    finished_images = sum(images for _, _, images in load.sync_jobs)
    platform_rate = sum(in_window) / window
    bare_time = sum(bare[images] for images in batch_images.values() if images)
    bare_rate = sum(batch_images.values()) / bare_time if bare_time else float("nan")
    sizes = Counter(images for images in batch_images.values() if images)
    mean_batch = statistics.mean(batch_images.values()) if batch_images else float("nan")
    pipeline_busy = sum(batch_pipeline.values())  # the worker's own pipeline seconds, all batches

    mode = "PostgreSQL + Redis" if os.environ.get("REDIS_URL") else "embedded (SQLite, file broker)"
    print(f"tiny model, {args.size}x{args.size}, {args.steps} steps, Euler a; {args.clients} sync clients, "
          f"{args.pollers} pollers every {args.poll_interval} s, {args.duration:.0f} s, {args.workers} worker(s), "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), {mode}")
    print(f"load average before {load_before}, after {load_after}; web process CPU {cpu['web'] / window:.0%} "
          f"of a core, worker(s) {cpu['workers'] / window:.0%}")
    print(f"\nimages: submitted {load.submitted_images}, finished {finished_images} "
          f"({sum(in_window)} inside the {window:.1f} s window), sync errors {len(load.sync_errors)}")
    print(f"batches the scheduler formed: {dict(sorted(sizes.items()))} (images: count), mean {mean_batch:.2f}")
    print(f"{'':38}{'images/s':>10}")
    print(f"{'through the platform (sync calls)':38}{platform_rate:10.2f}")
    print(f"{'bare pipeline, same batch sizes':38}{bare_rate:10.2f}")
    print(f"{'worker pipeline seconds / wall':38}{pipeline_busy / window:10.0%}")
    for size, seconds in sorted(bare.items()):
        own = [batch_pipeline[key] for key, images in batch_images.items() if images == size]
        print(f"  batch {size}: bare {ms(seconds):.1f} ms per call, the worker's own {ms(statistics.median(own)) if own else float('nan'):.1f} ms (median)")
    print(f"\n{'requests':38}{'count':>8}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}  statuses")
    figures: dict[str, Any] = {}
    for kind, label in (("job", "GET /api/v1/jobs/<id> (pollers)"), ("progress", "GET /sdapi/v1/progress (pollers)"),
                        ("list", "GET /api/v1/jobs (listers)"), ("txt2img", "POST /sdapi/v1/txt2img (sync)")):
        values = load.latencies.get(kind, [])
        statuses = dict(load.statuses.get(kind, {}))
        print(f"{label:38}{len(values):8d}{len(values) / window:8.1f}{ms(percentile(values, 0.5)):9.1f}"
              f"{ms(percentile(values, 0.99)):9.1f}{ms(max(values, default=float('nan'))):9.1f}  {statuses}")
        figures[kind] = {"count": len(values), "per_s": round(len(values) / window, 1),
                         "p50_ms": ms(percentile(values, 0.5)), "p99_ms": ms(percentile(values, 0.99)),
                         "statuses": {str(key): value for key, value in statuses.items()}}
    polls = load.latencies.get("job", []) + load.latencies.get("progress", [])
    print(f"{'all polls':38}{len(polls):8d}{len(polls) / window:8.1f}{ms(percentile(polls, 0.5)):9.1f}"
          f"{ms(percentile(polls, 0.99)):9.1f}")
    print(f"{'this bench loop lag (10 ms ticker)':38}{len(load.loop_lag):8d}{'':8}{ms(percentile(load.loop_lag, 0.5)):9.1f}"
          f"{ms(percentile(load.loop_lag, 0.99)):9.1f}")
    if load.sync_errors:
        print("first sync errors:", *load.sync_errors[:3], sep="\n  ")
    figures.update({
        "mode": "cluster" if os.environ.get("REDIS_URL") else "embedded", "clients": args.clients,
        "pollers": args.pollers, "poll_interval_s": args.poll_interval, "duration_s": round(window, 1),
        "workers": args.workers, "torch_threads": args.torch_threads, "env": overrides,
        "images_submitted": load.submitted_images, "images_finished": finished_images, "sync_errors": len(load.sync_errors),
        "images_per_s": round(platform_rate, 2), "bare_images_per_s": round(bare_rate, 2),
        "batch_sizes": {str(key): value for key, value in sorted(sizes.items())}, "mean_batch": round(mean_batch, 2),
        "bare_ms_per_batch": {str(key): ms(value) for key, value in bare.items()},
        "pipeline_busy": round(pipeline_busy / window, 2),
        "polls_per_s": round(len(polls) / window, 1), "poll_p50_ms": ms(percentile(polls, 0.5)),
        "poll_p99_ms": ms(percentile(polls, 0.99)), "bench_loop_lag_p99_ms": ms(percentile(load.loop_lag, 0.99)),
        "web_cpu": round(cpu["web"] / window, 2), "workers_cpu": round(cpu["workers"] / window, 2),
        "loadavg_before": load_before, "loadavg_after": load_after,
    })
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
