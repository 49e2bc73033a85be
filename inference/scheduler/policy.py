"""First-come-first-served placement with checkpoint affinity (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PendingJob:
    job_id: int
    owner_id: int
    tenant_id: int
    checkpoint: str  # the checkpoint's sha256: two files with one content are one model
    submitted_at: float  # seconds since the epoch
    priority: int = 0


@dataclass(frozen=True)
class WorkerSlot:
    worker_id: int
    free_slots: int
    loaded_checkpoints: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Assignment:
    job_id: int
    worker_id: int


def plan_assignments(pending: Sequence[PendingJob], workers: Sequence[WorkerSlot]) -> list[Assignment]:
    """Hand the oldest jobs to free workers; a worker that holds the checkpoint wins ties."""
    free = {worker.worker_id: worker.free_slots for worker in workers if worker.free_slots > 0}
    loaded = {worker.worker_id: worker.loaded_checkpoints for worker in workers}
    assignments: list[Assignment] = []
    for job in sorted(pending, key=lambda j: (j.submitted_at, j.job_id)):
        if not free:
            break
        warm = [wid for wid in free if job.checkpoint in loaded[wid]]
        chosen = min(warm or free, key=lambda wid: (-free[wid], wid))
        assignments.append(Assignment(job_id=job.job_id, worker_id=chosen))
        free[chosen] -= 1
        if free[chosen] == 0:
            del free[chosen]
    return assignments
