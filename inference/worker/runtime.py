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

@dataclass(frozen=True)
class Txt2ImgSpec:
    """One pipeline batch: shared settings, and one prompt, negative prompt and seed per image.

    The images may come from several jobs (cross-user batching): every image has its own
    generator, so an image depends on its own seed and prompt, not on its neighbours.
    """

    checkpoint_path: str
    checkpoint_sha256: str
    prompts: list[str]
    negative_prompts: list[str]
    seeds: list[int]
    steps: int
    cfg_scale: float
    width: int
    height: int
    max_batch: int  # images per pipeline call; more images run as successive chunks
    scheduler_class: str
    scheduler_kwargs: dict[str, Any] = field(default_factory=dict)

    def chunks(self) -> list[range]:
        return [range(start, min(start + self.max_batch, len(self.seeds))) for start in range(0, len(self.seeds), self.max_batch)]


class SkipChunk(Exception):
    """Raised by a step callback: abandon the current chunk (all its images were cancelled)."""


# Called with (chunk index, steps done in that chunk): 0 before the chunk starts, then after each step.
StepCallback = Callable[[int, int], None]


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

    def txt2img(self, spec: Txt2ImgSpec, on_step: StepCallback | None = None) -> list[Image.Image | None]:
        """Images in the order of `spec.seeds`; None for the images of a skipped chunk."""
        pipeline = self._pipeline_for(spec)
        images: list[Image.Image | None] = []
        for chunk_index, chunk in enumerate(spec.chunks()):

            def step_end(pipe, step_index, timestep, callback_kwargs, _chunk=chunk_index):
                if on_step is not None:
                    on_step(_chunk, step_index + 1)
                return callback_kwargs

            # One generator per image, seeded with its own seed: an image does not depend on
            # its batch neighbours or its position (A1111's "seed + i" convention).
            generators = [torch.Generator(device="cpu").manual_seed(spec.seeds[i]) for i in chunk]
            try:
                if on_step is not None:
                    on_step(chunk_index, 0)
                with torch.inference_mode():
                    result = pipeline(
                        prompt=[spec.prompts[i] for i in chunk],
                        negative_prompt=[spec.negative_prompts[i] for i in chunk],
                        num_inference_steps=spec.steps,
                        guidance_scale=spec.cfg_scale,
                        width=spec.width,
                        height=spec.height,
                        generator=generators,
                        callback_on_step_end=step_end,
                        output_type="pil",
                    )
            except SkipChunk:
                images.extend([None] * len(chunk))
                continue
            images.extend(result.images)
        return images
