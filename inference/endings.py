"""What follows a job's end, wherever it ends: a worker's finish (`transitions._finish`), a cancel
before it ran (`services.job_cancel`), or the reaper failing it at the attempt cap
(`dispatch.requeue_or_fail`). Each of those publishes the job's event, then calls `job_ended`.

Both follow-ups are "safely": the job's own transition is already stored, and a failure here is
made good later (the sweeper writes a missed EAS result; a read of the group settles its grid).
"""

from __future__ import annotations

from inference.models import Job


def job_ended(job: Job) -> None:
    """The ended job's EAS queue result (if an input item made it), and its plot's grid and the
    plot's EAS result (if it is the last cell of a group)."""
    # Imported here: both modules import the services that import this one.
    from inference.eas.bridge import eas_group_finished_safely, eas_job_finished_safely
    from inference.job_groups import job_group_settle_safely

    eas_job_finished_safely(job)
    if job.group_id:
        group = job_group_settle_safely(job.group_id)
        if group is not None and group.finished_at is not None:  # the last cell: an EAS script's result
            eas_group_finished_safely(group)
