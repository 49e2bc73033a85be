"""Reads for the operators' dashboard (`/ops/`, `frontend/usage_views.py`) that come from the
control plane's own rows: each worker's model cache counters (`Worker.model_counters`, as its last
heartbeat reported them) and a month's failed jobs by reason (the reasons `/metrics` uses,
`inference/metrics.py`), so the page and Prometheus say the same thing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count

from inference.metrics import FAILURE_REASONS, OTHER_FAILURE, failure_reason_expression
from inference.models import Job, Worker


@dataclass(frozen=True)
class WorkerModelCache:
    """One worker life's model loading so far (see `Worker.model_counters`)."""

    name: str
    state: str
    loads: int
    restores: int
    hits: int
    blob_fetches: int
    blob_fetched_bytes: int
    blob_hits: int

    @property
    def hit_fraction(self) -> float:
        """Of its batches' checkpoint uses, the share found on the device (0 with none)."""
        uses = self.hits + self.loads + self.restores
        return self.hits / uses if uses else 0.0


@dataclass(frozen=True)
class FailureCount:
    reason: str
    jobs: int


def _count(counters: object, key: str) -> int:
    value = counters.get(key) if isinstance(counters, dict) else None
    return value if isinstance(value, int) and value > 0 else 0


def model_cache_per_worker() -> list[WorkerModelCache]:
    """Every registered worker, by name, with its model cache counters (zeros before its first report)."""
    return [
        WorkerModelCache(
            name=name, state=state,
            **{key: _count(counters, key) for key in
               ("loads", "restores", "hits", "blob_fetches", "blob_fetched_bytes", "blob_hits")},
        )
        for name, state, counters in Worker.objects.order_by("name").values_list("name", "state", "model_counters")
    ]


def failures_by_reason(*, since: datetime, until: datetime) -> list[FailureCount]:
    """Jobs that failed between `since` (inclusive) and `until` (exclusive), by reason, every reason
    listed (zeros too) in `/metrics`' order."""
    counts = dict(
        Job.objects.filter(status=Job.Status.FAILED, finished_at__gte=since, finished_at__lt=until).order_by()
        .annotate(reason=failure_reason_expression()).values_list("reason").annotate(n=Count("id"))
    )
    return [FailureCount(reason, counts.get(reason, 0)) for reason in [r for r, _ in FAILURE_REASONS] + [OTHER_FAILURE]]
