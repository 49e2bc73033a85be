"""Fair-share bookkeeping for the scheduler (pure): recent service with exponential decay.

Fair share ranks tenants and users by how much GPU time they have had *recently*. "Recently" is
an exponential decay: a GPU-second consumed `half_life_s` ago counts half, two half-lives ago a
quarter, and so on. The Django side feeds `decayed_service` with finished jobs (charged at their
finish time) and running ones (charged so far); the simulator feeds it the same way.

`estimated_gpu_seconds` is the policy's guess of what a job will cost before it runs. The policy
adds it to a user's service for every job it hands out in one call, so that one call never gives
every free worker to the same user.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

# GPU-seconds per denoising step of one 512×512 image. SD1.5 on an A10-class GPU runs a step of a
# batch of 8 in about 370 ms (46 ms per image); only ratios between jobs matter to the policy.
GPU_SECONDS_PER_STEP_512 = 0.05
PIXELS_512 = 512 * 512


def estimated_gpu_seconds(*, steps: int, pixels: int, images: int) -> float:
    """What a job should cost on a GPU: steps × images × (pixels / 512²), scaled to seconds."""
    return GPU_SECONDS_PER_STEP_512 * max(steps, 1) * max(images, 1) * max(pixels, 1) / PIXELS_512


def decayed_service(
    charges: Iterable[tuple[int, int, float, float]], *, now: float, half_life_s: float
) -> tuple[dict[int, float], dict[int, float]]:
    """Sum `(owner_id, tenant_id, gpu_seconds, at)` charges into decayed service per user and per tenant.

    Each charge counts `gpu_seconds × 2^(-(now - at) / half_life_s)`. A charge dated in the future
    (clock skew between machines) counts in full. Returns `(user_service, tenant_service)`.
    """
    if half_life_s <= 0:
        raise ValueError(f"half_life_s must be positive, got {half_life_s}")
    decay_rate = math.log(2.0) / half_life_s
    exp = math.exp
    user_service: dict[int, float] = {}
    tenant_service: dict[int, float] = {}
    for owner_id, tenant_id, gpu_seconds, at in charges:
        age = now - at
        weight = gpu_seconds * exp(-decay_rate * age) if age > 0 else gpu_seconds
        user_service[owner_id] = user_service.get(owner_id, 0.0) + weight
        tenant_service[tenant_id] = tenant_service.get(tenant_id, 0.0) + weight
    return user_service, tenant_service
