"""Taking jobs back from workers that are gone: the reaper, the supervisor's exit report, and the
attempt cap.

A job carries two numbers (`inference/models.py`):

* `Job.attempts`, its dispatch number: raised by one at every dispatch and never lowered or
  reused, it is the token in the `run_batch` message and in every compare-and-set a worker makes
  (claim, progress, finish). A stale message, from a dispatch before the latest, matches nothing.
* `Job.attempts_started`, the attempts a worker really started: raised by `job_claim`
  (dispatched → running). Only these count against `ATELIER_JOB_MAX_ATTEMPTS`.

So a job taken back while only *dispatched* (its message never sent, its worker dead before
claiming it, or a claim never made) goes back to the queue for free; a job taken back while
*running* goes back to the queue, or fails once it has used its started attempts, with an error
that says so. Liveness is judged by the database's clock (`inference/clock.py`).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from config.logcontext import log_context
from inference.clock import database_now, live_since
from inference.dispatch_wake import dispatch_wake
from inference.endings import job_ended
from inference.events import job_event_publish
from inference.models import Job, Worker
from tenants.services import usage_record

logger = logging.getLogger(__name__)

ON_WORKER = (Job.Status.DISPATCHED, Job.Status.RUNNING)


def cap_reached_error(reason: str, *, attempt: int, started: int) -> str:
    """The error of a job failed at the attempt cap: the reason, the dispatch it was lost on, and the cap."""
    cap = settings.ATELIER_JOB_MAX_ATTEMPTS
    return (
        f"{reason} (attempt {attempt}); gave up after {started} started attempts: "
        f"the cap was reached (ATELIER_JOB_MAX_ATTEMPTS={cap})"
    )


def requeue_or_fail(jobs, reason: str) -> int:
    """Take interrupted jobs back: requeue them, or fail a running one that used its last started
    attempt. A job still only dispatched costs no attempt. Each move is a compare-and-set on
    (status, dispatch number): a job that moved on meanwhile is left alone. Returns how many moved."""
    changed = 0
    for job in jobs:
        with log_context(job=job.public_id, batch=job.batch_id or None):  # config/logcontext.py
            changed += _requeue_or_fail_one(job, reason)
    return changed


def _requeue_or_fail_one(job: Job, reason: str) -> int:
    """`requeue_or_fail` of one job: 1 if it moved, else 0."""
    cap = settings.ATELIER_JOB_MAX_ATTEMPTS
    base = Job.objects.filter(pk=job.pk, status=job.status, attempts=job.attempts)
    started = job.status == Job.Status.RUNNING
    at_cap = started and job.attempts_started >= cap
    if at_cap:
        with transaction.atomic():  # a job that had started ends with its usage record, as any other
            moved = base.update(
                status=Job.Status.FAILED,
                finished_at=database_now(),
                error=cap_reached_error(reason, attempt=job.attempts, started=job.attempts_started),
            )
            if moved and job.started_at is not None:
                job.refresh_from_db()
                usage_record(job=job)
    else:
        moved = base.update(
            status=Job.Status.QUEUED, worker=None, progress=0.0, step=0, dispatched_at=None, batch_id=""
        )
    if not moved:
        return 0
    outcome = "failed at the attempt cap" if at_cap else "requeued" if started else "requeued (never started: no attempt spent)"
    logger.warning(
        "job %s attempt %s: %s; %s (%s of %s started attempts used)",
        job.public_id, job.attempts, reason, outcome, job.attempts_started, cap,
    )
    job.refresh_from_db()
    job_event_publish(job)
    if job.status == Job.Status.FAILED:
        job_ended(job)
    return 1


def workers_reap() -> int:
    """Declare silent workers dead (by the database's clock) and take their jobs back; requeue
    dispatches never started."""
    reaped = 0
    now = database_now()
    silent = Worker.objects.filter(state__in=[Worker.State.ONLINE, Worker.State.DRAINING], last_heartbeat__lt=live_since(now))
    for worker in silent:
        # Compare-and-set: dead only if still silent (a heartbeat that landed meanwhile keeps it).
        if silent.filter(pk=worker.pk).update(state=Worker.State.DEAD):
            with log_context(worker=worker.name):
                logger.warning("worker %s missed its heartbeats: declared dead", worker.name)
                reaped += requeue_or_fail(
                    Job.objects.filter(worker=worker, status__in=ON_WORKER), f"worker {worker.name} was lost"
                )
    # Jobs assigned to a worker that is gone, or that never picked them up.
    stale_dispatch = now - timedelta(seconds=settings.ATELIER_DISPATCH_TIMEOUT_SECONDS)
    orphans = Job.objects.filter(status__in=ON_WORKER).filter(
        Q(worker__isnull=True)
        | Q(worker__state__in=[Worker.State.DEAD, Worker.State.OFFLINE])
        | Q(status=Job.Status.DISPATCHED, dispatched_at__lt=stale_dispatch)
    )
    reaped += requeue_or_fail(orphans, "its worker stopped before finishing it")
    return reaped


def worker_exited(*, name: str, pid: int) -> int:
    """The process supervising a worker (`manage.py serve`) saw it exit: declare it offline now,
    not after `ATELIER_WORKER_DEAD_AFTER_SECONDS` of silence, so no pass sends it more work, and
    take back what it held the way the reaper does (`requeue_or_fail`: requeued, or failed at the
    attempt cap). Only the life with this pid: a restarted life that registered already (a new
    pid) is left alone. Returns how many jobs were requeued or failed."""
    exited_at = database_now()
    worker = Worker.objects.filter(name=name, pid=pid, state__in=[Worker.State.ONLINE, Worker.State.DRAINING]).first()
    if worker is None:  # it stopped cleanly (`worker_stopped`), was reaped, or a new life registered
        return 0
    if not Worker.objects.filter(pk=worker.pk, pid=pid, state=worker.state).update(state=Worker.State.OFFLINE):
        return 0
    logger.warning("worker %s (pid %s) exited: offline", name, pid)
    dispatch_wake()  # on commit: its jobs are requeued below, placed by the next pass
    return requeue_or_fail(
        # Dispatched to this life (a new life registering meanwhile may already hold newer jobs).
        Job.objects.filter(worker=worker, status__in=ON_WORKER).filter(
            Q(dispatched_at__isnull=True) | Q(dispatched_at__lte=exited_at)
        ),
        f"worker {name} exited",
    )
