"""SD upscale (tiles img2img'd and blended back), img2img variation seeds and seed resize, and the
latent inpaint fills, on the tiny model (64x64 tiles, 2 denoising steps)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from a1111.samplers import resolve_sampler
from a1111.sd_upscale import combine_tiles, split_tiles, tile_count, tile_grid, tile_seed
from runtime.engine import WorkerRuntime
from runtime.noise import drawn, image_noise
from runtime.img2img import LATENT_NOISE, LATENT_NOTHING, ORIGINAL, InpaintSettings
from runtime.specs import GenerationSpec, Img2ImgInputs, SdUpscaleSpec
from runtime.tiny.model import write_tiny_checkpoint


@pytest.fixture(scope="module")
def runtime(tmp_path_factory) -> tuple[WorkerRuntime, Path]:
    folder = tmp_path_factory.mktemp("sd-upscale")
    checkpoint = write_tiny_checkpoint(folder / "tiny.safetensors")
    return WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=folder / "cache"), checkpoint


def pattern(size: int = 64) -> Image.Image:
    grid = np.indices((size, size)).sum(axis=0) % 16 < 8
    return Image.fromarray(np.stack([grid * 220, (~grid) * 180, np.full((size, size), 60)], -1).astype(np.uint8))


def img2img(checkpoint: Path, seed: int, **changes) -> GenerationSpec:
    choice = resolve_sampler("Euler")
    inputs = Img2ImgInputs(
        init_images=[pattern()], masks=[changes.pop("mask", None)], denoising_strength=0.5,
        inpaint=changes.pop("inpaint", InpaintSettings()),
    )
    base = GenerationSpec(
        checkpoint_path=str(checkpoint), checkpoint_sha256="tiny", prompts=["a floor"], negative_prompts=[""],
        seeds=[seed], steps=4, cfg_scale=7.0, width=64, height=64, max_batch=4,
        scheduler_class=choice.scheduler_class, scheduler_kwargs=choice.scheduler_kwargs, img2img=inputs,
    )
    return dataclasses.replace(base, **changes)


def px(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_the_tile_grid_splits_and_combines_as_a1111(runtime) -> None:
    grid = tile_grid(128, 128, tile_w=64, tile_h=64, overlap=16)
    assert grid.rows[0] == ((0, 0), (32, 0), (64, 0))  # ceil((128-16)/48) = 3 tiles, spread evenly, edges flush
    assert [row[0][1] for row in grid.rows] == [0, 32, 64]
    picture = pattern(128)
    assert np.array_equal(px(combine_tiles(split_tiles(picture, grid), grid)), px(picture))  # unchanged tiles: the image
    assert tile_count(128, 128, tile_w=64, tile_h=64, overlap=0) == 4
    assert tile_count(40, 40, tile_w=64, tile_h=64, overlap=16) == 1  # a tile bigger than the image
    # A1111's seeds: batches of 2 tiles, each batch one seed on, its tiles counting from there
    assert [tile_seed(10, k, 2, variation=False) for k in range(5)] == [10, 11, 11, 12, 12]
    assert [tile_seed(10, k, 2, variation=True) for k in range(5)] == [10, 10, 11, 11, 12]


def test_sd_upscale_doubles_the_image_through_its_tiles_and_counts_every_tile_step(runtime) -> None:
    rt, checkpoint = runtime
    run = SdUpscaleSpec(scale_factor=2, overlap=0, upscaler="Lanczos", batch_size=3)
    spec = img2img(checkpoint, 7, sd_upscale=run, subseeds=[1])
    steps: list[tuple[int, int]] = []
    out = rt.generate(spec, on_step=lambda chunk, step: steps.append((chunk, step)))
    assert len(out) == 1 and out[0].size == (128, 128)
    # 4 tiles in 2 pipeline calls (3 + 1) of int(4 x 0.5) = 2 steps each, all counted in the image's chunk
    assert steps == [(0, 0), (0, 1), (0, 2), (0, 2), (0, 3), (0, 4)]
    # every tile was denoised: each quarter differs from the plain Lanczos upscale
    lanczos = px(pattern().resize((128, 128), Image.Resampling.LANCZOS))
    for x, y in ((0, 0), (64, 0), (0, 64), (64, 64)):
        assert np.abs(px(out[0])[y:y + 64, x:x + 64] - lanczos[y:y + 64, x:x + 64]).mean() > 5
    # the top-left tile is the plain img2img of that quarter with the run's seed
    tile = rt.generate(img2img(checkpoint, 7, img2img=dataclasses.replace(
        spec.img2img, init_images=[Image.fromarray(lanczos[:64, :64].astype(np.uint8))]
    )))[0]
    assert np.abs(px(out[0])[:64, :64] - px(tile)).max() <= 2


def test_img2img_variation_seeds_move_the_noise_towards_the_subseed(runtime) -> None:
    rt, checkpoint = runtime
    today = px(rt.generate(img2img(checkpoint, 5))[0])
    assert np.array_equal(px(rt.generate(img2img(checkpoint, 5, subseeds=[77], subseed_strength=0.0))[0]), today)
    varied = px(rt.generate(img2img(checkpoint, 5, subseeds=[77], subseed_strength=0.5))[0])
    subseed_image = px(rt.generate(img2img(checkpoint, 77))[0])
    assert np.abs(varied - today).mean() > 3 and np.abs(varied - subseed_image).mean() > 3
    again = px(rt.generate(img2img(checkpoint, 5, subseeds=[77], subseed_strength=0.5))[0])
    assert np.array_equal(again, varied)
    # "Resize seed from": the seed's noise drawn as for a 32x32 image, in the middle; its own size changes nothing
    assert np.array_equal(px(rt.generate(img2img(checkpoint, 5, seed_resize_from=(64, 64)))[0]), today)
    assert np.abs(px(rt.generate(img2img(checkpoint, 5, seed_resize_from=(32, 32)))[0]) - today).mean() > 3


def test_seed_resize_draws_the_noise_at_the_other_size_in_the_middle() -> None:
    full, small, big = drawn(3, (1, 4, 8, 8)), drawn(3, (1, 4, 4, 4)), drawn(3, (1, 4, 16, 16))
    smaller = image_noise((1, 4, 8, 8), 3, 0, 0.0, resize_from=(32, 32))
    assert torch.equal(smaller[:, :, 2:6, 2:6], small)
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[2:6, 2:6] = False
    assert torch.equal(smaller[0, :, outside], full[0, :, outside])
    assert torch.equal(image_noise((1, 4, 8, 8), 3, 0, 0.0, resize_from=(128, 128)), big[:, :, 4:12, 4:12])
    assert torch.equal(image_noise((1, 4, 8, 8), 3, 0, 0.0, resize_from=(64, 64)), full)
    varied = image_noise((1, 4, 8, 8), 3, 9, 1.0, resize_from=(32, 32))  # strength 1: the subseed's, at that size
    assert torch.allclose(varied[:, :, 2:6, 2:6], drawn(9, (1, 4, 4, 4)), atol=1e-5)


def test_latent_noise_and_latent_nothing_fill_the_init_latents_and_keep_the_unmasked_pixels(runtime) -> None:
    rt, checkpoint = runtime
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    hole = np.asarray(mask) == 255

    def inpainted(fill: int) -> np.ndarray:
        settings = InpaintSettings(mask_blur_x=0, mask_blur_y=0, inpaint_full_res=False, inpainting_fill=fill)
        return px(rt.generate(img2img(checkpoint, 3, mask=mask, inpaint=settings))[0])

    original, noise, nothing = inpainted(ORIGINAL), inpainted(LATENT_NOISE), inpainted(LATENT_NOTHING)
    for a, b in ((noise, original), (nothing, original), (noise, nothing)):
        assert np.abs(a - b)[hole].mean() > 5
    for result in (noise, nothing):
        assert np.array_equal(result[~hole], px(pattern())[~hole])
    assert np.array_equal(inpainted(LATENT_NOISE), noise)  # the seed's noise: reproducible


def test_a_latent_mask_replaces_the_mask_of_the_latent_blend(runtime) -> None:
    """A1111's `latent_mask`: the per-step blend keeps the init latents where it is black, whatever
    the image mask repaints; so with an all-black latent mask the prompt no longer matters."""
    rt, checkpoint = runtime
    everything = Image.new("L", (64, 64), 255)
    nothing = Image.new("L", (64, 64), 0)
    settings = InpaintSettings(mask_blur_x=0, mask_blur_y=0, inpaint_full_res=False)

    def inpaint(seed: int, latent_mask: Image.Image | None, prompt: str = "a floor") -> np.ndarray:
        spec = img2img(checkpoint, seed, mask=everything, inpaint=settings, prompts=[prompt])
        inputs = dataclasses.replace(spec.img2img, latent_masks=[latent_mask] if latent_mask else [])
        return px(rt.generate(dataclasses.replace(spec, img2img=inputs))[0])

    plain = inpaint(1, None)
    assert not np.array_equal(plain, inpaint(1, None, "a red car"))
    kept = inpaint(1, nothing)
    assert np.array_equal(kept, inpaint(1, nothing, "a red car")) and not np.array_equal(kept, plain)
    assert int(np.abs(inpaint(1, everything) - plain).max()) <= 1  # the same mask: the same image
