"""The placement policy: plain data in, assignments out. No Django, no torch.

This is the seam the fair, model-affine, batching scheduler plugs into. The policy today is
deliberately simple: first come, first served, each job to a free worker, preferring one that
already holds the job's checkpoint. `inference/dispatch.py` feeds it from the database and
applies its decisions with compare-and-set updates.
"""

from inference.scheduler.policy import Assignment, PendingJob, WorkerSlot, plan_assignments

__all__ = ["Assignment", "PendingJob", "WorkerSlot", "plan_assignments"]
