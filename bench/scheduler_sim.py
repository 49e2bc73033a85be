"""Discrete-event simulation of Atelier's GPU pool: three placement policies on one workload.

It drives the real `inference.scheduler.plan_assignments` (policy `atelier`) and compares it with
two baselines built here: `fifo` (one global queue; the first free worker takes the oldest job and
runs it alone, which is what a plain Celery queue gives) and `affinity` (SwarmUI's rules: a job goes
to a free worker that holds its model; otherwise the model with the highest "pressure", 10 s per
waiting job + the age of the oldest, is loaded on the idle worker released longest ago once its
oldest job has waited 1.5 s; FIFO order, no fairness, no cross-user batching).

Workload (seeded; every policy gets the same jobs):
  * `--workers` GPU workers (8), each runs one pipeline batch of at most `--max-batch` images (8);
  * `--users` users (60) in `--tenants` tenants (6; user u is in tenant u mod tenants; the last
    tenant's plan has weight 2, the others 1);
  * `--checkpoints` checkpoints (10) with Zipf popularity (exponent `--zipf`, 1.1); a third of the
    jobs (`--lora-fraction`) use one of 8 LoRAs (also Zipf); steps are `--steps` (20) for 70% of
    the jobs and +5 / +10 for 15% each; 80% are 512×512 and 20% 512×768. The batch key is
    checkpoint | LoRA | steps | size, so only equal ones share a pipeline call;
  * `--heavy-users` heavy users (3) each submit a 50-image burst (`--burst-images`) every
    `--burst-interval-s` (300 s, ±20%): 50 jobs of 1 image, 25 of 2, 10 of 5 or 6 of 8 + 1 of 2,
    all with one checkpoint/LoRA/steps/size per burst;
  * the other users submit single images as Poisson processes, one every `--light-interval-s` (24 s)
    on average each, during `--minutes` (30) simulated minutes; the run then drains the queue.
    That offers ~2.9 images/s: more than FIFO serves (~2.0), less than the best policy can.

Policy settings (`atelier`): `PolicyConfig`'s defaults, except `--max-running-per-user`, which
defaults to the worker max batch (8): with fewer, a user's burst of single-image jobs can never
fill a batch (at 4, Jain's index falls to ~0.85-0.88 here, all else about equal).

Cost model (SD1.5 512² on an A10-class GPU, see shared/reference/perf.md §4-5):
  * a denoising step for a batch of b images takes `--step-base-ms` + `--step-per-image-ms` × b ×
    (pixels / 512²) ms, i.e. 95 + 34·b ms at 512² (b=1: 2.6 s per 20-step image; b=8: 0.92 s);
  * loading a checkpoint into device memory takes `--load-s` (3 s), or `--cached-load-s` (0.3 s)
    when it is among the `--host-cache` (4) checkpoints the worker keeps in host RAM (LRU); a worker
    holds one checkpoint in device memory; changing the active LoRA set takes `--lora-s` (0.5 s);
  * a job with more images than max_batch runs alone, as several pipeline calls.

The dispatcher runs whenever a worker frees up, when a job arrives while a worker is free, and
every `--tick-s` (1 s) while a worker is free and jobs wait (the policy may hold a job briefly for a
busy worker that already holds its model). Fair share sees what the Django side sees, through
`decayed_service` with the policy's half-life: finished jobs of the last 4 half-lives charged their
GPU-seconds (their share of their batch's time) at their finish, running jobs the time they have run.

Figures per policy: images/s (all images ÷ time until the last one is done), queue wait (submit →
start of its batch) p50/p95 for light and heavy users, Jain's fairness index over the users' mean
slowdowns (slowdown = (wait + service) / service per job), model loads (all / from disk), mean
images per pipeline batch and the GPU busy fraction. The last line printed is one JSON object.

`--scale` instead times the real policy: 64 workers, 1000 users in 50 tenants (30 heavy), 3000
jobs waiting at the start and ~90 images/s offered for 2 simulated minutes, so that thousands of
jobs wait at every call; it prints the time of each dispatching call (p50/p95) and of one call
with all 64 workers free.

    .venv/bin/python bench/scheduler_sim.py                 # the comparison (a few seconds)
    .venv/bin/python bench/scheduler_sim.py --seed 2 --minutes 60
    .venv/bin/python bench/scheduler_sim.py --scale         # decision time at 64 workers, 1000 users
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import statistics
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path
from typing import Protocol

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from inference.scheduler import (  # noqa: E402
    FairShareState,
    PendingJob,
    PolicyConfig,
    WorkerState,
    decayed_service,
    plan_assignments,
)
from inference.scheduler.keys import model_key, network_key  # noqa: E402 - the keys production stamps on jobs

PIXELS_512 = 512 * 512
BURST_SHAPES: tuple[tuple[int, ...], ...] = ((1,) * 50, (2,) * 25, (5,) * 10, (8,) * 6 + (2,))
POLICIES = ("fifo", "affinity", "atelier")
JSON_KEYS = ("images_per_s", "p50_wait_light_s", "p95_wait_light_s", "p95_wait_heavy_s", "jain", "model_loads", "busy")


# --- Workload --------------------------------------------------------------------------------


@dataclass
class SimJob:
    spec: PendingJob
    heavy: bool
    start: float = math.nan
    finish: float = math.nan


def _zipf_weights(count: int, exponent: float) -> list[float]:
    return [1.0 / (rank + 1) ** exponent for rank in range(count)]


def make_workload(args: argparse.Namespace, *, backlog: int = 0) -> list[SimJob]:
    """The seeded job list, sorted by submit time; job ids follow submit order."""
    rng = random.Random(args.seed)
    checkpoints = [f"ckpt-{index}" for index in range(args.checkpoints)]
    checkpoint_weights = _zipf_weights(args.checkpoints, args.zipf)
    # Each LoRA as the control plane resolves a <lora:name:0.8> tag (the name stands in for its sha256).
    loras = [network_key([{"kind": "lora", "name": f"lora-{index}", "sha256": f"lora-{index}", "te_weight": 0.8,
                           "unet_weight": 0.8}]) for index in range(8)]
    lora_weights = _zipf_weights(len(loras), args.zipf)
    horizon = args.minutes * 60.0
    step_choices = (args.steps, args.steps + 5, args.steps + 10)

    def parameters() -> tuple[str, str, int, int]:
        checkpoint = rng.choices(checkpoints, checkpoint_weights)[0]
        lora = rng.choices(loras, lora_weights)[0] if rng.random() < args.lora_fraction else ""
        steps = rng.choices(step_choices, (0.7, 0.15, 0.15))[0]
        pixels = 512 * 512 if rng.random() < 0.8 else 512 * 768
        return checkpoint, lora, steps, pixels

    drafts: list[tuple[float, int, int, tuple[str, str, int, int], bool]] = []  # at, user, images, params, heavy
    for user in range(args.users):
        heavy = user < args.heavy_users
        if heavy:
            at = rng.uniform(0.0, args.burst_interval_s)  # periodic, with ±20% jitter
            while at < horizon:
                shape = rng.choice(BURST_SHAPES)
                scale = args.burst_images / 50.0
                params = parameters()
                for images in shape:
                    drafts.append((at, user, max(1, round(images * scale)), params, True))
                at += args.burst_interval_s * rng.uniform(0.8, 1.2)
        else:
            at = rng.expovariate(1.0 / args.light_interval_s)
            while at < horizon:
                drafts.append((at, user, 1, parameters(), False))
                at += rng.expovariate(1.0 / args.light_interval_s)
    for _ in range(backlog):
        user = rng.randrange(args.heavy_users, args.users) if args.users > args.heavy_users else 0
        drafts.append((rng.uniform(-1.0, 0.0), user, 1, parameters(), False))
    drafts.sort(key=lambda draft: (draft[0], draft[1]))

    jobs: list[SimJob] = []
    for job_id, (at, user, images, (checkpoint, lora, steps, pixels), heavy) in enumerate(drafts, start=1):
        tenant = user % args.tenants
        spec = PendingJob(
            job_id=job_id,
            owner_id=user,
            tenant_id=tenant,
            submitted_at=at,
            model_key=model_key(checkpoint),  # the name stands in for its sha256
            network_key=lora,
            batch_key=f"{checkpoint}|{lora}|{steps}|{pixels}",
            images=images,
            steps=steps,
            pixels=pixels,
            tenant_weight=2.0 if tenant == args.tenants - 1 and args.tenants > 1 else 1.0,
        )
        jobs.append(SimJob(spec=spec, heavy=heavy))
    return jobs


# --- Cluster ---------------------------------------------------------------------------------


@dataclass
class SimWorker:
    worker_id: int
    max_batch: int
    resident: str | None = None  # the checkpoint in device memory
    host_cache: list[str] = field(default_factory=list)  # checkpoints in host RAM, least recently used first
    active_networks: str = ""
    busy_until: float | None = None
    busy_model: str | None = None
    released_at: float = 0.0
    busy_seconds: float = 0.0

    def state(self) -> WorkerState:
        return WorkerState(
            worker_id=self.worker_id,
            free=self.busy_until is None,
            max_batch=self.max_batch,
            resident_models=(self.resident,) if self.resident else (),
            cached_models=tuple(self.host_cache),
            active_networks=self.active_networks,
            busy_until=self.busy_until,
            busy_model=self.busy_model,
        )


@dataclass
class CostModel:
    step_base_ms: float
    step_per_image_ms: float
    load_s: float
    cached_load_s: float
    lora_s: float
    host_cache: int

    def compute_seconds(self, steps: int, pixels: int, images: int, max_batch: int) -> float:
        seconds = 0.0
        left = images
        while left > 0:
            batch = min(left, max_batch)
            seconds += steps * (self.step_base_ms + self.step_per_image_ms * batch * pixels / PIXELS_512) / 1000.0
            left -= batch
        return seconds


class Cluster:
    """Workers, the waiting jobs and the bookkeeping a dispatcher would read from the database."""

    def __init__(self, args: argparse.Namespace, cost: CostModel) -> None:
        self.cost = cost
        self.workers = [SimWorker(worker_id=index, max_batch=args.max_batch) for index in range(args.workers)]
        self.pending: dict[int, SimJob] = {}  # in submit order
        self.loads = 0
        self.disk_loads = 0
        self.batches = 0
        self.batch_images = 0
        # Fair-share inputs, as the Django side reads them: finished jobs' (owner, tenant, gpu_seconds,
        # finished_at) in finish order, and running jobs' (owner, tenant, started_at).
        self.finished_charges: list[tuple[int, int, float, float]] = []
        self.charges_start = 0
        self.running_jobs: dict[int, tuple[int, int, float]] = {}
        self.running_per_user: dict[int, int] = {}
        self.running_per_tenant: dict[int, int] = {}

    def free_workers(self) -> list[SimWorker]:
        return [worker for worker in self.workers if worker.busy_until is None]

    def start_batch(self, worker: SimWorker, jobs: list[SimJob], now: float) -> float:
        """Run `jobs` as one pipeline batch on `worker`; returns when it finishes."""
        first = jobs[0].spec
        seconds = 0.0
        if worker.resident != first.model_key:
            cached = first.model_key in worker.host_cache
            seconds += self.cost.cached_load_s if cached else self.cost.load_s
            self.loads += 1
            self.disk_loads += 0 if cached else 1
            worker.resident = first.model_key
            if cached:
                worker.host_cache.remove(first.model_key)
            worker.host_cache.append(first.model_key)
            del worker.host_cache[: max(0, len(worker.host_cache) - self.cost.host_cache)]
            worker.active_networks = ""
        if worker.active_networks != first.network_key:
            seconds += self.cost.lora_s
            worker.active_networks = first.network_key
        images = sum(job.spec.images for job in jobs)
        seconds += self.cost.compute_seconds(first.steps, first.pixels, images, worker.max_batch)
        finish = now + seconds
        worker.busy_until = finish
        worker.busy_model = first.model_key
        worker.busy_seconds += seconds
        self.batches += 1
        self.batch_images += images
        for job in jobs:
            spec = job.spec
            del self.pending[spec.job_id]
            job.start, job.finish = now, finish
            self.running_jobs[spec.job_id] = (spec.owner_id, spec.tenant_id, now)
            self.running_per_user[spec.owner_id] = self.running_per_user.get(spec.owner_id, 0) + 1
            self.running_per_tenant[spec.tenant_id] = self.running_per_tenant.get(spec.tenant_id, 0) + 1
        return finish

    def finish_batch(self, worker: SimWorker, jobs: list[SimJob], now: float) -> None:
        worker.busy_until = None
        worker.busy_model = None
        worker.released_at = now
        images = sum(job.spec.images for job in jobs)
        for job in jobs:
            spec = job.spec
            del self.running_jobs[spec.job_id]
            gpu_seconds = (job.finish - job.start) * spec.images / images  # its share of the batch
            self.finished_charges.append((spec.owner_id, spec.tenant_id, gpu_seconds, now))
            self.running_per_user[spec.owner_id] -= 1
            self.running_per_tenant[spec.tenant_id] -= 1

    def fair_share(self, now: float, half_life_s: float) -> FairShareState:
        """What `inference/dispatch.py` computes: finished jobs of the last 4 half-lives, charged at
        their finish, and running jobs charged the time they have run so far."""
        horizon = now - 4 * half_life_s
        while (
            self.charges_start < len(self.finished_charges)
            and self.finished_charges[self.charges_start][3] < horizon
        ):
            self.charges_start += 1
        running = [(owner, tenant, now - started, now) for owner, tenant, started in self.running_jobs.values()]
        user_service, tenant_service = decayed_service(
            chain(islice(self.finished_charges, self.charges_start, None), running), now=now, half_life_s=half_life_s
        )
        return FairShareState(
            user_service=user_service,
            tenant_service=tenant_service,
            running_per_user={user: count for user, count in self.running_per_user.items() if count},
            running_per_tenant={tenant: count for tenant, count in self.running_per_tenant.items() if count},
        )


# --- Policies --------------------------------------------------------------------------------


class Policy(Protocol):
    def plan(self, cluster: Cluster, now: float) -> list[tuple[SimWorker, list[SimJob]]]: ...


class FifoPolicy:
    """One global queue: the first free worker takes the oldest job, alone."""

    def plan(self, cluster: Cluster, now: float) -> list[tuple[SimWorker, list[SimJob]]]:
        free = sorted(cluster.free_workers(), key=lambda worker: (worker.released_at, worker.worker_id))
        return [(worker, [job]) for worker, job in zip(free, list(islice(cluster.pending.values(), len(free))))]


class AffinityPolicy:
    """SwarmUI's placement: warm workers first, then the highest-pressure model on the idle worker
    released longest ago once its oldest job has waited `min_age_s`. FIFO, no fairness, no batching."""

    def __init__(self, min_age_s: float = 1.5, seconds_per_request: float = 10.0) -> None:
        self.min_age_s = min_age_s
        self.seconds_per_request = seconds_per_request

    def plan(self, cluster: Cluster, now: float) -> list[tuple[SimWorker, list[SimJob]]]:
        free = sorted(cluster.free_workers(), key=lambda worker: (worker.released_at, worker.worker_id))
        by_model: dict[str, deque[SimJob]] = {}
        for job in cluster.pending.values():
            by_model.setdefault(job.spec.model_key, deque()).append(job)
        plan: list[tuple[SimWorker, list[SimJob]]] = []
        while free:  # warm placements, oldest job first
            heads = [(by_model[w.resident][0].spec.job_id, w.resident) for w in free if w.resident in by_model]
            if not heads:
                break
            _, model = min(heads)
            job = by_model[model].popleft()
            if not by_model[model]:
                del by_model[model]
            warm = [worker for worker in free if worker.resident == model]
            worker = next((w for w in warm if w.active_networks == job.spec.network_key), warm[0])
            free.remove(worker)
            plan.append((worker, [job]))
        while free and by_model:  # loads, by pressure
            pressures = []
            for model, jobs in by_model.items():
                age = now - jobs[0].spec.submitted_at
                if age >= self.min_age_s:
                    pressures.append((len(jobs) * self.seconds_per_request + age, -jobs[0].spec.job_id, model))
            if not pressures:
                break
            _, _, model = max(pressures)
            worker = free.pop(0)
            plan.append((worker, [by_model[model].popleft()]))
            if not by_model[model]:
                del by_model[model]
        return plan


class AtelierPolicy:
    """The real policy, fed as `inference/dispatch.py` feeds it."""

    def __init__(self, config: PolicyConfig, *, record_timings: bool = False) -> None:
        self.config = config
        self.record_timings = record_timings
        self.timings: list[tuple[float, int, int]] = []  # (seconds, assignments, pending)

    def plan(self, cluster: Cluster, now: float) -> list[tuple[SimWorker, list[SimJob]]]:
        pending = [job.spec for job in cluster.pending.values()]
        workers = [worker.state() for worker in cluster.workers]
        fair = cluster.fair_share(now, self.config.service_half_life_s)
        started = time.perf_counter()
        assignments = plan_assignments(pending, workers, fair, now=now, config=self.config)
        elapsed = time.perf_counter() - started
        if self.record_timings:
            self.timings.append((elapsed, len(assignments), len(pending)))
        by_id = cluster.pending
        return [
            (cluster.workers[assignment.worker_id], [by_id[job_id] for job_id in assignment.job_ids])
            for assignment in assignments
        ]


# --- Engine ----------------------------------------------------------------------------------

ARRIVE, DONE, TICK = 0, 1, 2


def simulate(jobs: Sequence[SimJob], policy: Policy, args: argparse.Namespace, cost: CostModel) -> Cluster:
    """Run the workload to completion under `policy`; the jobs get their start and finish times."""
    cluster = Cluster(args, cost)
    events: list[tuple[float, int, int, int]] = [
        (job.spec.submitted_at, ARRIVE, index, 0) for index, job in enumerate(jobs)
    ]
    heapq.heapify(events)
    running: dict[int, list[SimJob]] = {}
    tick_at = math.inf
    stop_at = args.stop_after_s if args.stop_after_s else math.inf
    while events:
        now = events[0][0]
        if now > stop_at:
            break
        while events and events[0][0] == now:
            _, kind, index, _ = heapq.heappop(events)
            if kind == ARRIVE:
                job = jobs[index]
                cluster.pending[job.spec.job_id] = job
            elif kind == DONE:
                cluster.finish_batch(cluster.workers[index], running.pop(index), now)
            elif kind == TICK and now >= tick_at:
                tick_at = math.inf
        if not cluster.pending or all(worker.busy_until is not None for worker in cluster.workers):
            continue
        for worker, batch in policy.plan(cluster, now):
            finish = cluster.start_batch(worker, batch, now)
            running[worker.worker_id] = batch
            heapq.heappush(events, (finish, DONE, worker.worker_id, 0))
        if cluster.pending and cluster.free_workers() and tick_at == math.inf:
            tick_at = now + args.tick_s
            heapq.heappush(events, (tick_at, TICK, 0, 0))
    return cluster


# --- Figures ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Linear interpolation between closest ranks; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def jain_index(values: Sequence[float]) -> float:
    if not values:
        return math.nan
    return sum(values) ** 2 / (len(values) * sum(value * value for value in values))


def figures(jobs: Sequence[SimJob], cluster: Cluster) -> dict[str, float]:
    done = [job for job in jobs if not math.isnan(job.finish)]
    makespan = max(job.finish for job in done) - min(job.spec.submitted_at for job in jobs)
    light_waits = [job.start - job.spec.submitted_at for job in done if not job.heavy]
    heavy_waits = [job.start - job.spec.submitted_at for job in done if job.heavy]
    slowdowns: dict[int, list[float]] = {}
    for job in done:
        service = job.finish - job.start
        slowdowns.setdefault(job.spec.owner_id, []).append((job.start - job.spec.submitted_at + service) / service)
    busy = sum(worker.busy_seconds for worker in cluster.workers)
    return {
        "images_per_s": sum(job.spec.images for job in done) / makespan,
        "p50_wait_light_s": percentile(light_waits, 0.50),
        "p95_wait_light_s": percentile(light_waits, 0.95),
        "p50_wait_heavy_s": percentile(heavy_waits, 0.50),
        "p95_wait_heavy_s": percentile(heavy_waits, 0.95),
        "jain": jain_index([statistics.fmean(values) for values in slowdowns.values()]),
        "model_loads": float(cluster.loads),
        "disk_loads": float(cluster.disk_loads),
        "images_per_batch": cluster.batch_images / max(cluster.batches, 1),
        "busy": min(1.0, busy / (len(cluster.workers) * makespan)),
        "unfinished_jobs": float(len(jobs) - len(done)),
    }


def policy_config(args: argparse.Namespace) -> PolicyConfig:
    return PolicyConfig(
        max_running_per_user=args.max_running_per_user or args.max_batch,
        max_running_per_tenant=args.max_running_per_tenant,
        affinity_grace_s=args.affinity_grace_s,
        max_reorder_wait_s=args.max_reorder_wait_s,
        service_half_life_s=args.half_life_s,
    )


def make_policy(name: str, args: argparse.Namespace, *, record_timings: bool = False) -> Policy:
    if name == "fifo":
        return FifoPolicy()
    if name == "affinity":
        return AffinityPolicy()
    if name == "atelier":
        return AtelierPolicy(policy_config(args), record_timings=record_timings)
    raise ValueError(f"unknown policy {name!r}; use one of {', '.join(POLICIES)}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    add = parser.add_argument
    add("--policies", default=",".join(POLICIES), help="comma-separated: fifo, affinity, atelier")
    add("--seed", type=int, default=1)
    add("--workers", type=int, default=8)
    add("--max-batch", type=int, default=8)
    add("--users", type=int, default=60)
    add("--tenants", type=int, default=6)
    add("--heavy-users", type=int, default=3)
    add("--minutes", type=float, default=30.0, help="simulated minutes of arrivals (the queue then drains)")
    add("--light-interval-s", type=float, default=24.0, help="mean seconds between one light user's images")
    add("--burst-interval-s", type=float, default=300.0, help="seconds between one heavy user's bursts (±20%%)")
    add("--burst-images", type=int, default=50)
    add("--checkpoints", type=int, default=10)
    add("--zipf", type=float, default=1.1, help="popularity exponent of checkpoints and LoRAs")
    add("--lora-fraction", type=float, default=1 / 3)
    add("--steps", type=int, default=20)
    add("--step-base-ms", type=float, default=95.0)
    add("--step-per-image-ms", type=float, default=34.0)
    add("--load-s", type=float, default=3.0)
    add("--cached-load-s", type=float, default=0.3)
    add("--lora-s", type=float, default=0.5)
    add("--host-cache", type=int, default=4, help="checkpoints a worker keeps in host RAM")
    add("--tick-s", type=float, default=1.0, help="dispatcher sweep period while a worker is free and jobs wait")
    add("--max-running-per-user", type=int, default=0, help="0: the worker max batch (one user can fill a batch)")
    add("--max-running-per-tenant", type=int, default=PolicyConfig.max_running_per_tenant)
    add("--affinity-grace-s", type=float, default=PolicyConfig.affinity_grace_s)
    add("--max-reorder-wait-s", type=float, default=PolicyConfig.max_reorder_wait_s)
    add("--half-life-s", type=float, default=PolicyConfig.service_half_life_s)
    add("--scale", action="store_true", help="time the real policy at 64 workers, 1000 users, thousands pending")
    add("--backlog", type=int, default=3000, help="--scale: jobs already waiting at the start")
    add("--scale-seconds", type=float, default=120.0, help="--scale: simulated seconds")
    add("--stop-after-s", type=float, default=0.0, help="stop at this simulated time (0: when all jobs are done)")
    return parser.parse_args(argv)


def cost_model(args: argparse.Namespace) -> CostModel:
    return CostModel(
        step_base_ms=args.step_base_ms,
        step_per_image_ms=args.step_per_image_ms,
        load_s=args.load_s,
        cached_load_s=args.cached_load_s,
        lora_s=args.lora_s,
        host_cache=args.host_cache,
    )


def run_comparison(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    jobs_template = make_workload(args)
    images = sum(job.spec.images for job in jobs_template)
    heavy_images = sum(job.spec.images for job in jobs_template if job.heavy)
    print(
        f"workload: {len(jobs_template)} jobs, {images} images ({heavy_images} from {args.heavy_users} heavy users) "
        f"over {args.minutes:g} min = {images / (args.minutes * 60):.2f} images/s offered; "
        f"{args.workers} workers, max batch {args.max_batch}, seed {args.seed}"
    )
    results: dict[str, dict[str, float]] = {}
    header = (
        f"{'policy':<9} {'img/s':>6} {'p50 light':>9} {'p95 light':>9} {'p50 heavy':>9} {'p95 heavy':>9} "
        f"{'jain':>5} {'loads':>6} {'(disk)':>6} {'img/batch':>9} {'busy':>5} {'wall':>5}"
    )
    print(header)
    for name in args.policies.split(","):
        jobs = [SimJob(spec=job.spec, heavy=job.heavy) for job in jobs_template]
        started = time.perf_counter()
        cluster = simulate(jobs, make_policy(name, args), args, cost_model(args))
        wall = time.perf_counter() - started
        result = figures(jobs, cluster)
        results[name] = result
        print(
            f"{name:<9} {result['images_per_s']:6.2f} "
            f"{result['p50_wait_light_s']:8.1f}s {result['p95_wait_light_s']:8.1f}s "
            f"{result['p50_wait_heavy_s']:8.1f}s {result['p95_wait_heavy_s']:8.1f}s {result['jain']:5.2f} "
            f"{result['model_loads']:6.0f} {result['disk_loads']:6.0f} {result['images_per_batch']:9.2f} "
            f"{result['busy']:5.2f} {wall:4.1f}s"
        )
    if "fifo" in results and "atelier" in results:
        ours, fifo = results["atelier"], results["fifo"]
        print(
            "atelier vs fifo: "
            f"images/s {ours['images_per_s'] / fifo['images_per_s']:.2f}x (target >= 1.3), "
            f"p95 light wait {ours['p95_wait_light_s'] / fifo['p95_wait_light_s']:.3f}x (<= 0.2), "
            f"jain {ours['jain']:.3f} (>= 0.9), "
            f"model loads {ours['model_loads'] / max(fifo['model_loads'], 1):.2f}x (<= 0.5)"
        )
    return results


def run_scale(args: argparse.Namespace) -> dict[str, float]:
    """The real policy's decision time with 64 workers, 1000 users and thousands of jobs waiting."""
    args.workers, args.users, args.tenants, args.heavy_users = 64, 1000, 50, 30
    args.max_running_per_tenant = max(args.max_running_per_tenant, 64)
    args.light_interval_s = 1000 / 90.0  # about 90 images/s offered, more than 64 workers serve: thousands wait
    args.burst_interval_s = 600.0
    args.minutes = args.scale_seconds / 60.0
    args.stop_after_s = args.scale_seconds
    jobs = make_workload(args, backlog=args.backlog)
    policy = AtelierPolicy(policy_config(args), record_timings=True)
    started = time.perf_counter()
    simulate(jobs, policy, args, cost_model(args))
    wall = time.perf_counter() - started
    calls = policy.timings
    per_call_ms = [seconds * 1000 for seconds, _, _ in calls]
    per_assignment_ms = [seconds * 1000 / count for seconds, count, _ in calls if count]
    waiting = [pending for _, _, pending in calls]
    result = {
        "calls": float(len(calls)),
        "pending_median": float(statistics.median(waiting)),
        "pending_max": float(max(waiting)),
        "call_ms_p50": percentile(per_call_ms, 0.5),
        "call_ms_p95": percentile(per_call_ms, 0.95),
        "dispatch_ms_p50": percentile(per_assignment_ms, 0.5),
        "dispatch_ms_p95": percentile(per_assignment_ms, 0.95),
    }
    print(
        f"scale: 64 workers, 1000 users in 50 tenants, {len(calls)} calls over "
        f"{args.stop_after_s:g} simulated s ({wall:.1f} s wall); pending per call: median "
        f"{result['pending_median']:.0f}, max {result['pending_max']:.0f}"
    )
    print(
        f"plan_assignments per call: p50 {result['call_ms_p50']:.2f} ms, p95 {result['call_ms_p95']:.2f} ms; "
        f"per dispatch (a call that assigned ÷ its batches): p50 {result['dispatch_ms_p50']:.2f} ms, "
        f"p95 {result['dispatch_ms_p95']:.2f} ms (target < 5 ms)"
    )
    result.update(time_one_call_with_every_worker_free(jobs, args))
    print(
        f"one call with all 64 workers free and {result['cold_start_pending']:.0f} jobs waiting: "
        f"{result['cold_start_call_ms']:.2f} ms for {result['cold_start_assignments']:.0f} batches"
    )
    print(json.dumps({"scale": {key: round(value, 3) for key, value in result.items()}}))
    return result


def time_one_call_with_every_worker_free(jobs: Sequence[SimJob], args: argparse.Namespace) -> dict[str, float]:
    """The heaviest single call: every worker free (a cold start) and the first 5000 jobs waiting."""
    rng = random.Random(args.seed)
    pending = [job.spec for job in jobs[:5000]]
    checkpoints = sorted({job.model_key for job in pending})
    workers = [
        WorkerState(
            worker_id=index,
            free=True,
            max_batch=args.max_batch,
            resident_models=(rng.choice(checkpoints),),
            cached_models=tuple(rng.sample(checkpoints, min(4, len(checkpoints)))),
        )
        for index in range(args.workers)
    ]
    now = max(job.submitted_at for job in pending)
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        assignments = plan_assignments(pending, workers, FairShareState(), now=now, config=policy_config(args))
        timings.append(time.perf_counter() - started)
    return {
        "cold_start_pending": float(len(pending)),
        "cold_start_assignments": float(len(assignments)),
        "cold_start_call_ms": statistics.median(timings) * 1000,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    args = parse_args(argv)
    if args.scale:
        return {"scale": run_scale(args)}
    results = run_comparison(args)
    summary = {name: {key: round(result[key], 3) for key in JSON_KEYS} for name, result in results.items()}
    print(json.dumps(summary))
    return results


if __name__ == "__main__":
    main()
