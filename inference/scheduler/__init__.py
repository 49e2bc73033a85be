"""The scheduler: which pending job runs next on which GPU worker, as pure functions.

Plain data in (`PendingJob`, `WorkerState`, `FairShareState`, `PolicyConfig`), assignments out
(`Assignment`: one pipeline batch for one free worker). `plan_assignments` does fair share across
tenants and users, model-affine placement and cross-user batching; `decayed_service` turns past and
running jobs into the recent service fair share ranks by. Nothing here imports Django or torch:
`inference/dispatch.py` feeds it from the database and applies its plans with compare-and-set
updates, and `bench/scheduler_sim.py` drives the same functions in a simulation.
"""

from inference.scheduler.fairshare import decayed_service, estimated_gpu_seconds
from inference.scheduler.policy import plan_assignments
from inference.scheduler.types import Assignment, FairShareState, PendingJob, PolicyConfig, WorkerState

__all__ = [
    "Assignment",
    "FairShareState",
    "PendingJob",
    "PolicyConfig",
    "WorkerState",
    "decayed_service",
    "estimated_gpu_seconds",
    "plan_assignments",
]
