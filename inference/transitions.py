"""Every database write a GPU worker makes, in one place: its jobs' transitions and its own row.

The worker process (`inference/runner/batch.py`, `inference/runner/extras.py`,
`inference/runner/lifecycle.py`) writes through these functions only; the control plane keeps its
own writes (`inference/services.py`: submit, cancel; `inference/dispatch.py`: placement, reaping).

Job transitions (claim, progress, succeed, fail, cancelled) are compare-and-set UPDATEs on
(status, attempts), `attempts` being the job's dispatch number, unique per dispatch: a stale or
redelivered Celery message, a worker declared dead that comes back, or a cancel racing a
completion can never move a job twice or record two sets of images. The claim also counts the
attempt as started (`attempts_started`, what the attempt cap counts: `inference/reaping.py`).

The worker's own row: `worker_register` at start, `worker_heartbeat` every few seconds (one
UPDATE, no scheduler pass), `worker_batch_done` after each batch (the heartbeat, then a wake of
the dispatcher, `manage.py sweeper`, which places its next batch), `worker_stopped` at shutdown.
A worker never runs a scheduler pass itself: it claims, reports and finishes. The row belongs to
one life, its (host, pid): a second live process under the same name is refused
(`WorkerNameTaken`), and the heartbeats and the stop of a life that was replaced touch nothing.
Heartbeats carry the database's clock, never the worker host's (`inference/clock.py`).
"""

from __future__ import annotations

import logging
import os
import socket

from django.db import transaction
from django.db.models import F, Q

from config.logcontext import log_context
from inference.clock import database_now, live_since
from inference.dispatch import worker_queue_name
from inference.dispatch_wake import dispatch_wake
from inference.endings import job_ended
from inference.errors import member_error
from inference.events import job_event_publish
from inference.models import Job, Worker
from inference.reaping import ON_WORKER, requeue_or_fail
from tenants.services import usage_record

logger = logging.getLogger(__name__)


# --- a job's life on the worker ------------------------------------------------------------


def job_claim(*, public_id: str, attempt: int, worker_name: str, total_steps: int) -> Job | None:
    """dispatched → running, only for the attempt (dispatch number) this worker was handed; the
    attempt now counts as started. None: not ours (any more).

    `total_steps` is the steps this job will report, as the worker will run it (its images
    may span several pipeline calls).
    """
    with log_context(job=public_id, worker=worker_name):  # its log lines name both (config/logcontext.py)
        return _claim(public_id=public_id, attempt=attempt, worker_name=worker_name, total_steps=total_steps)


def _claim(*, public_id: str, attempt: int, worker_name: str, total_steps: int) -> Job | None:
    claimed = Job.objects.filter(
        public_id=public_id,
        status=Job.Status.DISPATCHED,
        attempts=attempt,
        worker__name=worker_name,
        cancel_requested=False,
    ).update(
        status=Job.Status.RUNNING, started_at=database_now(), progress=0.0, step=0, total_steps=total_steps,
        attempts_started=F("attempts_started") + 1,
    )
    if not claimed:
        logger.info("job %s attempt %s is not ours to run on %s: skipped", public_id, attempt, worker_name)
        return None
    job = Job.objects.select_related("owner").get(public_id=public_id)
    logger.info("job %s attempt %s started on %s (started attempt %s)", public_id, attempt, worker_name, job.attempts_started)
    job_event_publish(job)
    return job


def job_progress(*, job: Job, attempt: int, step: int, preview: str | None = None) -> bool:
    """Record progress (and a live preview, base64 JPEG); False when the job must stop
    (cancelled, or taken away from us)."""
    total = max(job.total_steps, 1)
    fields: dict = {"step": step, "progress": min(step / total, 1.0)}
    if preview is not None:
        fields["preview"] = preview
    updated = Job.objects.filter(
        pk=job.pk, status=Job.Status.RUNNING, attempts=attempt, cancel_requested=False
    ).update(**fields)
    if updated:
        job.step, job.progress = step, min(step / total, 1.0)
        job_event_publish(job)
    return bool(updated)


def _finish(job: Job, attempt: int, status: str, **fields) -> bool:
    """running → `status`, and the job's usage record, in one transaction (never one without the other).
    `job` is the object `job_claim` returned (the worker's own, kept up to date as it ran)."""
    with log_context(job=job.public_id):
        return _finish_in_context(job, attempt, status, **fields)


def _finish_in_context(job: Job, attempt: int, status: str, **fields) -> bool:
    # The database's clock, as the claim's `started_at`: a job's run time never mixes two hosts' clocks.
    written = {"status": status, "finished_at": database_now(), "preview": "", **fields}  # the live preview is over
    with transaction.atomic():
        updated = Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, attempts=attempt).update(**written)
        if updated:
            # The row as this UPDATE left it, without reading it back: while the job ran, only this
            # worker wrote its other columns (progress through this same object), or a member's
            # cancel and skip requests (`cancel_requested`, `skip_requested`), which nothing after a finish reads.
            for name, value in written.items():
                setattr(job, name, value)
            usage_record(job=job)
    if updated:
        job_event_publish(job)
        if job.worker_id:
            Worker.objects.filter(pk=job.worker_id).update(jobs_done=F("jobs_done") + 1)
        job_ended(job)
    return bool(updated)


def job_succeed(
    *, job: Job, attempt: int, outputs: list[str], infotexts: list[str], gpu_seconds: float,
    censored: list[int] | None = None,
    control_maps: list[str] | None = None,
    texts: list[str] | None = None,
    seeds: list[int] | None = None,
) -> bool:
    """`censored`: positions in `outputs` the NSFW censor flagged (and the worker blurred);
    `texts`: a promptgen job's expanded prompts, an interrogate job's caption; `seeds`: the seeds of `outputs` when the job
    kept only some of its images (a skip dropped the others)."""
    kept = {"seeds": seeds} if seeds is not None else {}
    return _finish(
        job, attempt, Job.Status.SUCCEEDED, outputs=outputs, infotexts=infotexts, censored=censored or [],
        control_maps=control_maps or [], texts=texts or [],
        gpu_seconds=gpu_seconds, progress=1.0, step=job.total_steps, **kept,
    )


def job_fail(*, job: Job, attempt: int, error: str, gpu_seconds: float = 0.0) -> bool:
    """Record a failure; the error as the member sees it, without server paths (`member_error`)."""
    return _finish(job, attempt, Job.Status.FAILED, error=member_error(error)[:2000], gpu_seconds=gpu_seconds)


def job_mark_cancelled(*, job: Job, attempt: int, gpu_seconds: float = 0.0) -> bool:
    return _finish(job, attempt, Job.Status.CANCELLED, gpu_seconds=gpu_seconds)


# --- the worker's own row ------------------------------------------------------------------


class WorkerNameTaken(RuntimeError):
    """Another live process holds this worker name: this one must not run under it."""


def _this_life() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def _previous_life_gone(worker: Worker, *, host: str, pid: int, now) -> bool:
    """Whether the life that holds `worker`'s row is over: it stopped or was declared dead, its
    heartbeat is stale (by the database's clock), it was this very process (a re-registration), or
    it ran on this host and its pid is not alive any more."""
    if worker.state not in (Worker.State.ONLINE, Worker.State.DRAINING):
        return True
    if worker.last_heartbeat < live_since(now):
        return True
    if worker.host == host and (worker.pid == pid or worker.pid is None or not _process_alive(worker.pid)):
        return True
    return False


def worker_register(
    *, name: str, device: str, device_memory_bytes: int | None, max_batch: int = 8,
    host: str | None = None, pid: int | None = None,
) -> Worker:
    """A worker process starting up (`host`/`pid`: this process's, unless a test says otherwise).
    Jobs its previous life held cannot be running any more: taken back (`requeue_or_fail`; one only
    dispatched costs no attempt). Raises `WorkerNameTaken` when another process that is still alive
    holds the name (a fresh heartbeat from another host, or a live pid on this one): two processes
    under one name would share one queue and one row, and each would take back the other's jobs."""
    this_host, this_pid = _this_life()
    host, pid = host or this_host, pid or this_pid
    with transaction.atomic():
        now = database_now()
        current = Worker.objects.select_for_update().filter(name=name).first()
        if current is not None and not _previous_life_gone(current, host=host, pid=pid, now=now):
            age = (now - current.last_heartbeat).total_seconds()
            message = (
                f"worker name {name!r} is in use by pid {current.pid} on {current.host or 'an unknown host'} "
                f"(last heartbeat {age:.0f} s ago, by the database's clock): this process (pid {pid} on {host}) "
                f"will not run under it. Stop the other process or give this one another name (celery -n)."
            )
            raise WorkerNameTaken(message)  # the caller logs it (the worker's lifecycle: then stops)
        worker, _ = Worker.objects.update_or_create(
            name=name,
            defaults={
                "queue": worker_queue_name(name),
                "host": host,
                "pid": pid,
                "device": device,
                "device_memory_bytes": device_memory_bytes,
                "max_batch": max_batch,
                "state": Worker.State.ONLINE,
                "last_heartbeat": now,
                "loaded_models": [],
                "cached_models": [],
                "active_networks": "",
                "model_counters": {},
                "started_at": now,
            },
        )
    if current is not None and (current.host, current.pid) != (host, pid):
        logger.warning("worker %s: pid %s on %s takes over from pid %s on %s, whose life is over",
                       name, pid, host, current.pid, current.host)
    requeue_or_fail(Job.objects.filter(worker=worker, status__in=ON_WORKER), f"worker {name} restarted")
    dispatch_wake()  # a free worker, and maybe its previous life's jobs back in the queue
    return worker


def _own_row(name: str):
    """This process's row: the name, and this life's pid (a row without one, made by hand, too)."""
    return Worker.objects.filter(name=name).filter(Q(pid=os.getpid()) | Q(pid__isnull=True))


def worker_heartbeat(
    *, name: str, loaded_models: list[str], cached_models: list[str] | None = None, active_networks: str = "",
    model_counters: dict[str, int] | None = None,
) -> None:
    """Still alive, holding these checkpoints and (`active_networks`, a `Job.network_key`) the
    networks of its last batch. A worker wrongly declared dead (a long pause) comes back online.
    One UPDATE of its own row: a heartbeat runs no scheduler pass (see `inference/dispatch.py`).
    Stamped with the database's clock (`inference/clock.py`), so a worker host whose clock is off by minutes is
    neither reaped early nor kept alive late; a replaced life (another pid) touches nothing.
    `model_counters`: this life's model cache counters so far (`Worker.model_counters`), if given."""
    counters = {"model_counters": dict(model_counters)} if model_counters is not None else {}
    _own_row(name).update(
        last_heartbeat=database_now(), loaded_models=loaded_models, cached_models=cached_models or [],
        active_networks=active_networks, **counters,
    )
    _own_row(name).filter(state=Worker.State.DEAD).update(state=Worker.State.ONLINE)


def worker_batch_done(
    *, name: str, loaded_models: list[str], cached_models: list[str] | None = None, active_networks: str = "",
    model_counters: dict[str, int] | None = None,
) -> None:
    """A batch ended: report what the worker holds now, then wake the dispatcher so its next batch
    is placed at once (with what it holds now: the report comes first), not at the next beat."""
    worker_heartbeat(name=name, loaded_models=loaded_models, cached_models=cached_models, active_networks=active_networks,
                     model_counters=model_counters)
    dispatch_wake()


def worker_stopped(*, name: str) -> None:
    """This life stops cleanly: offline, and what it held taken back. A life that was replaced
    meanwhile (another pid holds the row) leaves the row and the new life's jobs alone."""
    if not _own_row(name).exists():
        logger.warning("worker %s (pid %s) stopping: the name belongs to another life now, nothing to give back",
                       name, os.getpid())
        return
    _own_row(name).exclude(state=Worker.State.DISABLED).update(state=Worker.State.OFFLINE)
    requeue_or_fail(
        Job.objects.filter(worker__name=name, status__in=ON_WORKER),
        f"worker {name} stopped",
    )
    dispatch_wake()  # what it held is queued again
