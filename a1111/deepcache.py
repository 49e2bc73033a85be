"""DeepCache step caching as A1111's "sd-webui-deepcache" extension offers it: its options, and what each pass runs (pure).

DeepCache (Ma, Fang & Wang, 2023) reuses a UNet's deep features between denoising steps: on a
"cached" step the UNet runs only its shallow blocks, down to a cache level and back up, and takes
what the deeper blocks gave at the last full step; every `full_run_step_rate`-th call runs the whole
UNet and refreshes the cache. The A1111 extension (aria1th/sd-webui-deepcache-standalone, its
January 2024 master) registers these options, which a request's `override_settings` or the member's
own options set, as for A1111's own options:

| option | default | meaning |
|---|---|---|
| `deepcache_enable_pass` | "disable" | "disable", "second pass" (the hires fix's only), "both passes" |
| `deepcache_enable` | False | the extension's December 2023 switch: on is "both passes" |
| `deepcache_cache_resnet_level` | 0 | the cache level: the last of the UNet's LDM input blocks a cached step still runs (0-10; deeper = fewer blocks cached) |
| `deepcache_cache_enable_step_percentage` | 0.4 | the first pass's share of steps that run in full before caching starts |
| `deepcache_full_run_step_rate` | 5 | every call whose index is a multiple of this runs in full (below 1: no caching) |
| `deepcache_cache_enable_step_percentage_hr` | 0.0 | the same share for the hires pass (of its own steps) |

The extension counts UNet calls from -1 (`i`): a call is cached when `i > int(share × steps)` and
`i % full_run_step_rate != 0`, counting again from -1 in the hires pass. It ships no paste fields
other than `DeepCache pass` (its `deepcache_enable_pass` infotext), which the infotext gets when a
pass caches. Not offered: `deepcache_hr_reuse` (the extension's carrying of the first pass's cache
into the hires pass, at another size).

A cache level must name an input block the checkpoint's UNet has: SD 1.x and 2.x have 12 (0-11),
SDXL 9 (0-8); the parser takes the extension's slider, 0-10, and `job_submit` refuses a level past
an SDXL UNet's last block (the extension silently uses the last one instead).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from a1111.errors import RequestValidationError
from a1111.fields import read_bool, read_float, read_int, read_str

__all__ = [
    "DEEPCACHE_OPTIONS", "DEEPCACHE_PASSES", "MAX_FULL_RUN_STEP_RATE", "MAX_RESNET_LEVEL", "DeepCachePass",
    "INFOTEXT_LABEL", "deepcache_mode", "deepcache_pass", "input_block_count", "parse_deepcache_options",
]

DEEPCACHE_PASSES = ("disable", "second pass", "both passes")  # the extension's `deepcache_enable_pass` choices
MAX_RESNET_LEVEL = 10  # the extension's slider
MAX_FULL_RUN_STEP_RATE = 1000  # likewise
# The extension's options and their defaults, in its settings' order (`deepcache_enable` from its earlier release)
DEEPCACHE_OPTIONS: Mapping[str, Any] = MappingProxyType({
    "deepcache_enable": False,
    "deepcache_enable_pass": "disable",
    "deepcache_cache_resnet_level": 0,
    "deepcache_cache_enable_step_percentage": 0.4,
    "deepcache_full_run_step_rate": 5,
    "deepcache_cache_enable_step_percentage_hr": 0.0,
})
INFOTEXT_LABEL = "DeepCache pass"  # the extension's infotext for `deepcache_enable_pass`


@dataclass(frozen=True)
class DeepCachePass:
    """How one pass's UNet caches (`runtime/deepcache.py`): cached calls run the LDM input blocks
    0..`level` and their output blocks; a call with index `i` (from -1) is cached when
    `i > enable_after` and `i % full_run_step_rate != 0`."""

    level: int
    enable_after: int
    full_run_step_rate: int


def parse_deepcache_options(override_settings: Mapping[str, Any]) -> dict[str, Any]:
    """The extension's options from `override_settings` (the member's options merged in), checked:
    a `RequestValidationError` naming the key (call it inside `fields_of("override_settings")`)."""
    enable_pass = read_str(override_settings, "deepcache_enable_pass", "disable", 20)
    if enable_pass not in DEEPCACHE_PASSES:
        raise RequestValidationError(
            "deepcache_enable_pass", f"must be one of {', '.join(DEEPCACHE_PASSES)}, got {enable_pass!r:.40}"
        )
    return {
        "deepcache_enable": read_bool(override_settings, "deepcache_enable", False),
        "deepcache_enable_pass": enable_pass,
        "deepcache_cache_resnet_level": read_int(override_settings, "deepcache_cache_resnet_level", 0, 0, MAX_RESNET_LEVEL),
        "deepcache_cache_enable_step_percentage": read_float(
            override_settings, "deepcache_cache_enable_step_percentage", 0.4, 0.0, 1.0
        ),
        "deepcache_full_run_step_rate": read_int(
            override_settings, "deepcache_full_run_step_rate", 5, 0, MAX_FULL_RUN_STEP_RATE
        ),
        "deepcache_cache_enable_step_percentage_hr": read_float(
            override_settings, "deepcache_cache_enable_step_percentage_hr", 0.0, 0.0, 1.0
        ),
    }


def deepcache_mode(enable: bool, enable_pass: str) -> str:
    """Which passes cache: `deepcache_enable_pass`, or "both passes" where only the earlier
    release's `deepcache_enable` is on."""
    if enable_pass != "disable":
        return enable_pass
    return "both passes" if enable else "disable"


def deepcache_pass(*, level: int, share: float, steps: int, full_run_step_rate: int) -> DeepCachePass | None:
    """A pass of `steps` steps caching at `level` after `share` of them (None: the rate turns it off,
    as the extension does not hook the UNet below a rate of 1, and at 1 no call would be cached)."""
    if full_run_step_rate <= 1:
        return None
    return DeepCachePass(level=level, enable_after=int(share * steps), full_run_step_rate=full_run_step_rate)


def input_block_count(family: str) -> int | None:
    """How many LDM input blocks a checkpoint family's UNet has (the cache levels 0..n-1), None if unknown."""
    return {"sd1": 12, "sd2": 12, "sdxl": 9, "sdxl-refiner": 12}.get(family)
