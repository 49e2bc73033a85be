"""Why a queued job waits, and its place in line: what a member sees instead of "Queued · 0%".

`queue_state(job)` reads what the scheduler reads (the queued jobs, live workers, running jobs
per user and team) and answers with the first reason that holds:

| reason | when |
|---|---|
| `no_worker` | no worker is online: nothing runs until one starts |
| `user_limit` | the member already has `ATELIER_MAX_RUNNING_PER_USER` jobs on workers |
| `tenant_limit` | the member's team has `ATELIER_MAX_RUNNING_PER_TENANT` jobs on workers |
| `in_line` | its turn has not come: `position` (1 = next) in fair-share order (`scheduler.policy.queue_order`) |

The native job JSON carries it as `queue`, `/sdapi/v1/progress` as its `textinfo`, and the
workspace's progress bar as its label. It costs a few queries, so followers refresh it every
`REFRESH_SECONDS`, not on every poll.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from django.utils import timezone

from inference.dispatch import QUEUED_WINDOW, fair_share_state, live_workers, pending_job, policy_config
from inference.models import Job
from inference.scheduler.policy import queue_order

REFRESH_SECONDS = 2.0


@dataclass(frozen=True)
class QueueState:
    reason: str  # no_worker | user_limit | tenant_limit | in_line
    position: int | None  # 1 = next in line; None when it waits for something else than its turn
    running: int = 0  # for the limits: jobs on workers now
    limit: int = 0

    @property
    def message(self) -> str:
        """In English, for the APIs (the workspace words it in the member's language)."""
        if self.reason == "no_worker":
            return "Waiting: no worker is online; it starts when one is."
        if self.reason == "user_limit":
            return f"Waiting: you have {self.running} jobs running (your limit is {self.limit}); it starts when one ends."
        if self.reason == "tenant_limit":
            return (f"Waiting: your team has {self.running} jobs running (its limit is {self.limit}); "
                    "it starts when one ends.")
        if self.position == 1:
            return "Next in line: it starts when a worker is free."
        return f"In line: {self.position - 1} job(s) ahead of it."

    def as_json(self) -> dict[str, object]:
        return {**asdict(self), "message": self.message}


def queue_state(job: Job) -> QueueState | None:
    """Why `job` waits, or None when it is not queued."""
    if job.status != Job.Status.QUEUED:
        return None
    if not live_workers().exists():
        return QueueState("no_worker", None)
    config = policy_config()
    fair = fair_share_state(timezone.now(), config)
    running = fair.running_per_user.get(job.owner_id, 0)
    if running >= config.max_running_per_user:
        return QueueState("user_limit", None, running, config.max_running_per_user)
    team_running = fair.running_per_tenant.get(job.tenant_id, 0)
    if team_running >= config.max_running_per_tenant:
        return QueueState("tenant_limit", None, team_running, config.max_running_per_tenant)
    queued = Job.objects.filter(status=Job.Status.QUEUED).select_related("tenant").order_by("created_at", "pk")
    order = queue_order([pending_job(j) for j in queued[:QUEUED_WINDOW]], fair, config=config)
    position = next((i for i, pending in enumerate(order, start=1) if pending.job_id == job.pk), len(order) + 1)
    return QueueState("in_line", position)
