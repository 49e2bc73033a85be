"""A1111's SDXL refiner, the arithmetic of the switch (no Django).

A1111 1.10 hands sampling to the refiner once `refiner_switch_at` of the way down the timesteps
(`sd_samplers_common.apply_refiner`: completed ratio = (999 - t) / 1000, unless the option
`refiner_switch_by_sample_steps` is set). diffusers' SDXL pipelines do the same split with
`denoising_end` on the base (its latents out, undecoded) and `denoising_start` on the refiner's
img2img pipeline (those latents in, no noise added). `WorkerRuntime` (`engine.py`) runs the two
calls; this module says where the switch falls and how the refiner is conditioned.
"""

from __future__ import annotations

import diffusers


def takes_aesthetic_score(pipeline: diffusers.DiffusionPipeline) -> bool:
    """Whether an SDXL UNet is conditioned on an aesthetic score (a refiner: 5 time ids, not a
    base's 6), read from its embedding width; diffusers then adds A1111's 6.0 / 2.5 defaults."""
    unet = pipeline.unet.config
    pooled = int(pipeline.text_encoder_2.config.projection_dim)
    return int(unet.projection_class_embeddings_input_dim) == 5 * int(unet.addition_time_embed_dim) + pooled


# diffusers takes `denoising_end`/`denoising_start` only strictly between 0 and 1: a switch at 0 is
# the base handing over its starting noise after no step.
_EARLIEST_SWITCH = 1e-4


def switch_point(switch_at: float) -> float:
    """`refiner_switch_at` as diffusers' `denoising_end` / `denoising_start` take it."""
    return float(min(max(switch_at, _EARLIEST_SWITCH), 1.0 - _EARLIEST_SWITCH))


def steps_before_switch(pipeline: diffusers.DiffusionPipeline, steps: int, strength: float, switch_at: float) -> int:
    """The steps of a pass the base model runs before the refiner takes over: those at timesteps
    ≥ (1 - switch_at) × the training steps, as A1111 1.10 (switching by timestep) and diffusers'
    `denoising_end` count them; an img2img pass starts `strength` of the way down its schedule."""
    scheduler = type(pipeline.scheduler).from_config(pipeline.scheduler.config)
    scheduler.set_timesteps(steps)
    first = max(steps - min(int(steps * strength), steps), 0) * int(getattr(scheduler, "order", 1))
    cutoff = int(round(scheduler.config.num_train_timesteps * (1 - switch_point(switch_at))))
    return int((scheduler.timesteps[first:] >= cutoff).sum())
