"""The dispatcher's copy of the queued window, kept between its passes so a pass need not re-read 5000 jobs.

There is one dispatcher (`manage.py sweeper`, see `inference/dispatch.py`), and a queued job's
scheduling columns never change while it waits, so the sweeper keeps the window's `PendingJob`s
(with their owners' terms and tenants' weights) in a `QueueMemory` it owns and hands to each
pass. A pass then reads only:

* the queued jobs newer than any it has seen (`pk > max_id`: usually none, or the few just
  submitted);
* one aggregate over the window's ids in the database (count and two sums), compared with the
  copy's: a job that left the queue behind the dispatcher's back (cancelled, failed) or came back
  to it (requeued by a worker's restart, stop or exit) changes it, and then the window is read
  again in full.

The aggregate runs over the partial index `job_queued_order` (queued jobs only); while the queue
fits in the window it is over every queued job, and read by the catch-up's own statement (one
round trip, one snapshot); beyond that it is over the window's ids, a statement of its own.

It also keeps the fair-share service of finished jobs (`finished_service`): read in full on a
reload, decayed to a reference time, and then only the jobs finished since (by `finished_at`,
with a margin for late commits, each counted once) are added; each pass scales it to its `now`.

Beside the window it keeps the policy's index of it (`index`, a `scheduler.book.QueueIndex`,
handed to `plan_assignments`) and the ids' two sums, both updated job by job as jobs arrive and
leave, so a pass neither regroups the 5000 jobs for the policy nor sums their ids again.

What the pass itself moves (dispatched, failed over quota, lost to a compare-and-set) it removes
with `forget`. The periodic pass calls `invalidate()`: everything is read again then, so a change
the aggregate cannot see (a member's limits, a tenant's weight) takes effect within a beat.
Without a memory (`dispatch_pending()` in tests and tools) each pass reads the window in full.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Count, F, Sum
from django.db.models.functions import Mod

from inference.dispatch_reads import (
    QUEUED_WINDOW, CompiledValues, FinishedCharges, finished_charges, pending_from_rows, queued_rows, queued_values,
)
from inference.models import Job
from inference.scheduler import PendingJob, PolicyConfig, decayed_service
from inference.scheduler.book import QueueIndex
from tenants.limits import RATE_KEYS
from tenants.models import Tenant
from tenants.quotas import Terms, terms_for_members

_MIX, _MODULUS = 7919, 1_000_003  # the second sum: of (pk × _MIX) mod _MODULUS
LATE_COMMIT_MARGIN_S = 30.0  # how far back each pass looks for finished jobs it has not counted
_NEWER_THAN = -7_919_000_003  # the catch-up read's one parameter while it is made into SQL
# The aggregate while the queue fits in the window, as plain SQL (the same on PostgreSQL and SQLite).
_QUEUED_SUMS = (f"SELECT COUNT(id) AS queued_count, SUM(id) AS queued_total, SUM((id * {_MIX}) %% {_MODULUS})"
                f" AS queued_mixed FROM {Job._meta.db_table} WHERE status = %s")


def _queued():
    return Job.objects.filter(status=Job.Status.QUEUED).order_by("created_at", "pk")


class QueueMemory:
    """The queued window as the last pass left it (see the module docstring)."""

    def __init__(self) -> None:
        self.jobs: dict[int, PendingJob] = {}  # in queue order (created_at, pk) unless `unsorted`
        self.index = QueueIndex()  # the same jobs as the policy reads them, kept with `jobs`
        self._sums = (0, 0)  # the ids' sum and mixed sum, kept with `jobs` (the aggregate's other side)
        self.terms: dict[int, Terms] = {}
        self.weights: dict[int, float] = {}
        self.rate_limited: set[int] = set()  # owners whose terms have a rate window (re-checked each pass)
        self.max_id = 0
        self.full = False  # more jobs wait beyond the window
        self.stale = True
        self.unsorted = False
        self.reloads = 0  # full reads so far (the bench and tests look)
        self._service = _FinishedService()
        self._newer: CompiledValues | None = None  # the catch-up read, made into SQL once

    def invalidate(self) -> None:
        self.stale = True

    def forget(self, job_ids: Iterable[int]) -> None:
        for job_id in job_ids:
            if self.jobs.pop(job_id, None) is not None:
                self.index.remove(job_id)
                self._sums = (self._sums[0] - job_id, self._sums[1] - job_id * _MIX % _MODULUS)

    def _keep(self, jobs: dict[int, PendingJob]) -> None:
        """Make `jobs` the window (its index and sums made again from them)."""
        self.jobs = jobs
        self.index = QueueIndex(jobs.values())
        self._sums = (sum(jobs), sum(job_id * _MIX % _MODULUS for job_id in jobs))

    def window(self, now: datetime) -> list[PendingJob]:
        """The queued window, oldest first, up to `QUEUED_WINDOW` jobs."""
        if self.stale:
            self._reload(now)
        else:
            queued = self._catch_up(now)
            if self._checksum_differs(queued):
                self._reload(now)
        return list(self.jobs.values())

    def finished_service(self, now: datetime, config: PolicyConfig) -> tuple[dict[int, float], dict[int, float], float]:
        """The finished jobs' decayed GPU time per user and per tenant, and the factor that takes
        them to `now` (applied per user as the policy reads it: `dispatch_reads.ServiceView`)."""
        return self._service.at(now, config)

    def _set_terms(self, terms: dict[int, Terms]) -> None:
        self.terms.update(terms)
        self.rate_limited.update(
            owner for owner, owner_terms in terms.items() if any(owner_terms.limits.get(key) is not None for key in RATE_KEYS)
        )

    # ---------------------------------------------------------------------------------------

    def _reload(self, now: datetime) -> None:
        rows = queued_rows(_queued()[:QUEUED_WINDOW])
        self.terms, self.rate_limited = {}, set()
        self._set_terms(terms_for_members({row["owner_id"] for row in rows}, at=now))
        self._service.stale = True
        self.weights = dict(Tenant.objects.filter(pk__in={row["tenant_id"] for row in rows}).values_list("pk", "share_weight"))
        self._keep({job.job_id: job for job in pending_from_rows(rows, self.terms, self.weights)})
        self.max_id = max((row["pk"] for row in rows), default=0)
        self.full = len(rows) == QUEUED_WINDOW and bool(
            list(_queued().values_list("pk", flat=True)[QUEUED_WINDOW:QUEUED_WINDOW + 1]))
        if self.full:
            # More wait beyond the window: never "new" to it (they enter it when it slides, which
            # the aggregate sees).
            self.max_id = max(self.max_id, Job.objects.order_by("-pk").values_list("pk", flat=True).first() or 0)
        self.stale = self.unsorted = False
        self.reloads += 1

    def _catch_up(self, now: datetime) -> tuple | None:
        """Add the jobs queued since the last read (those with a higher pk than any seen). While
        the queue fits in the window, the aggregate over it is read by the same statement, in the
        same snapshot, and returned (count, sum, mixed sum); else None."""
        if self._newer is None:
            self._newer = CompiledValues(queued_values(_queued().filter(pk__gt=_NEWER_THAN)[:QUEUED_WINDOW]), _NEWER_THAN)
        queued = None
        if self.full:
            rows = self._newer.rows(self.max_id)
        else:
            queued, rows = self._newer.rows_beside(_QUEUED_SUMS, [Job.Status.QUEUED], self.max_id, ("created_at", "pk"))
        if not rows:
            return queued
        owners = {row["owner_id"] for row in rows} - self.terms.keys()
        if owners:
            self._set_terms(terms_for_members(owners, at=now))
        tenants = {row["tenant_id"] for row in rows} - self.weights.keys()
        if tenants:
            self.weights.update(Tenant.objects.filter(pk__in=tenants).values_list("pk", "share_weight"))
        last = next(reversed(self.jobs.values()), None)
        total, mixed = self._sums
        for job in pending_from_rows(rows, self.terms, self.weights):
            if job.job_id not in self.jobs:
                total, mixed = total + job.job_id, mixed + job.job_id * _MIX % _MODULUS
            self.jobs[job.job_id] = job
            self.index.add(job)
        self._sums = (total, mixed)
        if last is not None and rows[0]["created_at"].timestamp() < last.submitted_at:
            self.unsorted = True
        self.max_id = max(self.max_id, *(row["pk"] for row in rows))
        if self.unsorted:
            ordered = sorted(self.jobs.values(), key=lambda job: (job.submitted_at, job.job_id))
            self.jobs = {job.job_id: job for job in ordered}
            self.unsorted = False
        if len(self.jobs) > QUEUED_WINDOW:  # the oldest stay in the window, as a full read keeps them
            self.forget(list(self.jobs)[QUEUED_WINDOW:])
            self.full = True
        return queued

    def _checksum_differs(self, queued: tuple | None) -> bool:
        """Whether the queue in the database differs from the window: `queued`, the aggregate
        `_catch_up` read beside the new jobs, if it did (and the queue still fits the window)."""
        mine = (len(self.jobs), *self._sums)
        if self.full:
            queued = Job.objects.filter(pk__in=_queued().values("pk")[:QUEUED_WINDOW])
            database = queued.aggregate(
                count=Count("pk"), total=Sum("pk"), mixed=Sum(Mod(F("pk") * _MIX, _MODULUS)),
            )
            return (database["count"], database["total"] or 0, database["mixed"] or 0) != mine
        if queued is None:
            with connection.cursor() as cursor:
                cursor.execute(_QUEUED_SUMS, [Job.Status.QUEUED])
                queued = cursor.fetchone()
        count, total, mixed = queued
        return (count, total or 0, mixed or 0) != mine


class _FinishedService:
    """The finished jobs' decayed service, kept at a reference time and caught up incrementally."""

    def __init__(self) -> None:
        self.stale = True
        self.reference = 0.0  # the timestamp `user` and `tenant` are decayed to
        self.user: dict[int, float] = {}
        self.tenant: dict[int, float] = {}
        self.counted: dict[int, float] = {}  # pk → finished at, for the jobs within the margin
        self.read_at = 0.0
        self._newly_finished: FinishedCharges | None = None  # `_catch_up`'s read, made into SQL once

    def at(self, now: datetime, config: PolicyConfig) -> tuple[dict[int, float], dict[int, float], float]:
        rate = math.log(2.0) / config.service_half_life_s
        if self.stale:
            self._reload(now, config)
        else:
            self._catch_up(now, rate)
        return self.user, self.tenant, math.exp(-rate * max(now.timestamp() - self.reference, 0.0))

    def _reload(self, now: datetime, config: PolicyConfig) -> None:
        charges = finished_charges(now - timedelta(seconds=4 * config.service_half_life_s))
        self.reference = self.read_at = now.timestamp()
        self.user, self.tenant = decayed_service(
            [charge[1:] for charge in charges], now=self.reference, half_life_s=config.service_half_life_s)
        self.counted = {pk: at for pk, *_, at in charges if at >= self.reference - LATE_COMMIT_MARGIN_S}
        self.stale = False

    def _catch_up(self, now: datetime, rate: float) -> None:
        since = self.read_at - LATE_COMMIT_MARGIN_S
        self.read_at = now.timestamp()
        if self._newly_finished is None:
            self._newly_finished = FinishedCharges()
        for pk, owner, tenant, gpu_seconds, at in self._newly_finished.since(datetime.fromtimestamp(since, tz=now.tzinfo)):
            if pk in self.counted:
                continue
            self.counted[pk] = at
            weight = gpu_seconds * math.exp(rate * (min(at, self.read_at) - self.reference))  # at the reference time
            self.user[owner] = self.user.get(owner, 0.0) + weight
            self.tenant[tenant] = self.tenant.get(tenant, 0.0) + weight
        self.counted = {pk: at for pk, at in self.counted.items() if at >= since}
