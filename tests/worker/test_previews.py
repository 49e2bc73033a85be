"""Live previews: the cheap latent-to-RGB picture, and the runtime handing it over every few steps."""

from __future__ import annotations

import numpy as np
import torch

from a1111.samplers import resolve_sampler
from runtime.previews import latent_preview
from runtime.engine import WorkerRuntime
from runtime.specs import GenerationSpec, HiresSpec
from runtime.tiny.model import write_tiny_checkpoint


def test_a_latent_becomes_a_small_rgb_picture_with_a1111s_coefficients() -> None:
    latents = torch.zeros(2, 4, 8, 16)
    latents[0, 0] = 1.0  # channel 0 alone: A1111's (0.298, 0.207, 0.208) → a grey-ish light colour
    image = latent_preview(latents)
    assert image.size == (64, 32) and image.mode == "RGB"
    assert tuple(np.asarray(image)[10, 10]) == (165, 154, 154)
    assert latent_preview(latents, xl=True).getpixel((0, 0)) != image.getpixel((0, 0))  # SDXL's own fit


def test_the_runtime_hands_over_previews_every_n_steps(tmp_path) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.safetensors")
    euler = resolve_sampler("Euler")
    spec = GenerationSpec(
        checkpoint_path=str(checkpoint), checkpoint_sha256="tiny", prompts=["a"] * 3, negative_prompts=[""] * 3,
        seeds=[1, 2, 3], steps=6, cfg_scale=7.0, width=64, height=64, max_batch=2,
        scheduler_class=euler.scheduler_class, scheduler_kwargs=euler.scheduler_kwargs,
    )
    runtime = WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=tmp_path / "cache", preview_every=2)
    previews: list[tuple[int, tuple[int, int]]] = []
    runtime.generate(spec, on_preview=lambda chunk, position, image: previews.append((chunk, image.size)))
    assert previews == [(0, (32, 32))] * 3 + [(1, (32, 32))] * 3  # steps 2, 4, 6 of each chunk
    previews.clear()
    hires = HiresSpec(width=128, height=128, upscaler="Latent", steps=4, denoising_strength=0.5)
    runtime.generate(GenerationSpec(**{**spec.__dict__, "hires": hires, "seeds": [1], "prompts": ["a"],
                                       "negative_prompts": [""]}), on_preview=lambda c, p, i: previews.append((c, i.size)))
    assert previews[-1] == (0, (64, 64))  # the hires pass previews at its own size
    silent = WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=tmp_path / "cache")
    silent.generate(spec, on_preview=lambda chunk, position, image: previews.append((chunk, image.size)))
    assert len(previews) == 5  # the 3 + 2 of the hires run above (its 4 steps); preview_every 0: none
