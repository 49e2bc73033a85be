"""Prometheus metrics of the platform, read from the database at scrape time.

`PlatformCollector` is a custom `prometheus_client` collector: every scrape of `/metrics`
(`config/observability.py`) runs a handful of aggregate queries and reports what the rows say,
so every web process answers the same numbers and none keeps a counter of its own (no global
mutable state; a restarted web process loses nothing). Counters here are counts of rows: they
only go down when rows are deleted, which Prometheus' `rate()` reads as a counter reset.

| metric | type | labels | meaning |
|---|---|---|---|
| `atelier_queue_depth` | gauge | `tenant`, `model_group` | jobs queued (waiting for a worker) |
| `atelier_queue_oldest_wait_seconds` | gauge | `tenant`, `model_group` | age of the oldest queued job |
| `atelier_jobs` | gauge | `status` | jobs in the database by status (queued … cancelled) |
| `atelier_job_duration_seconds` | histogram | | GPU seconds of each succeeded job |
| `atelier_images_total` | counter | `tenant` | images generated (from the usage records) |
| `atelier_job_failures_total` | counter | `reason` | failed jobs by reason (`failure_reason`) |
| `atelier_workers` | gauge | `state` | registered workers by state (online … dead) |
| `atelier_workers_online` | gauge | | online workers with a recent heartbeat (what dispatch uses) |
| `atelier_workers_busy` | gauge | | of those, the ones holding a dispatched or running job |
| `atelier_worker_busy_fraction` | gauge | | busy / online (0 when none is online) |
| `atelier_model_loads_total` | counter | `worker` | checkpoints this worker's life loaded from disk |
| `atelier_model_restores_total` | counter | `worker` | checkpoints moved back from its host RAM tier |
| `atelier_model_cache_hits_total` | counter | `worker` | batches whose checkpoint was on its device already |
| `atelier_model_blob_fetches_total` | counter | `worker` | model blobs its host cache fetched from object storage |
| `atelier_model_blob_fetched_bytes_total` | counter | `worker` | their bytes |
| `atelier_model_blob_cache_hits_total` | counter | `worker` | model files its host cache answered without a fetch |

The `atelier_model_*` counters are each worker process's own, as its last heartbeat or finished
batch reported them (`Worker.model_counters`); a worker that restarts starts again from 0, which
`rate()` reads as a counter reset. Workers offline or dead keep their last report until they come back.

`model_group` is what a worker must hold to run the job: the checkpoint's title for txt2img and
img2img, `extras` for Extras jobs, `promptgen` for prompt expansion, `interrogate` for
interrogate jobs (`model_group`). The
autoscaler scales a worker pool on `sum(atelier_queue_depth{model_group=~"…"})` (docker/README.md).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from django.db.models import Case, CharField, Count, Min, Q, Sum, Value, When
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from inference.dispatch import live_workers
from inference.models import Job, Worker

DURATION_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)

# (reason label, how the job's error starts or what it contains), first match wins.
FAILURE_REASONS = (
    ("attempts_exhausted", Q(error__contains="gave up after")),
    ("out_of_memory", Q(error__icontains="out of memory")),
    ("extras_error", Q(error__startswith="extras failed")),
    ("promptgen_error", Q(error__startswith="prompt expansion failed")),
    ("interrogate_error", Q(error__startswith="interrogate failed")),
)
OTHER_FAILURE = "generation_error"


# (key in `Worker.model_counters`, metric name without `_total`, help)
MODEL_COUNTERS = (
    ("loads", "atelier_model_loads", "Checkpoints loaded from disk by each worker process."),
    ("restores", "atelier_model_restores", "Checkpoints moved back from host RAM by each worker process."),
    ("hits", "atelier_model_cache_hits", "Batches whose checkpoint was already on the worker's device."),
    ("blob_fetches", "atelier_model_blob_fetches", "Model blobs fetched from object storage by each worker process."),
    ("blob_fetched_bytes", "atelier_model_blob_fetched_bytes", "Bytes of the model blobs fetched from object storage."),
    ("blob_hits", "atelier_model_blob_cache_hits", "Model files the worker's host cache answered without a fetch."),
)


def _count(value: object) -> int:
    """A reported counter as a non-negative integer (a row edited by hand reads as 0, never a 500)."""
    try:
        return max(0, int(value))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0


def model_group(kind: str, checkpoint_title: str) -> str:
    if kind == Job.Kind.EXTRAS:
        return "extras"
    if kind == Job.Kind.PROMPTGEN:
        return "promptgen"
    if kind == Job.Kind.INTERROGATE:
        return "interrogate"
    return checkpoint_title or "unknown"


def failure_reason_expression() -> Case:
    return Case(*(When(condition, then=Value(reason)) for reason, condition in FAILURE_REASONS),
                default=Value(OTHER_FAILURE), output_field=CharField())


class PlatformCollector:
    """What the rows say now (see the module docstring for each metric)."""

    def collect(self) -> Iterator[Metric]:
        yield from self._queue()
        yield from self._jobs()
        yield from self._workers()

    def _queue(self) -> Iterator[Metric]:
        now = timezone.now()
        depth: dict[tuple[str, str], int] = defaultdict(int)
        oldest: dict[tuple[str, str], float] = {}
        rows = (Job.objects.filter(status=Job.Status.QUEUED).order_by()
                .values("tenant__slug", "kind", "checkpoint_title").annotate(n=Count("id"), first=Min("created_at")))
        for row in rows:
            key = (row["tenant__slug"], model_group(row["kind"], row["checkpoint_title"]))
            depth[key] += row["n"]
            oldest[key] = max(oldest.get(key, 0.0), (now - row["first"]).total_seconds())
        queue_depth = GaugeMetricFamily("atelier_queue_depth", "Jobs waiting for a worker.", labels=["tenant", "model_group"])
        wait = GaugeMetricFamily("atelier_queue_oldest_wait_seconds", "Age of the oldest queued job.",
                                 labels=["tenant", "model_group"])
        for key in sorted(depth):
            queue_depth.add_metric(list(key), depth[key])
            wait.add_metric(list(key), oldest[key])
        yield queue_depth
        yield wait

    def _jobs(self) -> Iterator[Metric]:
        from tenants.models import UsageRecord

        by_status = dict(Job.objects.order_by().values_list("status").annotate(n=Count("id")))
        jobs = GaugeMetricFamily("atelier_jobs", "Jobs in the database by status.", labels=["status"])
        for status in Job.Status.values:
            jobs.add_metric([status], by_status.get(status, 0))
        yield jobs

        succeeded = Job.objects.filter(status=Job.Status.SUCCEEDED)
        counts = succeeded.aggregate(
            total=Count("id"), seconds=Sum("gpu_seconds"),
            **{f"le_{i}": Count("id", filter=Q(gpu_seconds__lte=bound)) for i, bound in enumerate(DURATION_BUCKETS)},
        )
        buckets = [(str(bound), counts[f"le_{i}"]) for i, bound in enumerate(DURATION_BUCKETS)]
        buckets.append(("+Inf", counts["total"]))
        yield HistogramMetricFamily("atelier_job_duration_seconds", "GPU seconds of each succeeded job.",
                                    buckets=buckets, sum_value=counts["seconds"] or 0.0)

        images = CounterMetricFamily("atelier_images", "Images generated, from the usage records.", labels=["tenant"])
        for slug, total in UsageRecord.objects.order_by().values_list("tenant__slug").annotate(n=Sum("images")):
            images.add_metric([slug], total or 0)
        yield images

        failures = CounterMetricFamily("atelier_job_failures", "Failed jobs by reason.", labels=["reason"])
        reasons = dict(Job.objects.filter(status=Job.Status.FAILED).order_by()
                       .annotate(reason=failure_reason_expression()).values_list("reason").annotate(n=Count("id")))
        for reason in [r for r, _ in FAILURE_REASONS] + [OTHER_FAILURE]:
            failures.add_metric([reason], reasons.get(reason, 0))
        yield failures

    def _workers(self) -> Iterator[Metric]:
        by_state = dict(Worker.objects.order_by().values_list("state").annotate(n=Count("id")))
        workers = GaugeMetricFamily("atelier_workers", "Registered workers by state.", labels=["state"])
        for state in Worker.State.values:
            workers.add_metric([state], by_state.get(state, 0))
        yield workers
        online = live_workers().count()
        busy = (live_workers().filter(jobs__status__in=[Job.Status.DISPATCHED, Job.Status.RUNNING])
                .order_by().values("pk").distinct().count())
        yield GaugeMetricFamily("atelier_workers_online", "Online workers with a recent heartbeat.", value=online)
        yield GaugeMetricFamily("atelier_workers_busy", "Online workers holding a dispatched or running job.", value=busy)
        yield GaugeMetricFamily("atelier_worker_busy_fraction", "Busy online workers / online workers.",
                                value=busy / online if online else 0.0)
        yield from self._model_counters()

    def _model_counters(self) -> Iterator[Metric]:
        families = [(key, CounterMetricFamily(name, help_text, labels=["worker"])) for key, name, help_text in MODEL_COUNTERS]
        for name, counters in Worker.objects.order_by("name").values_list("name", "model_counters"):
            counters = counters if isinstance(counters, dict) else {}
            for key, family in families:
                family.add_metric([name], _count(counters.get(key)))
        for _, family in families:
            yield family
