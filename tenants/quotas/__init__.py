"""Quotas: which limits are in force for a member, and checking a job against them.

The limits in force for a member are their tenant's current plan's (`Plan.limits`, the
`TenantPlan` effective now; no plan: no limits) tightened by their own (`Membership.limits`), in
the vocabulary of `tenants/limits.py`. They are checked three times:

- **Request limits** (`max_pixels`, `max_steps`, `max_batch_size`): at submit, a `Forbidden` (403)
  naming the limit: the same request can never pass, so it is not "try later".
- **Rate windows** (`*_images_per_*`, `*_gpu_seconds_per_*`, calendar minute / hour / day / month in
  the tenant's time zone, `tenants.money.window_bounds`) and the **queued caps**
  (`user_queued_jobs`, `tenant_queued_jobs`): at submit, a `QuotaExceeded` (`TooMany`, 429) naming
  the limit, the used and limit figures and when it resets (ISO time in the tenant's zone).
  Used = Σ `UsageRecord` ended in the window, plus what the member's (for `tenant_*`, the
  team's) queued, dispatched and running jobs will use: their images, and for GPU-seconds an
  estimate (their pixel-steps × the tenant's GPU-seconds per pixel-step in the records read; 0
  before the tenant has any). An image limit is refused when this job's images would pass it; a
  GPU-seconds limit when nothing is left of it (a job's time is known only once it ran).
- **At dispatch** (`inference/dispatch.py`): `user_running_jobs` / `tenant_running_jobs` hold a job
  queued until a slot frees (an input to the scheduler's pure policy), and a job whose owner is
  over a rate window by then (a limit lowered, or GPU time that ran over its estimate) fails with
  the same message instead of running (`dispatch_refusals`).

A full queued cap reaches adapters as `inference.services.TooManyQueuedJobs` (429; an EAS input
item waits for room, as for the platform's own queue cap); a full rate window is a plain 429 (an
EAS item gets a failure result saying so). A job group's cells are checked one by one in the
group's one transaction, so they count against each other and a group is queued all or none.

Bound on overshoot: images never pass a limit (a check counts the images of unfinished jobs and
is serialised per tenant). GPU-seconds can: a job is admitted, and dispatched, while the window's
records plus the estimate of the jobs in flight are under the limit, and a running job is never
stopped. So a window ends at most the GPU time of the jobs dispatched or running when its use
reached the limit over it, less what their estimates counted: with `user_running_jobs` = n, n
jobs' time for a member's window; before the tenant has any record with pixel-steps (estimate 0),
every job in flight counts in full. The dispatch re-check stops what is still queued.

Concurrency and cost: `quota_check` runs in the transaction that inserts the job and first locks
the tenant's row (`SELECT … FOR UPDATE`), so two submissions of one team are checked one after
the other and the second sees the first's job. With a rate or queued limit in force that is the
lock, one SQL statement summing every window (`_window_sums`) and one read of the team's
unfinished jobs; without one, no transaction and no lock: only the one query that reads the
member's terms (`terms_for_membership`, which also tells the model registry whether any access
rule applies). `bench/quota_check.py` measures it.
"""

from tenants.quotas.checks import (
    QUEUED_KEYS,
    RUNNING_KEYS,
    Demand,
    QuotaExceeded,
    RequestOverLimit,
    check_queued,
    check_rates,
    check_request_limits,
    demand_of,
    dispatch_refusals,
    quota_check,
    quota_needs_lock,
)
from tenants.quotas.status import QuotaStatus, quota_status
from tenants.quotas.terms import Terms, plan_in_force, running_caps, terms_for_members, terms_for_membership
from tenants.quotas.usage import Usage, usage_for

__all__ = [
    "QUEUED_KEYS", "RUNNING_KEYS", "Demand", "QuotaExceeded", "QuotaStatus", "RequestOverLimit", "Terms", "Usage",
    "check_queued", "check_rates", "check_request_limits", "demand_of", "dispatch_refusals", "plan_in_force",
    "quota_check", "quota_needs_lock", "quota_status", "running_caps", "terms_for_members", "terms_for_membership",
    "usage_for",
]
