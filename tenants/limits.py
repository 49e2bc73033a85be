"""The quota and limit vocabulary: which limits exist, how a set of them is written, and how a
member's own limits are held within their tenant's plan. Pure: no database.

A `Limits` is what an operator sets on a plan (`Plan.limits`) and what a tenant admin sets on one
member (`Membership.limits`), stored as JSON with the keys below; a key left out is "no limit".
The limit that applies to a member is the lower of the two (`Limits.tightened_by`), and a tenant
admin cannot set a member's limit above the plan's (`Limits.check_within`).

Keys:
- `user_gpu_seconds_per_{minute,hour,day,month}`, `user_images_per_{…}`: one member's use in the
  current calendar minute / hour / day / month of the tenant's time zone (it resets at the next one).
- `tenant_gpu_seconds_per_{…}`, `tenant_images_per_{…}`: the whole team's (plan only).
- `user_queued_jobs`, `user_running_jobs`, `tenant_queued_jobs`, `tenant_running_jobs`: jobs at once.
- `max_pixels` (width × height of one image), `max_steps`, `max_batch_size` (images in one job).
- `user_storage_bytes` (a member's working directory plus their open uploads into it) and
  `tenant_storage_bytes` (every member's working directory plus the team folder, plan only): checked
  when an upload starts (`tenants/uploads.py`), with its declared size, before anything is stored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

Window = Literal["minute", "hour", "day", "month"]
WINDOWS: tuple[Window, ...] = ("minute", "hour", "day", "month")
METRICS = ("gpu_seconds", "images")
SCOPES = ("user", "tenant")

RATE_KEYS: tuple[str, ...] = tuple(
    f"{scope}_{metric}_per_{window}" for scope in SCOPES for metric in METRICS for window in WINDOWS
)
CONCURRENCY_KEYS: tuple[str, ...] = ("user_queued_jobs", "user_running_jobs", "tenant_queued_jobs", "tenant_running_jobs")
REQUEST_KEYS: tuple[str, ...] = ("max_pixels", "max_steps", "max_batch_size")
STORAGE_KEYS: tuple[str, ...] = ("user_storage_bytes", "tenant_storage_bytes")
ALL_KEYS: tuple[str, ...] = RATE_KEYS + CONCURRENCY_KEYS + REQUEST_KEYS + STORAGE_KEYS
# What a tenant admin may set for one member: the member's own limits, never the team's.
MEMBER_KEYS: tuple[str, ...] = tuple(key for key in ALL_KEYS if not key.startswith("tenant_"))
FLOAT_KEYS = frozenset(key for key in RATE_KEYS if "_gpu_seconds_" in key)

LABELS: dict[str, str] = {
    **{
        f"{scope}_{metric}_per_{window}": f"{'GPU-seconds' if metric == 'gpu_seconds' else 'images'} per {window}"
        f"{' (whole team)' if scope == 'tenant' else ''}"
        for scope in SCOPES for metric in METRICS for window in WINDOWS
    },
    "user_queued_jobs": "queued jobs at once",
    "user_running_jobs": "running jobs at once",
    "tenant_queued_jobs": "queued jobs at once (whole team)",
    "tenant_running_jobs": "running jobs at once (whole team)",
    "max_pixels": "pixels per image (width × height)",
    "max_steps": "sampling steps per job",
    "max_batch_size": "images per job",
    "user_storage_bytes": "storage in bytes (working directory and open uploads)",
    "tenant_storage_bytes": "storage in bytes (whole team: members' and team folders)",
}


class InvalidLimits(ValueError):
    """A limits object that cannot be used; `key` names the offending entry (None: the whole object)."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


@dataclasses.dataclass(frozen=True)
class Limits:
    """A set of limits; `values` maps a key of `ALL_KEYS` to its bound (absent: unlimited)."""

    values: Mapping[str, float] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_json(cls, data: object, *, allowed: tuple[str, ...] = ALL_KEYS) -> Limits:
        """Parse stored or submitted limits. `None` and "" values mean "no limit" and are dropped.
        `InvalidLimits` for an unknown key, a negative number or a fraction where counts are whole."""
        if data is None:
            return cls({})
        if not isinstance(data, Mapping):
            raise InvalidLimits("limits must be an object of limit names to numbers")
        values: dict[str, float] = {}
        for key, raw in data.items():
            if key not in allowed:
                raise InvalidLimits(f"unknown limit {key!r}; known: {', '.join(allowed)}", key=str(key))
            if raw is None or raw == "":
                continue
            if isinstance(raw, bool) or not isinstance(raw, int | float | str):
                raise InvalidLimits(f"{key} must be a number", key=key)
            try:
                number = float(raw)
            except ValueError:
                raise InvalidLimits(f"{key} must be a number, not {raw!r}", key=key) from None
            if number != number or number in (float("inf"), float("-inf")) or number < 0:
                raise InvalidLimits(f"{key} must be 0 or more", key=key)
            if key not in FLOAT_KEYS:
                if number != int(number):
                    raise InvalidLimits(f"{key} must be a whole number", key=key)
                number = int(number)
            values[key] = number
        return cls(values)

    def to_json(self) -> dict[str, float]:
        return {key: self.values[key] for key in ALL_KEYS if key in self.values}

    def get(self, key: str) -> float | None:
        return self.values.get(key)

    def tightened_by(self, other: Limits) -> Limits:
        """The lower bound of each key set in either."""
        merged = dict(self.values)
        for key, bound in other.values.items():
            merged[key] = min(bound, merged[key]) if key in merged else bound
        return Limits(merged)

    def check_within(self, plan: Limits) -> None:
        """`InvalidLimits` for a key above the plan's bound for it (a member's limit within the plan)."""
        for key, bound in self.values.items():
            ceiling = plan.values.get(key)
            if ceiling is not None and bound > ceiling:
                raise InvalidLimits(
                    f"{LABELS[key]}: {bound:g} is above the plan's {ceiling:g}; ask an operator for a larger plan",
                    key=key,
                )
