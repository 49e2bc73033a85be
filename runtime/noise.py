"""Seeds, noise and latents: what makes an image depend on its own seed alone (no Django).

Every image of a batch draws its noise from its own CPU generator seeded with its own seed
(`image_generators`), so it does not depend on its batch neighbours, its position or the
device; variation seeds move that noise towards a subseed's and "Resize seed from" draws it at
another size (`image_noise`, A1111's `create_random_tensors`); A1111's eta noise seed delta
reseeds the sampler's own noise (`sampler_noise_seeds`); the hires fix's latent modes resize
latents (`upscale_latents`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch


def image_generators(seeds: Sequence[int], images: range) -> list[torch.Generator]:
    """One CPU generator per image of `images`, seeded with that image's seed (A1111's "seed + i")."""
    return [torch.Generator(device="cpu").manual_seed(seeds[i]) for i in images]


@contextmanager
def sampler_noise_seeds(pipeline: Any, seeds: Sequence[int], deltas: Sequence[int], images: range) -> Iterator[None]:
    """A1111's eta noise seed delta (ENSD) for one pipeline call over `images`: the starting noise
    comes from each image's seed as always, the noise the sampler adds at its steps from
    seed + delta (A1111 reseeds each image's generator after its first draw). Without a delta for
    these images nothing changes. The pipeline hands its steps the generators that
    `prepare_extra_step_kwargs` returns (it asks for them after drawing the starting noise), so
    that call is given the reseeded ones, for this call only."""
    wanted = [deltas[i] if i < len(deltas) else 0 for i in images]
    if not any(wanted):
        yield
        return
    original = pipeline.prepare_extra_step_kwargs

    def with_step_generators(generator: Any, eta: float) -> dict[str, Any]:
        # Called after the starting noise is drawn: an image without a delta goes on with its own
        # generator, one with a delta gets a generator seeded with seed + delta.
        own = generator if isinstance(generator, list) else [generator] * len(images)
        reseeded = [
            torch.Generator(device="cpu").manual_seed(seeds[i] + delta) if delta else own[position]
            for position, (i, delta) in enumerate(zip(images, wanted, strict=True))
        ]
        return original(reseeded, eta)

    pipeline.prepare_extra_step_kwargs = with_step_generators
    try:
        yield
    finally:
        del pipeline.prepare_extra_step_kwargs  # the class's own method again


def slerp(strength: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from `low` (strength 0) to `high` (strength 1), row by row."""
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * (1 - strength) + high * strength
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - strength) * omega) / so).unsqueeze(1) * low + (torch.sin(strength * omega) / so).unsqueeze(1) * high


def drawn(seed: int, shape: tuple[int, ...], draw: int = 1) -> torch.Tensor:
    """The `draw`-th `shape` tensor of a fresh CPU generator seeded `seed` (float32)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    for _ in range(draw):
        noise = torch.randn(shape, generator=generator)
    return noise


def image_noise(
    shape: tuple[int, int, int, int], seed: int, subseed: int, strength: float, *,
    resize_from: tuple[int, int] | None = None, scale: int = 8, draw: int = 1, base: torch.Tensor | None = None,
) -> torch.Tensor:
    """One image's starting noise (CPU, float32), as A1111's `create_random_tensors` makes it.

    The seed's noise, moved towards the subseed's by `strength` (slerp: 1 is the subseed's noise);
    with `resize_from` (A1111's "Resize seed from", (width, height) in pixels) both are drawn at that
    size / `scale` and pasted into the middle of the seed's full-size noise (cropped if bigger).
    `draw` is which draw of each generator the pipeline's noise is (an img2img pipeline draws the
    VAE's sample first); `base`, when given, is the seed's full-size noise as the pipeline drew it.
    `shape` is one image's latent shape, (1, channels, height, width).
    """
    noise_shape = shape if resize_from is None else (
        shape[0], shape[1], max(resize_from[1] // scale, 1), max(resize_from[0] // scale, 1)
    )
    full = base if base is not None else drawn(seed, shape, draw)
    noise = full if noise_shape == shape else drawn(seed, noise_shape, draw)
    if strength > 0:
        # A1111: slerp(strength, noise, subnoise), i.e. strength 1 is the subseed's noise
        noise = slerp(strength, noise.flatten(1), drawn(subseed, noise_shape, draw).flatten(1)).reshape(noise_shape)
    if noise_shape == shape:
        return noise
    result = full.clone()
    height, width = shape[2], shape[3]
    dy, dx = (height - noise_shape[2]) // 2, (width - noise_shape[3]) // 2
    h = noise_shape[2] if dy >= 0 else noise_shape[2] + 2 * dy
    w = noise_shape[3] if dx >= 0 else noise_shape[3] + 2 * dx
    ty, tx, sy, sx = max(dy, 0), max(dx, 0), max(-dy, 0), max(-dx, 0)
    result[:, :, ty:ty + h, tx:tx + w] = noise[:, :, sy:sy + h, sx:sx + w]
    return result


def variation_noise(
    shape: tuple[int, int, int, int], seeds: Sequence[int], subseeds: Sequence[int], strength: float, images: range,
    *, resize_from: tuple[int, int] | None = None, scale: int = 8,
) -> torch.Tensor:
    """Each image's starting noise for txt2img (on the CPU, float32): `image_noise` of its seed and subseed.

    Drawn exactly as diffusers draws it from a per-image CPU generator, so strength 0 without a
    seed resize is the plain seed's image. `shape` is one image's latent shape, (1, channels, height, width).
    """
    return torch.cat([
        image_noise(shape, seeds[i], subseeds[i] if subseeds else 0, strength, resize_from=resize_from, scale=scale)
        for i in images
    ])


LATENT_MODES = {  # A1111's latent upscale modes → torch interpolate (mode, antialias)
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}


def upscale_latents(latents: torch.Tensor, mode_name: str, *, width: int, height: int) -> torch.Tensor:
    """The hires fix's "Latent…" upscalers: latents resized to (`width`, `height`) / 8."""
    mode, antialias = LATENT_MODES[mode_name]
    size = (height // 8, width // 8)
    if mode in ("nearest", "nearest-exact"):
        return torch.nn.functional.interpolate(latents, size=size, mode=mode)
    return torch.nn.functional.interpolate(latents, size=size, mode=mode, antialias=antialias)
