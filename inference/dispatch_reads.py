"""What a dispatch pass reads, as the scheduler's plain data, with only the columns it needs.

A pass sees up to `QUEUED_WINDOW` queued jobs, every live worker and what runs on it, and the
recent GPU time per user and tenant. Read as model instances, the window alone cost most of a
pass at scale (every job's JSON columns decoded: `bench/dispatch_scale.py`); here the queued
jobs are read as tuples, a job's sizing from its JSON parameters picked out by the database
(`KT`), and become `PendingJob`s directly. `pending_job(job)` gives the same `PendingJob` for a
`Job` instance (the queue-position page reads those), through the same sizing rules.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta, timezone as dt_timezone
from typing import Any, NamedTuple

from django.conf import settings
from django.db import connections
from django.db.models import QuerySet
from django.db.models.fields.json import KT

from inference.clock import live_since  # noqa: F401 - the dispatcher's readers take it from here too

from inference.models import Job, Worker
from inference.scheduler import FairShareState, PendingJob, PolicyConfig, WorkerState, decayed_service
from tenants.quotas import Terms, running_caps

QUEUED_WINDOW = 5000  # queued jobs the policy sees per pass (oldest first)
ON_WORKER = (Job.Status.DISPATCHED, Job.Status.RUNNING)
UNKNOWN_REMAINING_SECONDS = 10.0  # a batch's expected remaining time before any progress
# A queued job's columns a pass reads (then its sizing, picked out of `params`: `_SIZING`).
QUEUED_COLUMNS = ("pk", "owner_id", "tenant_id", "created_at", "model_key", "network_key", "batch_key", "priority",
                  "kind", "total_steps", "seeds")
_SIZING = {"steps": KT("params__steps"), "width": KT("params__width"), "height": KT("params__height"),
           "sizes": KT("params__sizes"), "size": KT("params__size")}


def policy_config() -> PolicyConfig:
    return PolicyConfig(
        max_running_per_user=settings.ATELIER_MAX_RUNNING_PER_USER,
        max_running_per_tenant=settings.ATELIER_MAX_RUNNING_PER_TENANT,
        affinity_grace_s=settings.ATELIER_AFFINITY_GRACE_SECONDS,
        max_reorder_wait_s=settings.ATELIER_MAX_REORDER_WAIT_SECONDS,
        service_half_life_s=settings.ATELIER_SERVICE_HALF_LIFE_SECONDS,
    )


def live_workers(now: datetime | None = None) -> QuerySet[Worker]:
    """Online workers whose last heartbeat is recent by the database's clock (`inference/clock.py`)."""
    return Worker.objects.filter(state=Worker.State.ONLINE, last_heartbeat__gte=live_since(now))


_FINISHED_SINCE = datetime(1970, 1, 2, 3, 4, 5, 678901, tzinfo=dt_timezone.utc)  # the marker while made into SQL
_CHARGE_COLUMNS = ("pk", "owner_id", "tenant_id", "gpu_seconds", "finished_at")


def finished_charges(since: datetime) -> list[tuple[int, int, int, float, float]]:
    """(pk, owner, tenant, GPU seconds, finished at as a timestamp) of the jobs finished since `since`."""
    return [
        (pk, owner, tenant, gpu_seconds, finished.timestamp())
        for pk, owner, tenant, gpu_seconds, finished in Job.objects.filter(finished_at__gte=since).values_list(*_CHARGE_COLUMNS)
    ]


class FinishedCharges:
    """`finished_charges`, its SQL made once (the dispatcher's memory reads the newly finished
    jobs every pass: making the query through the ORM cost more than running it)."""

    def __init__(self) -> None:
        queryset = Job.objects.filter(finished_at__gte=_FINISHED_SINCE).values(*_CHARGE_COLUMNS)
        self._compiled = CompiledValues(queryset, _FINISHED_SINCE, connections[queryset.db].ops.adapt_datetimefield_value)

    def since(self, since: datetime) -> list[tuple[int, int, int, float, float]]:
        return [(row["pk"], row["owner_id"], row["tenant_id"], row["gpu_seconds"], row["finished_at"].timestamp())
                for row in self._compiled.rows(since)]


def fair_share_state(
    now: datetime, config: PolicyConfig, *,
    finished: tuple[Mapping[int, float], Mapping[int, float], float] | None = None, active: list[OnWorker] | None = None,
) -> FairShareState:
    """Recent GPU time per user and tenant (finished jobs, and running ones so far), and what runs now.
    `finished`: the finished jobs' service per user and per tenant, and the factor that decays it to
    `now` (the dispatcher's memory keeps it, `inference/dispatch_memory.py`); `active`: the jobs on
    workers, already read. The service is computed per user when the policy reads it (`ServiceView`)."""
    if finished is None:
        horizon = now - timedelta(seconds=4 * config.service_half_life_s)
        charges = [charge[1:] for charge in finished_charges(horizon)]
        finished = (*decayed_service(charges, now=now.timestamp(), half_life_s=config.service_half_life_s), 1.0)
    if active is None:
        active = [job for jobs in jobs_on_workers().values() for job in jobs]
    user_running: dict[int, list[float]] = {}
    tenant_running: dict[int, list[float]] = {}
    for job in active:
        if job.started_at:  # running so far, in full
            seconds = (now - job.started_at).total_seconds()
            user_running.setdefault(job.owner_id, []).append(seconds)
            tenant_running.setdefault(job.tenant_id, []).append(seconds)
    return FairShareState(
        user_service=ServiceView(finished[0], user_running, finished[2]),
        tenant_service=ServiceView(finished[1], tenant_running, finished[2]),
        running_per_user=Counter(job.owner_id for job in active),
        running_per_tenant=Counter(job.tenant_id for job in active),
    )


class ServiceView(Mapping[int, float]):
    """Decayed service per user (or tenant): `finished` × `factor`, plus each running job's
    seconds, added in turn, computed for a key when it is read. The policy reads a few users'
    service per pass, not the 1000 a dict made in full would cost."""

    def __init__(self, finished: Mapping[int, float], running: Mapping[int, list[float]],
                 factor: float = 1.0) -> None:
        self._finished, self._running, self._factor = finished, running, factor

    def __getitem__(self, key: int) -> float:
        running = self._running.get(key)
        if key in self._finished:
            value = self._finished[key] * self._factor
        elif running is None:
            raise KeyError(key)
        else:
            value = 0.0
        for seconds in running or ():
            value = value + seconds
        return value

    def __iter__(self) -> Iterator[int]:
        yield from self._finished
        yield from (key for key in self._running if key not in self._finished)

    def __len__(self) -> int:
        return len(self._finished) + sum(1 for key in self._running if key not in self._finished)


class OnWorker(NamedTuple):
    """A job dispatched to or running on a worker, as its worker's state and fair share need it."""

    worker_id: int | None
    status: str
    started_at: datetime | None
    progress: float
    model_key: str
    owner_id: int
    tenant_id: int


class LiveWorker(NamedTuple):
    """A live worker's row as a pass reads it (locked): what its `WorkerState` and its batch's
    message need, the attributes `worker_state` and `_send` read from a `Worker`."""

    pk: int
    name: str
    queue: str
    max_batch: int
    loaded_models: list
    cached_models: list
    active_networks: str


def jobs_on_workers() -> dict[int | None, list[OnWorker]]:
    """Worker id → its dispatched and running jobs, earliest started first (every such job, a
    worker's that is no longer live too: they count in fair share)."""
    on_worker: dict[int | None, list[OnWorker]] = {}
    rows = (Job.objects.filter(status__in=ON_WORKER).order_by("started_at")
            .values_list("worker_id", "status", "started_at", "progress", "model_key", "owner_id", "tenant_id"))
    for row in rows:
        on_worker.setdefault(row[0], []).append(OnWorker(*row))
    return on_worker


def worker_state(worker: Worker | LiveWorker, on_worker: list[OnWorker], now: datetime) -> WorkerState:
    busy_until = None
    running = [job for job in on_worker if job.status == Job.Status.RUNNING and job.started_at]
    if on_worker:
        remaining = UNKNOWN_REMAINING_SECONDS
        if running and running[0].progress > 0:
            elapsed = (now - running[0].started_at).total_seconds()
            remaining = elapsed / running[0].progress * (1 - running[0].progress)
        busy_until = now.timestamp() + remaining
    return WorkerState(
        worker_id=worker.pk,
        free=not on_worker,
        max_batch=worker.max_batch,
        resident_models=tuple(worker.loaded_models),
        cached_models=tuple(worker.cached_models),
        active_networks=worker.active_networks,
        busy_until=busy_until,
        busy_model=on_worker[0].model_key if on_worker else None,
    )


def _number(value: Any, default: int) -> int:
    return default if value is None else int(float(value))


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _sizing(kind: str, seeds: list, total_steps: int, params: Mapping[str, Any]) -> tuple[int, int, int]:
    """(images, steps, pixels) as the scheduler estimates a job's cost."""
    if kind == Job.Kind.EXTRAS:
        # No denoising: counted as one step per image at the input's size, a rough guess of an
        # upscaler pass (what the job really costs is charged when it finishes).
        sizes = _json(params.get("sizes")) or [[512, 512]]
        return len(sizes), 1, max(width * height for width, height in sizes)
    if kind == Job.Kind.INTERROGATE:
        # One image through a captioning model and CLIP (or a tagger): about one upscaler pass.
        width, height = _json(params.get("size")) or [512, 512]
        return 1, 1, max(int(width) * int(height), 64 * 64)
    if kind == Job.Kind.PROMPTGEN:
        # One batch row per job (the runtime samples its results side by side), one step per new
        # token; a token step of a small language model costs about what a 64×64 UNet step does.
        return 1, max(total_steps, 1), 64 * 64
    steps = _number(params.get("steps"), 20)
    return len(seeds), steps, _number(params.get("width"), 512) * _number(params.get("height"), 512)


def _pending(row: Mapping[str, Any], params: Mapping[str, Any], terms: Terms | None, tenant_weight: float) -> PendingJob:
    images, steps, pixels = _sizing(row["kind"], row["seeds"], row["total_steps"], params)
    user_cap, tenant_cap = running_caps(terms.limits) if terms is not None else (None, None)
    return PendingJob(
        job_id=row["pk"],
        owner_id=row["owner_id"],
        tenant_id=row["tenant_id"],
        submitted_at=row["created_at"].timestamp(),
        model_key=row["model_key"],
        network_key=row["network_key"],
        batch_key=row["batch_key"],
        images=images,
        steps=steps,
        pixels=pixels,
        priority=row["priority"],
        tenant_weight=tenant_weight,
        user_running_cap=user_cap,
        tenant_running_cap=tenant_cap,
    )


def pending_job(job: Job, terms: Terms | None = None) -> PendingJob:
    """A queued job as the scheduler sees it; `terms`, its owner's (`tenants.quotas`): their
    `user_running_jobs` / `tenant_running_jobs` caps hold it queued while they are full."""
    row = {name: getattr(job, name) for name in QUEUED_COLUMNS}
    return _pending(row, job.params, terms, job.tenant.share_weight)


def queued_values(queryset: QuerySet[Job]) -> QuerySet[Job]:
    """`queryset`'s rows as `queued_rows` reads them."""
    return queryset.annotate(**_SIZING).values(*QUEUED_COLUMNS, *_SIZING)


def queued_rows(queryset: QuerySet[Job]) -> list[dict[str, Any]]:
    """The queued jobs of `queryset` as plain rows: `QUEUED_COLUMNS` and their sizing parameters."""
    return list(queued_values(queryset))


class CompiledValues:
    """A `values()` queryset made into SQL once, then run again with one parameter changed (the
    one given as `marker`): the dispatcher's catch-up read runs every pass, and making its SQL
    through the ORM (the JSON key lookups above all) cost more than running it. Rows come back
    through the query's own converters, as the queryset gives them."""

    def __init__(self, queryset: QuerySet, marker: Any, adapt: Callable[[Any], Any] | None = None) -> None:
        """`adapt`: what the database's operations make of the parameter (a datetime's
        `adapt_datetimefield_value`), applied to the marker and to each value run with."""
        self._db = queryset.db
        self._compiler = queryset.query.get_compiler(self._db)
        self._sql, params = self._compiler.as_sql()
        self._params = list(params)
        self._adapt = adapt or (lambda value: value)
        self._slot = self._params.index(self._adapt(marker))
        query = queryset.query
        self._names = [*query.extra_select, *query.values_select, *query.annotation_select]

    def rows(self, value: Any) -> list[dict[str, Any]]:
        params = list(self._params)
        params[self._slot] = self._adapt(value)
        with connections[self._db].cursor() as cursor:
            cursor.execute(self._sql, params)
            fetched = cursor.fetchall()
        return [dict(zip(self._names, row)) for row in self._compiler.results_iter(results=[fetched])]

    def rows_beside(self, head: str, head_params: list[Any], value: Any, order: tuple[str, ...]) -> tuple[tuple, list[dict[str, Any]]]:
        """`rows(value)` and the one row of `head` (an aggregate), read by one statement in one
        snapshot (a round trip less); the rows ordered by the columns `order` names."""
        params = list(self._params)
        params[self._slot] = self._adapt(value)
        sql = (f"SELECT head.*, body.* FROM ({head}) AS head LEFT JOIN ({self._sql}) AS body ON 1 = 1"
               " ORDER BY " + ", ".join(f"body.{name}" for name in order))
        with connections[self._db].cursor() as cursor:
            cursor.execute(sql, [*head_params, *params])
            fetched = cursor.fetchall()
        width = len(fetched[0]) - len(self._names)
        body = [row[width:] for row in fetched if row[width + self._names.index(order[-1])] is not None]
        return fetched[0][:width], [dict(zip(self._names, row)) for row in self._compiler.results_iter(results=[body])]


def pending_from_rows(rows: list[dict[str, Any]], terms: Mapping[int, Terms], weights: Mapping[int, float]) -> list[PendingJob]:
    return [_pending(row, row, terms.get(row["owner_id"]), weights[row["tenant_id"]]) for row in rows]
