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

What the pass itself moves (dispatched, failed over quota, lost to a compare-and-set) it removes
with `forget`. The periodic pass calls `invalidate()`: everything is read again then, so a change
the aggregate cannot see (a member's limits, a tenant's weight) takes effect within a beat.
Without a memory (`dispatch_pending()` in tests and tools) each pass reads the window in full.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db.models import Count, F, Sum
from django.db.models.functions import Mod

from inference.dispatch_reads import QUEUED_WINDOW, pending_from_rows, queued_rows
from inference.models import Job
from inference.scheduler import PendingJob
from tenants.models import Tenant
from tenants.quotas import Terms, terms_for_members

_MIX, _MODULUS = 7919, 1_000_003  # the second sum: of (pk × _MIX) mod _MODULUS


def _queued():
    return Job.objects.filter(status=Job.Status.QUEUED).order_by("created_at", "pk")


class QueueMemory:
    """The queued window as the last pass left it (see the module docstring)."""

    def __init__(self) -> None:
        self.jobs: dict[int, PendingJob] = {}  # in queue order (created_at, pk) unless `unsorted`
        self.terms: dict[int, Terms] = {}
        self.weights: dict[int, float] = {}
        self.max_id = 0
        self.stale = True
        self.unsorted = False
        self.reloads = 0  # full reads so far (the bench and tests look)

    def invalidate(self) -> None:
        self.stale = True

    def forget(self, job_ids: Iterable[int]) -> None:
        for job_id in job_ids:
            self.jobs.pop(job_id, None)

    def window(self, now: datetime) -> list[PendingJob]:
        """The queued window, oldest first, up to `QUEUED_WINDOW` jobs."""
        if self.stale:
            self._reload(now)
        else:
            self._catch_up(now)
            if self._checksum_differs():
                self._reload(now)
        return list(self.jobs.values())

    def owners(self) -> set[int]:
        return {job.owner_id for job in self.jobs.values()}

    # ---------------------------------------------------------------------------------------

    def _reload(self, now: datetime) -> None:
        rows = queued_rows(_queued()[:QUEUED_WINDOW])
        self.terms = terms_for_members({row["owner_id"] for row in rows}, at=now)
        self.weights = dict(Tenant.objects.filter(pk__in={row["tenant_id"] for row in rows}).values_list("pk", "share_weight"))
        self.jobs = {job.job_id: job for job in pending_from_rows(rows, self.terms, self.weights)}
        self.max_id = max((row["pk"] for row in rows), default=0)
        if len(rows) == QUEUED_WINDOW and list(_queued().values_list("pk", flat=True)[QUEUED_WINDOW:QUEUED_WINDOW + 1]):
            # More wait beyond the window: never "new" to it (they enter it when it slides, which
            # the aggregate sees).
            self.max_id = max(self.max_id, Job.objects.order_by("-pk").values_list("pk", flat=True).first() or 0)
        self.stale = self.unsorted = False
        self.reloads += 1

    def _catch_up(self, now: datetime) -> None:
        """Add the jobs queued since the last read (those with a higher pk than any seen)."""
        rows = queued_rows(_queued().filter(pk__gt=self.max_id)[:QUEUED_WINDOW])
        if not rows:
            return
        owners = {row["owner_id"] for row in rows} - self.terms.keys()
        if owners:
            self.terms.update(terms_for_members(owners, at=now))
        tenants = {row["tenant_id"] for row in rows} - self.weights.keys()
        if tenants:
            self.weights.update(Tenant.objects.filter(pk__in=tenants).values_list("pk", "share_weight"))
        last = next(reversed(self.jobs.values()), None)
        for job in pending_from_rows(rows, self.terms, self.weights):
            self.jobs[job.job_id] = job
        if last is not None and rows[0]["created_at"].timestamp() < last.submitted_at:
            self.unsorted = True
        self.max_id = max(self.max_id, *(row["pk"] for row in rows))
        if self.unsorted:
            ordered = sorted(self.jobs.values(), key=lambda job: (job.submitted_at, job.job_id))
            self.jobs = {job.job_id: job for job in ordered}
            self.unsorted = False
        if len(self.jobs) > QUEUED_WINDOW:  # the oldest stay in the window, as a full read keeps them
            self.jobs = dict(list(self.jobs.items())[:QUEUED_WINDOW])

    def _checksum_differs(self) -> bool:
        window_ids = _queued().values("pk")[:QUEUED_WINDOW]
        database = Job.objects.filter(pk__in=window_ids).aggregate(
            count=Count("pk"), total=Sum("pk"), mixed=Sum(Mod(F("pk") * _MIX, _MODULUS)),
        )
        ids = self.jobs.keys()
        mine = (len(ids), sum(ids), sum(job_id * _MIX % _MODULUS for job_id in ids))
        return (database["count"], database["total"] or 0, database["mixed"] or 0) != mine
