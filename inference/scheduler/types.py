"""The scheduler's vocabulary: plain, immutable data (no Django, no torch).

The Django layer (`inference/dispatch.py`) and the simulator (`bench/scheduler_sim.py`) build
these from their own worlds and call the same `plan_assignments`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PendingJob:
    job_id: int
    owner_id: int
    tenant_id: int
    submitted_at: float  # seconds on the caller's clock (epoch, or simulated time)
    model_key: str  # what must be in device memory: `keys.model_key`, the checkpoint sha256 (no VAE); "" for none
    network_key: str  # `keys.network_key`: the extra networks (LoRAs with weights, hypernetworks, embeddings); "" for none
    batch_key: str  # jobs with equal batch keys may share one pipeline (UNet) batch
    images: int  # images the job produces (batch_size × n_iter)
    steps: int
    pixels: int  # width × height
    priority: int = 0  # orders only this owner's own jobs; higher first
    tenant_weight: float = 1.0  # the tenant's plan weight in fair share
    # the owner's and tenant's own caps on jobs running at once (their plan's and member limits:
    # `user_running_jobs`, `tenant_running_jobs`), within the config's; None: the config's alone
    user_running_cap: int | None = None
    tenant_running_cap: int | None = None


@dataclass(frozen=True)
class WorkerState:
    worker_id: int
    free: bool  # can start a batch now
    max_batch: int  # images per pipeline call
    resident_models: tuple[str, ...] = ()  # model keys in device memory, least recently used first
    cached_models: tuple[str, ...] = ()  # model keys in host RAM (a cheap load)
    active_networks: str = ""  # network key of the set still loaded from its last batch; "" for none
    busy_until: float | None = None  # expected end of its current batch; None when idle
    busy_model: str | None = None  # model key of the batch it is running


@dataclass(frozen=True)
class FairShareState:
    """Recent service, as decayed GPU-seconds, and what is running now."""

    user_service: Mapping[int, float] = field(default_factory=dict)
    tenant_service: Mapping[int, float] = field(default_factory=dict)
    running_per_user: Mapping[int, int] = field(default_factory=dict)
    running_per_tenant: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PolicyConfig:
    max_running_per_user: int = 8  # jobs dispatched or running at once, per user (≥ a worker's max batch)
    max_running_per_tenant: int = 16
    # A job whose model is warm on a busy worker waits up to this long for it rather than
    # loading the model on an idle cold worker.
    affinity_grace_s: float = 5.0
    # Affinity and batching may reorder the queue, but no job is passed over once it has
    # waited this long: it is then placed strictly by fair share.
    max_reorder_wait_s: float = 60.0
    service_half_life_s: float = 300.0  # how fast past service is forgotten


@dataclass(frozen=True)
class Assignment:
    worker_id: int
    job_ids: tuple[int, ...]  # one pipeline batch: equal batch keys, ≤ max_batch images (a lone job may exceed it)
    load_model: bool = False  # the worker must load the model first (informational)
