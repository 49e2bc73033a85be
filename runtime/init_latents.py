"""What img2img and inpainting start from in latent space: variation seeds and the latent fills (no Django).

A1111 noises an img2img init latent with the same noise as txt2img (the seed's, moved towards the
subseed's by `subseed_strength`), and for "Masked content" latent noise (2) / latent nothing (3)
first replaces the masked part of the init latent with the seed's noise or with zeros
(`init_latent * mask + noise * nmask`); its `initial_noise_multiplier` scales that noise. diffusers' img2img and inpaint pipelines draw that noise
themselves and take no noise argument (the inpaint pipeline's `latents=` replaces the image, not
the noise), so `starting_latents` hooks one pipeline call instead:

* the scheduler's `add_noise(init_latents, noise, t)`: `noise` is what the pipeline drew from each
  image's own generator (the seed's noise); it is slerped towards each image's subseed noise (the
  same draw of a generator seeded with the subseed, so strength 1 is the subseed's noise) and,
  with "Resize seed from", redrawn at that size in its middle, as txt2img's; and,
  while the pipeline prepares its latents, the masked area of `init_latents` is filled first;
* `prepare_latents`, for inpainting at strength 1, where the latents are the noise alone;
* `prepare_mask_latents`, for A1111's `latent_mask`: a 4-channel UNet's pipeline blends the init
  latents back under that mask at every step instead of under the image mask (which still decides
  what is pasted back), and the latent fills use it too.

Both are instance attributes of the pipeline object and scheduler the engine builds for this one
call (`WorkerRuntime._pipeline_for`), never of the cached modules, and are removed on exit.
Without a variation strength, a seed resize, a latent fill and a noise multiplier nothing is hooked: the image is exactly the
plain img2img one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from runtime.img2img import LATENT_NOISE, LATENT_NOTHING, PreparedImage
from runtime.noise import image_noise
from runtime.specs import GenerationSpec


@dataclass(frozen=True)
class Variation:
    """Variation seeds and "Resize seed from" for one chunk: each image's seed and subseed, and the
    generators the pipeline draws each image's noise from (to find which of their draws it was)."""

    subseeds: tuple[int, ...]
    seeds: tuple[int, ...]
    generators: tuple[torch.Generator, ...]
    strength: float
    resize_from: tuple[int, int] | None = None  # (width, height) in pixels
    scale: int = 8  # the VAE's: pixels per latent


@dataclass(frozen=True)
class StartingLatents:
    """How one chunk's init latents are noised: `variation`, and a latent fill (2 or 3) under each
    image's latent-size mask ([images, 1, h, w], 1 = repaint; all 0 for an image without a mask)."""

    variation: Variation | None = None
    fill: int | None = None
    fill_masks: torch.Tensor | None = None
    noise_multiplier: float = 1.0  # A1111's `initial_noise_multiplier`: the starting noise scaled by it
    # A1111's `latent_mask`: each image's mask of the per-step latent blend ([images, 1, h, w]; the
    # rows of images without one are NaN and keep the pipeline's own), for 4-channel UNets
    blend_masks: torch.Tensor | None = None

    @property
    def active(self) -> bool:
        return (
            self.variation is not None or self.fill_masks is not None or self.noise_multiplier != 1.0
            or self.blend_masks is not None
        )


MAX_DRAWS = 8  # an img2img pipeline draws twice per image before noising (the VAE's sample, then the noise)


def draws_so_far(generator: torch.Generator, seed: int, shape: tuple[int, ...]) -> int:
    """How many `shape` tensors a fresh generator seeded `seed` draws to reach `generator`'s state
    (1 if none of the first MAX_DRAWS does: then the noise is taken as the first draw)."""
    state = generator.get_state()
    probe = torch.Generator(device="cpu").manual_seed(seed)
    for count in range(1, MAX_DRAWS + 1):
        torch.randn(shape, generator=probe)
        if torch.equal(probe.get_state(), state):
            return count
    return 1


def varied(noise: torch.Tensor, variation: Variation) -> torch.Tensor:
    """`noise` (the seeds' noise as the pipeline drew it, one row per image) made into each image's
    A1111 noise (`runtime.noise.image_noise`): moved towards the subseed's, drawn the same way (the
    same draw of a generator seeded with the subseed, so strength 1 is the subseed's noise), and
    with a seed resize drawn at that size in the middle. On the CPU in float32; returned on
    `noise`'s device and dtype."""
    shape = (1, *noise.shape[1:])
    rows = []
    for index, (seed, subseed, generator) in enumerate(
        zip(variation.seeds, variation.subseeds, variation.generators, strict=True)
    ):
        base = noise[index:index + 1].detach().to(device="cpu", dtype=torch.float32)
        rows.append(image_noise(
            shape, seed, subseed, variation.strength, resize_from=variation.resize_from, scale=variation.scale,
            draw=draws_so_far(generator, seed, shape), base=base,
        ))
    return torch.cat(rows).to(device=noise.device, dtype=noise.dtype)


def latent_fill_masks(masks: Sequence[Image.Image | None], *, latent_size: tuple[int, int], round_mask: bool) -> torch.Tensor:
    """A1111's `latmask`: each prepared mask resized to the latent size (bicubic), 0..1, rounded
    with mask rounding on; an image without a mask repaints nothing (all zeros)."""
    width, height = latent_size
    rows = []
    for mask in masks:
        if mask is None:
            rows.append(np.zeros((height, width), dtype=np.float32))
            continue
        values = np.asarray(mask.convert("RGB").resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)[..., 0] / 255.0
        rows.append(np.around(values) if round_mask else values)
    return torch.from_numpy(np.stack(rows))[:, None]


def filled(init_latents: torch.Tensor, noise: torch.Tensor, fill: int, masks: torch.Tensor) -> torch.Tensor:
    """The init latents with their masked area replaced: by the seed's `noise` (latent noise) or zeros (latent nothing)."""
    repaint = masks.to(device=init_latents.device, dtype=init_latents.dtype)
    keep = init_latents * (1 - repaint)
    if fill == LATENT_NOISE:
        return keep + noise.to(init_latents.dtype) * repaint
    if fill == LATENT_NOTHING:
        return keep
    raise ValueError(f"only the latent fills ({LATENT_NOISE}, {LATENT_NOTHING}) work on latents, not {fill!r}")


@contextmanager
def starting_latents(pipeline: Any, plan: StartingLatents) -> Iterator[None]:
    """Hook `pipeline` (one call's own object, see the module docstring) so its starting latents follow `plan`."""
    if not plan.active:
        yield
        return
    scheduler = pipeline.scheduler
    add_noise, prepare_latents = scheduler.add_noise, pipeline.prepare_latents
    state: dict[str, Any] = {"preparing": False, "noise": None, "varied": None}

    def vary(noise: torch.Tensor) -> torch.Tensor:
        variation = plan.variation
        if variation is None and plan.noise_multiplier == 1.0:
            return noise
        if state["noise"] is not noise:  # the inpaint loop re-noises with the same tensor every step
            own = noise if variation is None else varied(noise, variation)
            state["noise"], state["varied"] = noise, own * plan.noise_multiplier if plan.noise_multiplier != 1.0 else own
        return state["varied"]

    def hooked_add_noise(original: torch.Tensor, noise: torch.Tensor, timesteps: Any) -> torch.Tensor:
        if state["preparing"] and plan.fill_masks is not None and plan.fill is not None:
            original = filled(original, noise, plan.fill, plan.fill_masks)
        return add_noise(original, vary(noise), timesteps)

    def hooked_prepare_latents(*args: Any, **kwargs: Any) -> Any:
        state["preparing"] = True
        try:
            out = prepare_latents(*args, **kwargs)
        finally:
            state["preparing"] = False
        if kwargs.get("is_strength_max") and isinstance(out, tuple) and len(out) > 1 and kwargs.get("latents") is None:
            # inpainting at strength 1: the latents are the (varied) noise alone; the noise handed
            # back stays the seed's, which the loop's add_noise varies the same way
            out = (vary(out[1]) * scheduler.init_noise_sigma, *out[1:])
        return out

    prepare_mask_latents = getattr(pipeline, "prepare_mask_latents", None)

    def hooked_prepare_mask_latents(*args: Any, **kwargs: Any) -> Any:
        # A 4-channel UNet's pipeline blends the init latents back under this mask at every step
        # (A1111's `init_latent * mask + nmask * x`); a 9-channel inpainting UNet is conditioned on
        # the image mask and keeps it.
        mask, masked = prepare_mask_latents(*args, **kwargs)
        blend = plan.blend_masks
        assert blend is not None
        if pipeline.unet.config.in_channels == 4:
            own = blend.to(device=mask.device, dtype=mask.dtype)
            copies = mask.shape[0] // own.shape[0]  # 2 with classifier-free guidance
            mask = torch.where(torch.isnan(own.repeat(copies, 1, 1, 1)), mask, own.repeat(copies, 1, 1, 1))
        return mask, masked

    scheduler.add_noise = hooked_add_noise
    pipeline.prepare_latents = hooked_prepare_latents
    if plan.blend_masks is not None and prepare_mask_latents is not None:
        pipeline.prepare_mask_latents = hooked_prepare_mask_latents
    try:
        yield
    finally:
        del scheduler.add_noise
        del pipeline.prepare_latents
        if "prepare_mask_latents" in vars(pipeline):
            del pipeline.prepare_mask_latents


def chunk_plan(
    pipeline: Any, spec: GenerationSpec, chunk: range, prepared: Sequence[PreparedImage], generators: Sequence[torch.Generator],
    *, inpaint: bool,
) -> StartingLatents:
    """An img2img chunk's plan: its variation seeds and seed resize, and (inpainting) its latent fill."""
    assert spec.img2img is not None
    scale = pipeline.vae_scale_factor
    plan = StartingLatents(noise_multiplier=spec.img2img.noise_multiplier)
    if spec.subseed_strength > 0 or spec.seed_resize_from:
        plan = dataclasses.replace(plan, variation=Variation(
            subseeds=tuple(spec.subseeds[i] if spec.subseeds else 0 for i in chunk), seeds=tuple(spec.seeds[i] for i in chunk),
            generators=tuple(generators), strength=spec.subseed_strength, resize_from=spec.seed_resize_from, scale=scale,
        ))
    fill = spec.img2img.inpaint.inpainting_fill
    latent_size = (spec.width // scale, spec.height // scale)
    # A1111's `latent_mask` stands in for the (prepared) mask in latent space, where an image has both
    latent = [
        spec.img2img.latent_masks[i] if spec.img2img.latent_masks and prepared[i].mask is not None else None for i in chunk
    ]
    if inpaint and fill in (LATENT_NOISE, LATENT_NOTHING):
        masks = latent_fill_masks(
            [own if own is not None else prepared[i].mask for own, i in zip(latent, chunk, strict=True)],
            latent_size=latent_size, round_mask=spec.img2img.inpaint.mask_round,
        )
        plan = dataclasses.replace(plan, fill=fill, fill_masks=masks)
    if inpaint and any(own is not None for own in latent):
        blend = latent_fill_masks(latent, latent_size=latent_size, round_mask=spec.img2img.inpaint.mask_round)
        unset = torch.tensor([own is None for own in latent])
        blend[unset] = float("nan")
        plan = dataclasses.replace(plan, blend_masks=blend)
    return plan
