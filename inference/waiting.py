"""Why a queued job waits, and its place in line: what a member sees instead of "Queued · 0%".

`queue_state(job)` reads what the scheduler reads (the queued jobs, live workers, running jobs
per user and team) and answers with the first reason that holds:

| reason | when |
|---|---|
| `no_worker` | no worker is online: nothing runs until one starts |
| `user_limit` | the member already has `ATELIER_MAX_RUNNING_PER_USER` jobs on workers, or their own `user_running_jobs` limit (`tenants/quotas`) if lower |
| `tenant_limit` | the member's team has `ATELIER_MAX_RUNNING_PER_TENANT` jobs on workers, or its plan's `tenant_running_jobs` if lower |
| `in_line` | its turn has not come: `position` (1 = next) in fair-share order (`scheduler.policy.queue_order`) |

The native job JSON carries it as `queue`, `/sdapi/v1/progress` as its `textinfo`, and the
workspace's progress bar as its label.

Reading the queue costs a few queries and the policy's order of the whole queued window, so it is
computed once into a `QueueSnapshot` (`queue_snapshot()`: whether a worker is online, jobs on
workers per member and team, the limits, every queued job's place, the queue's length) and every
`queue_state` within `ATELIER_QUEUE_STATE_TTL_SECONDS` answers from it. The snapshot is kept in
Django's default cache (local memory, one per process unless `CACHES` says otherwise), never in a
module global. Staleness bound: an answer describes the queue as it was at most
`ATELIER_QUEUE_STATE_TTL_SECONDS` ago (1 s by default; 0 computes it on every call). The job's own
status is always current (a job no longer queued gets None at once); a job submitted after the
snapshot was taken gets the place after the snapshot's last (`length + 1`), as a job past the
policy's window always did. The workspace's own follower also re-reads it only every
`REFRESH_SECONDS`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from inference.dispatch import QUEUED_WINDOW, fair_share_state, live_workers, pending_job, policy_config
from inference.models import Job
from inference.scheduler.policy import queue_order
from tenants.quotas import running_caps, terms_for_members

REFRESH_SECONDS = 2.0
# The cache key of the snapshot; the suffix changes when QueueSnapshot's fields do.
SNAPSHOT_CACHE_KEY = "atelier:queue-snapshot:v2"


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


@dataclass(frozen=True)
class QueueSnapshot:
    """The queue as the scheduler saw it at one moment: what every `queue_state` answers from."""

    no_worker: bool  # no worker online: the rest is empty
    running_per_user: dict[int, int]  # owner id → jobs dispatched or running
    running_per_tenant: dict[int, int]  # tenant id → jobs dispatched or running
    max_running_per_user: int
    max_running_per_tenant: int
    positions: dict[int, int]  # queued job pk → its place in fair-share order (1 = next)
    length: int  # queued jobs the policy ordered (its window)
    user_caps: dict[int, int]  # owner id → their own running cap where below the platform's
    tenant_caps: dict[int, int]  # tenant id → its plan's running cap where below the platform's


def queue_snapshot() -> QueueSnapshot:
    """Read the queue now: live workers, the fair-share state and the order of the queued window."""
    config = policy_config()
    if not live_workers().exists():
        return QueueSnapshot(True, {}, {}, config.max_running_per_user, config.max_running_per_tenant, {}, 0, {}, {})
    now = timezone.now()
    fair = fair_share_state(now, config)
    queued = list(Job.objects.filter(status=Job.Status.QUEUED).select_related("tenant").order_by("created_at", "pk")
                  [:QUEUED_WINDOW])
    terms = terms_for_members({job.owner_id for job in queued}, at=now)  # as the dispatcher reads them
    order = queue_order([pending_job(j, terms.get(j.owner_id)) for j in queued], fair, config=config)
    user_caps: dict[int, int] = {}
    tenant_caps: dict[int, int] = {}
    for job in queued:
        user_cap, tenant_cap = running_caps(terms[job.owner_id].limits) if job.owner_id in terms else (None, None)
        if user_cap is not None and user_cap < config.max_running_per_user:
            user_caps[job.owner_id] = user_cap
        if tenant_cap is not None and tenant_cap < tenant_caps.get(job.tenant_id, config.max_running_per_tenant):
            tenant_caps[job.tenant_id] = tenant_cap
    return QueueSnapshot(
        no_worker=False,
        running_per_user=dict(fair.running_per_user),
        running_per_tenant=dict(fair.running_per_tenant),
        max_running_per_user=config.max_running_per_user,
        max_running_per_tenant=config.max_running_per_tenant,
        positions={pending.job_id: place for place, pending in enumerate(order, start=1)},
        length=len(order),
        user_caps=user_caps,
        tenant_caps=tenant_caps,
    )


def current_queue_snapshot() -> QueueSnapshot:
    """The cached snapshot while it is younger than `ATELIER_QUEUE_STATE_TTL_SECONDS`, else a new one."""
    ttl = settings.ATELIER_QUEUE_STATE_TTL_SECONDS
    if ttl <= 0:
        return queue_snapshot()
    snapshot = cache.get(SNAPSHOT_CACHE_KEY)
    if not isinstance(snapshot, QueueSnapshot):
        snapshot = queue_snapshot()
        cache.set(SNAPSHOT_CACHE_KEY, snapshot, timeout=ttl)
    return snapshot


def queue_state(job: Job) -> QueueState | None:
    """Why `job` waits, or None when it is not queued (from the snapshot: see the module's docstring)."""
    if job.status != Job.Status.QUEUED:
        return None
    snapshot = current_queue_snapshot()
    if snapshot.no_worker:
        return QueueState("no_worker", None)
    running = snapshot.running_per_user.get(job.owner_id, 0)
    user_cap = snapshot.user_caps.get(job.owner_id, snapshot.max_running_per_user)
    if running >= user_cap:
        return QueueState("user_limit", None, running, user_cap)
    team_running = snapshot.running_per_tenant.get(job.tenant_id, 0)
    tenant_cap = snapshot.tenant_caps.get(job.tenant_id, snapshot.max_running_per_tenant)
    if team_running >= tenant_cap:
        return QueueState("tenant_limit", None, team_running, tenant_cap)
    return QueueState("in_line", snapshot.positions.get(job.pk, snapshot.length + 1))
