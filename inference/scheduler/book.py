"""The policy's index of the pending jobs (`QueueIndex`), kept between calls, and one call's view of it (`Book`).

`plan_assignments` (`policy.py`) needs the pending jobs grouped by owner (in the owner's own order:
priority, then first come), by batch key, and counted per model, plus each owner's and tenant's
caps. Built from 5000 jobs that is most of a call; but a queued job's scheduling data never
changes while it waits, so the dispatcher keeps a `QueueIndex` in its memory of the queue
(`inference/dispatch_memory.py`) and updates it as jobs arrive and leave (`add`, `remove`: each
touches only its owner's few jobs). A call given a plain sequence builds one from scratch: both
paths give the same plans (`tests/scheduler/test_book.py` compares them, and with the policy as
it was before the index was kept, on random queues).

`Book` is one call's view: what the call hands out (taken jobs, limits, virtual times, demand)
is kept in the view, never in the index, so the index stays as the queue is. Per call it costs
one entry per tenant; a user's virtual time and a tenant's heap of users are made when first read.

The index assumes what the dispatcher's data always holds: a user's jobs all carry one tenant,
a tenant's jobs one weight, and a batch key one model.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from inference.scheduler.fairshare import estimated_gpu_seconds
from inference.scheduler.types import FairShareState, PendingJob, PolicyConfig

_MIN_WEIGHT = 1e-6

K = TypeVar("K")
V = TypeVar("V")


def job_cost(job: PendingJob) -> float:
    return estimated_gpu_seconds(steps=job.steps, pixels=job.pixels, images=job.images)


def own_order(job: PendingJob) -> tuple[int, float, int]:
    """A user's own jobs: higher priority first, then first come, first served."""
    return (-job.priority, job.submitted_at, job.job_id)


class QueueIndex:
    """The pending jobs, indexed as the policy reads them; updated one job at a time. `jobs_by_user`'s
    lists are read through `user_jobs` (a list built in bulk is sorted when first read)."""

    def __init__(self, jobs: Iterable[PendingJob] = ()) -> None:
        self.jobs: dict[int, PendingJob] = {}
        self.jobs_by_user: dict[int, list[PendingJob]] = {}  # each in `own_order`
        self.jobs_by_batch_key: dict[str, dict[int, PendingJob]] = {}
        self.model_demand: dict[str, int] = {}  # pending jobs per model
        self.tenant_of_user: dict[int, int] = {}
        self.users_of_tenant: dict[int, set[int]] = {}
        self.tenant_weight: dict[int, float] = {}
        # The lowest of a user's jobs' own caps (None: none has one), and of the team caps they carry.
        self.user_own_cap: dict[int, int | None] = {}
        self.user_team_cap: dict[int, int | None] = {}
        self._tenant_team_cap: dict[int, int | None] = {}  # made from its users' when first read after a change
        self._unsorted: set[int] = set()  # users whose jobs `_build` left in arrival order (sorted when first read)
        self._build(jobs)

    def _build(self, jobs: Iterable[PendingJob]) -> None:
        """The index of `jobs` at once (as `add` of each would make it, in one pass and a sort per user)."""
        for job in jobs:
            if job.job_id in self.jobs:  # a job listed twice counts once
                continue
            self.jobs[job.job_id] = job
            user_jobs = self.jobs_by_user.get(job.owner_id)
            if user_jobs is None:
                self.jobs_by_user[job.owner_id] = [job]
            else:
                user_jobs.append(job)
            key_jobs = self.jobs_by_batch_key.get(job.batch_key)
            if key_jobs is None:
                self.jobs_by_batch_key[job.batch_key] = {job.job_id: job}
            else:
                key_jobs[job.job_id] = job
            self.model_demand[job.model_key] = self.model_demand.get(job.model_key, 0) + 1
        for user_id, user_jobs in self.jobs_by_user.items():
            first = user_jobs[0]
            self.tenant_of_user[user_id] = first.tenant_id
            self.users_of_tenant.setdefault(first.tenant_id, set()).add(user_id)
            self.tenant_weight.setdefault(first.tenant_id, max(first.tenant_weight, _MIN_WEIGHT))
            if len(user_jobs) > 1:
                self._unsorted.add(user_id)
            own = [job.user_running_cap for job in user_jobs if job.user_running_cap is not None]
            self.user_own_cap[user_id] = min(own) if own else None
            team = [job.tenant_running_cap for job in user_jobs if job.tenant_running_cap is not None]
            self.user_team_cap[user_id] = min(team) if team else None

    def user_jobs(self, user_id: int) -> list[PendingJob]:
        """A user's pending jobs in its own order (`own_order`)."""
        jobs = self.jobs_by_user[user_id]
        if user_id in self._unsorted:
            jobs.sort(key=own_order)
            self._unsorted.discard(user_id)
        return jobs

    def __len__(self) -> int:
        return len(self.jobs)

    def add(self, job: PendingJob) -> None:
        if job.job_id in self.jobs:
            self.remove(job.job_id)
        self.jobs[job.job_id] = job
        user_id, tenant_id = job.owner_id, job.tenant_id
        user_jobs = self.jobs_by_user.get(user_id)
        if user_jobs is None:
            self.jobs_by_user[user_id] = [job]
            self.tenant_of_user[user_id] = tenant_id
            self.users_of_tenant.setdefault(tenant_id, set()).add(user_id)
            self.user_own_cap[user_id] = job.user_running_cap
            self.user_team_cap[user_id] = job.tenant_running_cap
        else:
            insort(self.user_jobs(user_id), job, key=own_order)
            self.user_own_cap[user_id] = _lower(self.user_own_cap[user_id], job.user_running_cap)
            self.user_team_cap[user_id] = _lower(self.user_team_cap[user_id], job.tenant_running_cap)
        self.tenant_weight.setdefault(tenant_id, max(job.tenant_weight, _MIN_WEIGHT))
        self._tenant_team_cap.pop(tenant_id, None)
        self.jobs_by_batch_key.setdefault(job.batch_key, {})[job.job_id] = job
        self.model_demand[job.model_key] = self.model_demand.get(job.model_key, 0) + 1

    def remove(self, job_id: int) -> None:
        """Forget a job (dispatched, cancelled, failed); one not here is ignored."""
        job = self.jobs.pop(job_id, None)
        if job is None:
            return
        user_id = job.owner_id
        tenant_id = self.tenant_of_user[user_id]
        user_jobs = self.user_jobs(user_id)
        del user_jobs[bisect_left(user_jobs, own_order(job), key=own_order)]
        if user_jobs:
            self.user_own_cap[user_id] = _lowest(other.user_running_cap for other in user_jobs)
            self.user_team_cap[user_id] = _lowest(other.tenant_running_cap for other in user_jobs)
        else:
            del self.jobs_by_user[user_id], self.tenant_of_user[user_id]
            self._unsorted.discard(user_id)
            del self.user_own_cap[user_id], self.user_team_cap[user_id]
            users = self.users_of_tenant[tenant_id]
            users.discard(user_id)
            if not users:
                del self.users_of_tenant[tenant_id], self.tenant_weight[tenant_id]
        self._tenant_team_cap.pop(tenant_id, None)
        key_jobs = self.jobs_by_batch_key[job.batch_key]
        del key_jobs[job_id]
        if not key_jobs:
            del self.jobs_by_batch_key[job.batch_key]
        left = self.model_demand[job.model_key] - 1
        if left:
            self.model_demand[job.model_key] = left
        else:
            del self.model_demand[job.model_key]

    def tenant_team_cap(self, tenant_id: int) -> int | None:
        """The lowest team cap any of the tenant's pending jobs carries."""
        if tenant_id not in self._tenant_team_cap:
            self._tenant_team_cap[tenant_id] = _lowest(self.user_team_cap[user] for user in self.users_of_tenant[tenant_id])
        return self._tenant_team_cap[tenant_id]


def _lower(current: int | None, other: int | None) -> int | None:
    if current is None:
        return other
    return current if other is None else min(current, other)


def _lowest(caps: Iterable[int | None]) -> int | None:
    return min((cap for cap in caps if cap is not None), default=None)


class _Lazy(dict, Generic[K, V]):
    """A dict whose missing entries are made by `make` when first read."""

    def __init__(self, make: Callable[[K], V]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, key: K) -> V:
        value = self[key] = self._make(key)
        return value


class Book:
    """One call's view of the index, plus what this call has handed out so far."""

    def __init__(self, index: QueueIndex, fair: FairShareState, config: PolicyConfig) -> None:
        self.config = config
        self.index = index
        self.jobs_by_batch_key = index.jobs_by_batch_key
        self.tenant_of_user = index.tenant_of_user  # a user's jobs all carry its one tenant
        self.tenant_weight = index.tenant_weight
        self.model_demand: dict[str, int] = dict(index.model_demand)  # what a load serves, what an eviction costs
        self.taken: set[int] = set()
        self.running_per_user: dict[int, int] = dict(fair.running_per_user)
        self.running_per_tenant: dict[int, int] = dict(fair.running_per_tenant)
        # Virtual times: recent service (a tenant's divided by its weight) plus this call's charges.
        user_service = fair.user_service
        self.user_vtime: dict[int, float] = _Lazy(lambda user_id: float(user_service.get(user_id, 0.0)))
        self.tenant_vtime: dict[int, float] = {
            tenant_id: float(fair.tenant_service.get(tenant_id, 0.0)) / weight
            for tenant_id, weight in index.tenant_weight.items()
        }
        # Per tenant, a heap of (user virtual time, user id); stale entries are skipped lazily.
        self.user_heaps: dict[int, list[tuple[float, int]]] = _Lazy(self._user_heap)
        # Caps on jobs at once: the config's, within each owner's and tenant's own (their limits).
        self.user_cap: dict[int, int] = _Lazy(lambda user_id: _capped(config.max_running_per_user, index.user_own_cap[user_id]))
        self.tenant_cap: dict[int, int] = _Lazy(
            lambda tenant_id: _capped(config.max_running_per_tenant, index.tenant_team_cap(tenant_id)))

    def _user_heap(self, tenant_id: int) -> list[tuple[float, int]]:
        heap = [(self.user_vtime[user_id], user_id) for user_id in self.index.users_of_tenant[tenant_id]]
        heapq.heapify(heap)
        return heap

    def user_jobs(self, user_id: int) -> list[PendingJob]:
        """A user's pending jobs in its own order: higher priority first, then first come, first served."""
        return self.index.user_jobs(user_id)

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
            cost = job_cost(found)
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
        cost = job_cost(job)
        heap = self.user_heaps[tenant_id]  # made (if first read here) before the charge
        self.user_vtime[user_id] += cost
        heapq.heappush(heap, (self.user_vtime[user_id], user_id))
        self.tenant_vtime[tenant_id] += cost / self.tenant_weight[tenant_id]
        self.model_demand[job.model_key] -= 1


def _capped(config_cap: int, own: int | None) -> int:
    return config_cap if own is None else min(config_cap, own)
