"""A frozen copy of `inference/scheduler/policy.py` as it was before its index was kept between
calls (`inference/scheduler/book.py`): the oracle `test_book.py` compares the policy with. Do not
edit it to follow the policy: a difference it shows is a change of the decisions.

The original docstring follows.

Where pending jobs run next: fair share, model-affine placement and cross-user batching (pure).

`plan_assignments` takes plain data (pending jobs, worker states, recent service per user and
tenant) and returns at most one `Assignment` (one pipeline batch) per free worker. It imports
neither Django nor torch, keeps no state between calls, and breaks every tie by ids, so the same
input always gives the same plan. The Django side (`inference/dispatch.py`) and the simulator
(`bench/scheduler_sim.py`) call it the same way.

One call runs in three phases.

1. **Index** (`_Book`): one pass groups the pending jobs by owner (an owner's jobs are ordered by
   its own priority, then FIFO, when first needed) and by batch key, and counts the jobs that want
   each model (its demand). Every tenant gets a "virtual time"
   (its decayed service ÷ its weight) and every user one (its decayed service). Whatever this call
   hands out is added to them at once (`estimated_gpu_seconds`), so one call spreads free workers
   over users instead of giving all of them to whoever was first.

2. **Choose** (`_choose`), once per free worker: walk the open jobs in fair-share order (the
   tenant with least weighted service, in it the user with least service, that user's next job;
   users and tenants at their running limit are skipped), looking at most `LOOKAHEAD_JOBS` ahead:
   - the first job whose model is already in a free worker's device memory ("warm") is placed
     there, if no job before it needs a model load; a job that needs no model (`model_key` "",
     e.g. extras) is warm on every free worker and takes the one whose models are least wanted;
   - a job whose model is warm on a *busy* worker that finishes within `affinity_grace_s` is held
     for that worker (up to what that worker can take in one batch) instead of loading its model
     on another worker;
   - a job that needs a model load gives way to later warm work (loads cost seconds; warm work
     keeps the GPU computing) until it has waited `max_reorder_wait_s`;
   - when no job in the window is warm, or one that needs a load has waited `max_reorder_wait_s`,
     a model is loaded: among the cold models in the window, the one with the highest *pressure*
     (how long its first job has waited + `DEMAND_WEIGHT_S` for each other pending job that wants
     it, as in SwarmUI), on the free worker whose device models are least wanted, preferring one
     that has it in host RAM (a cheap load);
   - the walk never goes past a job that has waited `max_reorder_wait_s`: such a job is neither
     held nor passed over, so it is placed in fair-share order on any free worker (no starvation).

3. **Batch** (`_fill_batch`): the chosen job leads a batch on its worker; other open jobs with the
   same batch key, from any user, join in fair-share order while the batch has room (total images
   ≤ the worker's `max_batch`) and their users and tenants stay under their limits. A job with more
   images than `max_batch` runs alone.

Cost: one pass over the pending jobs plus, per free worker, a walk of at most `LOOKAHEAD_JOBS`
jobs and one scan of the chosen batch key's jobs.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from inference.scheduler.fairshare import estimated_gpu_seconds
from inference.scheduler.types import Assignment, FairShareState, PendingJob, PolicyConfig, WorkerState

# How many candidate jobs (open, not held for a busy worker) one decision looks at, from the
# fair-share head on: how far affinity may reorder the queue.
LOOKAHEAD_JOBS = 48
# A cold model's load pressure grows by this many seconds for each other pending job that wants it.
DEMAND_WEIGHT_S = 10.0

_MIN_WEIGHT = 1e-6


def plan_assignments(
    pending: Sequence[PendingJob],
    workers: Sequence[WorkerState],
    fair: FairShareState,
    *,
    now: float,
    config: PolicyConfig = PolicyConfig(),
) -> list[Assignment]:
    """Plan at most one batch for each free worker. See the module docstring for the rules."""
    free = [worker for worker in sorted(workers, key=lambda w: w.worker_id) if worker.free]
    if not free or not pending:
        return []
    book = _Book(pending, fair, config)
    pool = _WorkerPool(free, workers, now=now, grace_s=config.affinity_grace_s)
    plan: list[Assignment] = []
    while pool.free:
        choice = _choose(book, pool, now=now, config=config)
        if choice is None:
            break
        batch = _fill_batch(book, choice.job, choice.worker)
        for job in batch:
            book.take(job)
        pool.use(choice.worker)
        plan.append(
            Assignment(
                worker_id=choice.worker.worker_id,
                job_ids=tuple(job.job_id for job in batch),
                load_model=bool(choice.job.model_key) and choice.job.model_key not in choice.worker.resident_models,
            )
        )
    return plan


def queue_order(pending: Sequence[PendingJob], fair: FairShareState, *, config: PolicyConfig = PolicyConfig()) -> list[PendingJob]:
    """The pending jobs in the order fair share would serve them, for telling a member their place
    in line. Jobs of users or tenants at their running limit are left out (they wait for that, not
    for their turn); placement (affinity, batching) can still start a job a little out of turn."""
    return list(_Book(pending, fair, config).fair_order())


# --- Phase 1: index --------------------------------------------------------------------------


def _job_cost(job: PendingJob) -> float:
    return estimated_gpu_seconds(steps=job.steps, pixels=job.pixels, images=job.images)


class _Book:
    """The pending jobs of one call, indexed, plus what this call has handed out so far."""

    def __init__(self, pending: Sequence[PendingJob], fair: FairShareState, config: PolicyConfig) -> None:
        self.config = config
        # One pass over the pending jobs (the only per-job work of a call); a job listed twice counts once.
        jobs_by_user: defaultdict[int, list[PendingJob]] = defaultdict(list)
        jobs_by_batch_key: defaultdict[str, list[PendingJob]] = defaultdict(list)
        seen: set[int] = set()
        for job in pending:
            if job.job_id in seen:
                continue
            seen.add(job.job_id)
            jobs_by_user[job.owner_id].append(job)
            jobs_by_batch_key[job.batch_key].append(job)
        self.jobs_by_user: dict[int, list[PendingJob]] = jobs_by_user
        self.jobs_by_batch_key: dict[str, list[PendingJob]] = jobs_by_batch_key
        self.sorted_users: set[int] = set()  # users whose jobs are in their own order (sorted when first read)

        # How many pending jobs want each model: what a load serves, and what an eviction costs.
        self.model_demand: dict[str, int] = {}
        for key_jobs in jobs_by_batch_key.values():
            model = key_jobs[0].model_key
            self.model_demand[model] = self.model_demand.get(model, 0) + len(key_jobs)

        self.taken: set[int] = set()
        self.running_per_user: dict[int, int] = dict(fair.running_per_user)
        self.running_per_tenant: dict[int, int] = dict(fair.running_per_tenant)
        # Virtual times: recent service (a tenant's divided by its weight) plus this call's charges.
        self.user_vtime: dict[int, float] = {}
        self.tenant_vtime: dict[int, float] = {}
        self.tenant_weight: dict[int, float] = {}
        self.tenant_of_user: dict[int, int] = {}  # a user's jobs all carry its one tenant
        # Per tenant, a heap of (user virtual time, user id); stale entries are skipped lazily.
        self.user_heaps: dict[int, list[tuple[float, int]]] = {}
        user_service = fair.user_service
        # Caps on jobs at once: the config's, within each owner's and tenant's own (their limits).
        self.user_cap: dict[int, int] = {}
        self.tenant_cap: dict[int, int] = {}
        for user_id, jobs in jobs_by_user.items():
            tenant_id = jobs[0].tenant_id
            self.tenant_of_user[user_id] = tenant_id
            own = [job.user_running_cap for job in jobs if job.user_running_cap is not None]
            self.user_cap[user_id] = min([config.max_running_per_user, *own])
            team = [job.tenant_running_cap for job in jobs if job.tenant_running_cap is not None]
            self.tenant_cap[tenant_id] = min([self.tenant_cap.get(tenant_id, config.max_running_per_tenant), *team])
            vtime = float(user_service.get(user_id, 0.0))
            self.user_vtime[user_id] = vtime
            heap = self.user_heaps.get(tenant_id)
            if heap is None:
                self.user_heaps[tenant_id] = [(vtime, user_id)]
                weight = max(jobs[0].tenant_weight, _MIN_WEIGHT)
                self.tenant_weight[tenant_id] = weight
                self.tenant_vtime[tenant_id] = float(fair.tenant_service.get(tenant_id, 0.0)) / weight
            else:
                heap.append((vtime, user_id))
        for heap in self.user_heaps.values():
            heapq.heapify(heap)

    def user_jobs(self, user_id: int) -> list[PendingJob]:
        """A user's pending jobs in its own order: higher priority first, then first come, first served."""
        jobs = self.jobs_by_user[user_id]
        if user_id not in self.sorted_users:
            jobs.sort(key=_own_order)
            self.sorted_users.add(user_id)
        return jobs

    # Limits ------------------------------------------------------------------------------

    def user_open(self, user_id: int) -> bool:
        """Whether the user (and its tenant) may get one more job running."""
        if self.running_per_user.get(user_id, 0) >= self.user_cap[user_id]:
            return False
        return self.tenant_open(self.tenant_of_user[user_id])

    def tenant_open(self, tenant_id: int) -> bool:
        return self.running_per_tenant.get(tenant_id, 0) < self.tenant_cap[tenant_id]

    # Fair-share order -------------------------------------------------------------------

    def fair_order(self) -> Iterator[PendingJob]:
        """The open jobs in fair-share order, as if each were served in turn. Changes nothing.

        Repeatedly: the tenant with the least virtual time, in it the user with the least, that
        user's next job; then both virtual times grow by the job's estimated cost.
        """
        tenants = [
            (vtime, tenant_id) for tenant_id, vtime in self.tenant_vtime.items() if self.tenant_open(tenant_id)
        ]
        heapq.heapify(tenants)
        user_heaps: dict[int, list[tuple[float, int]]] = {}  # copies, made when first needed
        user_vtime: dict[int, float] = {}  # this walk's own charges
        next_index: dict[int, int] = {}
        while tenants:
            tenant_vtime, tenant_id = tenants[0]
            heap = user_heaps.get(tenant_id)
            if heap is None:
                heap = user_heaps[tenant_id] = list(self.user_heaps[tenant_id])
            found: PendingJob | None = None
            while heap:
                vtime, user_id = heap[0]
                if vtime != user_vtime.get(user_id, self.user_vtime[user_id]) or not self.user_open(user_id):
                    heapq.heappop(heap)  # stale entry, or the user is at its limit
                    continue
                jobs = self.user_jobs(user_id)
                index = next_index.get(user_id, 0)
                while index < len(jobs) and jobs[index].job_id in self.taken:
                    index += 1
                if index == len(jobs):
                    heapq.heappop(heap)
                    continue
                found = jobs[index]
                break
            if found is None:
                heapq.heappop(tenants)
                continue
            yield found
            cost = _job_cost(found)
            next_index[user_id] = index + 1
            user_vtime[user_id] = vtime + cost
            heapq.heapreplace(heap, (vtime + cost, user_id))
            heapq.heapreplace(tenants, (tenant_vtime + cost / self.tenant_weight[tenant_id], tenant_id))

    # Handing out ------------------------------------------------------------------------

    def take(self, job: PendingJob) -> None:
        """Record that `job` is handed out in this call: limits, service and demand move."""
        self.taken.add(job.job_id)
        user_id = job.owner_id
        tenant_id = self.tenant_of_user[user_id]
        self.running_per_user[user_id] = self.running_per_user.get(user_id, 0) + 1
        self.running_per_tenant[tenant_id] = self.running_per_tenant.get(tenant_id, 0) + 1
        cost = _job_cost(job)
        self.user_vtime[user_id] += cost
        heapq.heappush(self.user_heaps[tenant_id], (self.user_vtime[user_id], user_id))
        self.tenant_vtime[tenant_id] += cost / self.tenant_weight[tenant_id]
        self.model_demand[job.model_key] -= 1


def _own_order(job: PendingJob) -> tuple[int, float, int]:
    """A user's own jobs: higher priority first, then first come, first served."""
    return (-job.priority, job.submitted_at, job.job_id)


class _WorkerPool:
    """The free workers of one call, indexed by the models in their device memory, and the busy
    workers that hold a model and will be free within the grace period."""

    def __init__(self, free: list[WorkerState], workers: Sequence[WorkerState], *, now: float, grace_s: float) -> None:
        self.free: list[WorkerState] = list(free)  # by worker id
        self.warm: dict[str, list[WorkerState]] = {}
        for worker in self.free:
            for model in worker.resident_models:
                self.warm.setdefault(model, []).append(worker)
        # Images that busy warm workers will take soon, per model: jobs held for them.
        self.grace_capacity: dict[str, int] = {}
        for worker in workers:
            if worker.free or worker.busy_until is None or worker.busy_until - now > grace_s:
                continue
            model = worker.busy_model or (worker.resident_models[-1] if worker.resident_models else None)
            if model is not None:
                self.grace_capacity[model] = self.grace_capacity.get(model, 0) + worker.max_batch

    def warm_worker(self, job: PendingJob) -> WorkerState | None:
        """A free worker holding the job's model, one still holding its network set (LoRAs…) first."""
        candidates = self.warm.get(job.model_key)
        if not candidates:
            return None
        for worker in candidates:
            if worker.active_networks == job.network_key:
                return worker
        return candidates[0]

    def load_worker(self, job: PendingJob, model_demand: dict[str, int]) -> WorkerState:
        """Where to load the job's model: the free worker whose device models are least wanted,
        then one holding the model in host RAM (a cheap load), then one holding the job's networks."""

        def cost(worker: WorkerState) -> tuple[bool, bool, int, bool, int]:
            evicted_demand = sum(model_demand.get(model, 0) for model in worker.resident_models)
            return (
                evicted_demand > 0,
                job.model_key not in worker.cached_models,
                evicted_demand,
                worker.active_networks != job.network_key,
                worker.worker_id,
            )

        return min(self.free, key=cost)

    def use(self, worker: WorkerState) -> None:
        self.free.remove(worker)
        for model in worker.resident_models:
            self.warm[model].remove(worker)


# --- Phase 2: choose -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Choice:
    job: PendingJob  # leads the batch
    worker: WorkerState


@dataclass
class _ColdModel:
    lead: PendingJob  # the fair-first job in the window that wants the model
    rank: int  # its place among the window's candidates
    must_place: bool  # it has waited max_reorder_wait_s


def _choose(book: _Book, pool: _WorkerPool, *, now: float, config: PolicyConfig) -> _Choice | None:
    """The next (job, free worker) pair, or None when every open job is held or none is left."""
    grace_left = dict(pool.grace_capacity)
    first_warm: _Choice | None = None
    cold: dict[str, _ColdModel] = {}
    rank = 0  # candidates seen; jobs held for a busy worker do not count
    for job in book.fair_order():
        if rank == LOOKAHEAD_JOBS:
            break
        must_place = now - job.submitted_at >= config.max_reorder_wait_s
        # A job that needs no model (extras) is warm on every free worker: it goes where the
        # device models are least wanted, so warm workers stay free for their own work.
        worker = pool.warm_worker(job) if job.model_key else pool.load_worker(job, book.model_demand)
        if worker is not None:
            if not cold:
                return _Choice(job, worker)  # the fair-share head (past held jobs) is warm
            if first_warm is None:
                first_warm = _Choice(job, worker)
        elif not must_place and grace_left.get(job.model_key, 0) >= job.images:
            grace_left[job.model_key] -= job.images  # held for a busy worker that holds the model
            continue
        elif must_place or job.model_key not in cold:
            cold[job.model_key] = _ColdModel(lead=job, rank=rank, must_place=must_place)
        if must_place:
            break  # nothing behind a job that has waited too long may pass it
        rank += 1

    if not cold:
        return first_warm

    def pressure(entry: _ColdModel) -> tuple[float, int]:
        if entry.must_place:
            return (float("inf"), -entry.rank)
        waited = now - entry.lead.submitted_at
        others = book.model_demand.get(entry.lead.model_key, 1) - 1
        return (waited + DEMAND_WEIGHT_S * others, -entry.rank)

    hottest = max(cold.values(), key=pressure)
    if first_warm is not None and not hottest.must_place:
        return first_warm  # warm work goes first; the cold jobs wait, at most max_reorder_wait_s
    return _Choice(hottest.lead, pool.load_worker(hottest.lead, book.model_demand))


# --- Phase 3: batch --------------------------------------------------------------------------


def _fill_batch(book: _Book, lead: PendingJob, worker: WorkerState) -> list[PendingJob]:
    """The lead job plus open jobs with its batch key, in fair-share order, up to max_batch images."""
    room = worker.max_batch - lead.images
    if room <= 0:
        return [lead]  # full already, or a lone job larger than a batch
    by_user: dict[int, list[PendingJob]] = {}
    for job in book.jobs_by_batch_key[lead.batch_key]:
        if job.job_id != lead.job_id and job.job_id not in book.taken and job.images <= room:
            by_user.setdefault(job.owner_id, []).append(job)
    batch = [lead]
    if not by_user:
        return batch
    # Charges made while filling, so that users take turns; the lead's is counted first.
    user_extra: dict[int, float] = {lead.owner_id: _job_cost(lead)}
    tenant_extra: dict[int, float] = {
        book.tenant_of_user[lead.owner_id]: _job_cost(lead) / book.tenant_weight[book.tenant_of_user[lead.owner_id]]
    }
    running_user: dict[int, int] = {lead.owner_id: 1}
    running_tenant: dict[int, int] = {book.tenant_of_user[lead.owner_id]: 1}

    def key(user_id: int) -> tuple[float, int, float, int]:
        tenant_id = book.tenant_of_user[user_id]
        return (
            book.tenant_vtime[tenant_id] + tenant_extra.get(tenant_id, 0.0),
            tenant_id,
            book.user_vtime[user_id] + user_extra.get(user_id, 0.0),
            user_id,
        )

    heap: list[tuple[tuple[float, int, float, int], int]] = []
    for user_id, jobs in by_user.items():
        jobs.sort(key=_own_order)
        jobs.reverse()  # pop() gives the user's next job
        heap.append((key(user_id), user_id))
    heapq.heapify(heap)
    while heap and room > 0:
        entry_key, user_id = heapq.heappop(heap)
        current = key(user_id)
        if entry_key != current:
            heapq.heappush(heap, (current, user_id))  # its tenant was charged since it was pushed
            continue
        tenant_id = book.tenant_of_user[user_id]
        if (
            book.running_per_user.get(user_id, 0) + running_user.get(user_id, 0) >= book.user_cap[user_id]
            or book.running_per_tenant.get(tenant_id, 0) + running_tenant.get(tenant_id, 0)
            >= book.tenant_cap[tenant_id]
        ):
            continue  # at a limit: none of this user's jobs join
        jobs = by_user[user_id]
        while jobs and jobs[-1].images > room:
            jobs.pop()
        if not jobs:
            continue
        job = jobs.pop()
        batch.append(job)
        room -= job.images
        cost = _job_cost(job)
        user_extra[user_id] = user_extra.get(user_id, 0.0) + cost
        tenant_extra[tenant_id] = tenant_extra.get(tenant_id, 0.0) + cost / book.tenant_weight[tenant_id]
        running_user[user_id] = running_user.get(user_id, 0) + 1
        running_tenant[tenant_id] = running_tenant.get(tenant_id, 0) + 1
        if jobs:
            heapq.heappush(heap, (key(user_id), user_id))
    return batch
