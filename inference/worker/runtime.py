"""The GPU worker runtime: a cache of loaded pipelines and txt2img on diffusers (no Django).

One `WorkerRuntime` is owned by each worker process (see `inference/tasks.py`). It takes
plain data (`Txt2ImgSpec`) and returns PIL images, calling `on_step` after every denoising
step; `on_step` raising stops generation there (that is how cancel works).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diffusers
import torch
from PIL import Image

from inference.worker.checkpoints import load_pipeline

logger = logging.getLogger(__name__)

StepCallback = Callable[[int], None]  # called with the number of steps done so far, over all batches


@dataclass(frozen=True)
class Txt2ImgSpec:
    checkpoint_path: str
    checkpoint_sha256: str
    prompt: str
    negative_prompt: str
    steps: int
    cfg_scale: float
    width: int
    height: int
    seeds: list[int]
    batch_size: int
    scheduler_class: str
    scheduler_kwargs: dict[str, Any] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


class PipelineCache:
    """Least-recently-used pipelines, keyed by the checkpoint's content hash."""

    def __init__(self, *, capacity: int, device: torch.device, dtype: torch.dtype, config_cache_dir: Path) -> None:
        self.capacity = max(1, capacity)
        self.device, self.dtype, self.config_cache_dir = device, dtype, config_cache_dir
        self._pipelines: OrderedDict[str, diffusers.StableDiffusionPipeline] = OrderedDict()
        self.loads = 0

    def get(self, path: str, sha256: str) -> diffusers.StableDiffusionPipeline:
        pipeline = self._pipelines.get(sha256)
        if pipeline is not None:
            self._pipelines.move_to_end(sha256)
            return pipeline
        started = time.perf_counter()
        pipeline = load_pipeline(Path(path), cache_dir=self.config_cache_dir, device=str(self.device), dtype=self.dtype)
        pipeline.set_progress_bar_config(disable=True)
        self.loads += 1
        logger.info("loaded %s in %.2fs", path, time.perf_counter() - started)
        self._pipelines[sha256] = pipeline
        while len(self._pipelines) > self.capacity:
            evicted, _ = self._pipelines.popitem(last=False)
            logger.info("evicted %s from the pipeline cache", evicted)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        return pipeline

    def loaded(self) -> list[str]:
        return list(self._pipelines)


class WorkerRuntime:
    def __init__(self, *, device: str = "auto", cache_size: int = 2, config_cache_dir: Path) -> None:
        self.device = resolve_device(device)
        self.dtype = default_dtype(self.device)
        self.pipelines = PipelineCache(
            capacity=cache_size, device=self.device, dtype=self.dtype, config_cache_dir=config_cache_dir
        )

    def describe_device(self) -> tuple[str, int | None]:
        if self.device.type == "cuda":
            props = torch.cuda.get_device_properties(self.device)
            return f"{self.device} ({props.name})", props.total_memory
        return str(self.device), None

    def _pipeline_for(self, spec: Txt2ImgSpec) -> diffusers.StableDiffusionPipeline:
        cached = self.pipelines.get(spec.checkpoint_path, spec.checkpoint_sha256)
        scheduler_cls = getattr(diffusers, spec.scheduler_class)
        scheduler = scheduler_cls.from_config(cached.scheduler.config, **spec.scheduler_kwargs)
        # A new pipeline object over the cached modules: the cache is never mutated per job.
        pipeline = diffusers.StableDiffusionPipeline(
            **{**cached.components, "scheduler": scheduler}, requires_safety_checker=False
        )
        pipeline.set_progress_bar_config(disable=True)
        return pipeline

    def txt2img(self, spec: Txt2ImgSpec, on_step: StepCallback | None = None) -> list[Image.Image]:
        pipeline = self._pipeline_for(spec)
        images: list[Image.Image] = []
        for batch_start in range(0, len(spec.seeds), spec.batch_size):
            seeds = spec.seeds[batch_start : batch_start + spec.batch_size]
            steps_before = (batch_start // spec.batch_size) * spec.steps

            def step_end(pipe, step_index, timestep, callback_kwargs, _before=steps_before):
                if on_step is not None:
                    on_step(_before + step_index + 1)
                return callback_kwargs

            # One generator per image, seeded with its own seed: an image does not depend on
            # its batch neighbours or its position (A1111's "seed + i" convention).
            generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]
            with torch.inference_mode():
                result = pipeline(
                    prompt=[spec.prompt] * len(seeds),
                    negative_prompt=[spec.negative_prompt] * len(seeds),
                    num_inference_steps=spec.steps,
                    guidance_scale=spec.cfg_scale,
                    width=spec.width,
                    height=spec.height,
                    generator=generators,
                    callback_on_step_end=step_end,
                    output_type="pil",
                )
            images.extend(result.images)
        return images
