"""What the worker runtime keeps loaded between batches (no Django).

`PipelineCache` holds whole checkpoints (on the device, then in host RAM); `LruCache` holds a
few small models by content hash (hypernetworks, upscalers, embeddings, face models), and
`VaeCache` the standalone VAE files converted for a checkpoint, on top of it. Each drops its
least recently used entry first; `WorkerRuntime` (runtime.py) owns one of each.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Generic, TypeVar

import diffusers
import torch

from runtime.acceleration import Acceleration, apply_to_pipeline
from runtime.checkpoints.loading import load_pipeline
from runtime.networks.lora import LoraSet
from runtime.checkpoints.vae import load_vae_file

T = TypeVar("T")

logger = logging.getLogger(__name__)


class PipelineCache:
    """Least-recently-used pipelines in two tiers, keyed by the checkpoint's content hash.

    Up to `capacity` pipelines live on the device, ready to run. On a GPU, one pushed out of
    the device moves to host RAM (up to `host_capacity` of them, PAI's `--sd-dynamic-cache`)
    instead of being dropped, because moving it back takes a fraction of a load from disk; the
    least recently used leave host RAM first, and any leave while less than `min_ram_reserved`
    bytes of the machine's memory would stay available (PAI's `--min-ram-reserved`). What each
    tier holds is reported to the scheduler (`loaded()`, `cached()`), which prefers a worker
    holding a job's checkpoint. On a CPU device RAM is the device: `WorkerRuntime` then asks
    for no host tier.
    """

    def __init__(
        self,
        *,
        capacity: int,
        device: torch.device,
        dtype: torch.dtype,
        config_cache_dir: Path,
        acceleration: Acceleration | None = None,
        host_capacity: int = 0,
        min_ram_reserved: int = 0,
    ) -> None:
        self.capacity = max(1, capacity)
        self.host_capacity = max(0, host_capacity)
        self.min_ram_reserved = min_ram_reserved
        self.device, self.dtype, self.config_cache_dir = device, dtype, config_cache_dir
        self.acceleration = acceleration or Acceleration()
        self._pipelines: OrderedDict[str, diffusers.StableDiffusionPipeline] = OrderedDict()  # on the device
        self._host: OrderedDict[str, diffusers.StableDiffusionPipeline] = OrderedDict()  # in host RAM
        self._loras: dict[str, LoraSet] = {}  # the LoRA adapters loaded into each cached pipeline
        self._pairs: OrderedDict[tuple[str, str], None] = OrderedDict()  # (base, refiner) pairs run, recent last
        # What this cache did, for the worker's report (`counts`): a batch's checkpoint found on the
        # device (`acquire`), loaded from disk, or moved back from host RAM.
        self.hits = 0
        self.loads = 0  # from disk
        self.restores = 0  # from host RAM

    def acquire(self, path: str, sha256: str) -> diffusers.StableDiffusionPipeline:
        """`get` for a batch's own checkpoint, counted once per batch: a hit when it was on the device
        (a load or a restore is counted by `get` itself)."""
        if sha256 in self._pipelines:
            self.hits += 1
        return self.get(path, sha256)

    def counts(self) -> dict[str, int]:
        """Checkpoint uses since this cache was made: `hits` (on the device already), `loads` (from
        disk), `restores` (from host RAM)."""
        return {"hits": self.hits, "loads": self.loads, "restores": self.restores}

    def get(self, path: str, sha256: str) -> diffusers.StableDiffusionPipeline:
        pipeline = self._pipelines.get(sha256)
        if pipeline is not None:
            self._pipelines.move_to_end(sha256)
            return pipeline
        started = time.perf_counter()
        pipeline = self._host.pop(sha256, None)
        if pipeline is not None:
            pipeline.to(self.device)
            self.restores += 1
            logger.info("moved %s from host RAM to %s in %.2fs", path, self.device, time.perf_counter() - started)
        else:
            self._make_room_in_ram()
            pipeline = load_pipeline(Path(path), cache_dir=self.config_cache_dir, device=str(self.device), dtype=self.dtype)
            pipeline.set_progress_bar_config(disable=True)
            applied = apply_to_pipeline(pipeline, self.acceleration, self.device)
            self.loads += 1
            logger.info("loaded %s in %.2fs (%s)", path, time.perf_counter() - started, applied)
        self._pipelines[sha256] = pipeline
        while len(self._pipelines) > self.capacity:
            self._evict_from_device()
        return pipeline

    def _evict_from_device(self) -> None:
        evicted, pipeline = self._pipelines.popitem(last=False)
        if self.host_capacity:
            pipeline.to("cpu")
            self._host[evicted] = pipeline
            while len(self._host) > self.host_capacity:
                self._drop_from_host()
            logger.info("moved %s from %s to host RAM", evicted, self.device)
        else:
            self._loras.pop(evicted, None)
            logger.info("evicted %s from the pipeline cache", evicted)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _drop_from_host(self) -> None:
        dropped, _ = self._host.popitem(last=False)
        self._loras.pop(dropped, None)
        logger.info("dropped %s from host RAM", dropped)

    def _make_room_in_ram(self) -> None:
        """Before a load from disk: leave host RAM until `min_ram_reserved` bytes would stay available."""
        while self._host and self.min_ram_reserved and (available_ram_bytes() or 0) < self.min_ram_reserved:
            self._drop_from_host()

    def loaded(self) -> list[str]:
        """Checkpoints on the device, least recently used first."""
        return list(self._pipelines)

    def note_pair(self, base_sha256: str, refiner_sha256: str) -> None:
        """A batch ran `base` with `refiner` (or with a hires checkpoint; both loaded through `get`):
        reported by `loaded_pairs`."""
        self._pairs[(base_sha256, refiner_sha256)] = None
        self._pairs.move_to_end((base_sha256, refiner_sha256))
        while len(self._pairs) > 4 * self.capacity:
            self._pairs.popitem(last=False)

    def loaded_pairs(self) -> list[tuple[str, str]]:
        """The (base, refiner) pairs batches ran whose two checkpoints are both on the device now."""
        return [pair for pair in self._pairs if pair[0] in self._pipelines and pair[1] in self._pipelines]

    def cached(self) -> list[str]:
        """Checkpoints in host RAM, least recently used first."""
        return list(self._host)

    def loras_for(self, sha256: str) -> LoraSet:
        return self._loras.setdefault(sha256, LoraSet())

    def holds_loras(self, sha256: str, lora_sha256s: Iterable[str]) -> bool:
        """Whether checkpoint `sha256`'s cached pipeline still has all these LoRA adapters loaded."""
        loras = self._loras.get(sha256)
        return loras is not None and all(lora in loras for lora in lora_sha256s)


def available_ram_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux); None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class LruCache(Generic[T]):
    """A few loaded models by key, the least recently used dropped first past `capacity`."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[Hashable, T] = OrderedDict()

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        if key not in self._items:
            self._items[key] = load()
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        self._items.move_to_end(key)
        return self._items[key]

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def keys(self) -> list[Hashable]:
        """The keys held, least recently used first."""
        return list(self._items)


class VaeCache:
    """Standalone VAE files loaded for a checkpoint, least recently used first out (they are small)."""

    def __init__(self, *, capacity: int = 4) -> None:
        self._vaes: LruCache[diffusers.AutoencoderKL] = LruCache(capacity)

    def get(self, path: str, sha256: str, *, checkpoint_sha256: str, like: diffusers.AutoencoderKL) -> diffusers.AutoencoderKL:
        # Keyed by both hashes: the file is converted to the shape and dtype of that checkpoint's VAE.
        return self._vaes.get((sha256, checkpoint_sha256), lambda: load_vae_file(Path(path), like=like))
