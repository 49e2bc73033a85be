"""img2img, inpainting and VAE files in the worker runtime, on the tiny model: what each
setting does to the output, and that batching does not change any image."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from a1111.samplers import resolve_sampler
from runtime.img2img import InpaintSettings
from runtime.engine import WorkerRuntime
from runtime.specs import GenerationSpec, Img2ImgInputs
from runtime.tiny.model import write_tiny_checkpoint, write_tiny_vae


@pytest.fixture(scope="module")
def runtime(tmp_path_factory) -> tuple[WorkerRuntime, Path, Path]:
    folder = tmp_path_factory.mktemp("img2img")
    checkpoint = write_tiny_checkpoint(folder / "tiny.safetensors")
    vae = write_tiny_vae(folder / "vae.safetensors", seed=3)
    return WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=folder / "cache"), checkpoint, vae


def pattern(size: int = 64, shift: int = 0) -> Image.Image:
    grid = (np.indices((size, size)).sum(axis=0) + shift) % 16 < 8
    return Image.fromarray(np.stack([grid * 220, (~grid) * 180, np.full((size, size), 60)], -1).astype(np.uint8))


def square_mask(size: int = 64) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (16, 16, 48, 48))
    return mask


def spec(checkpoint: Path, seeds: list[int], inits: list[Image.Image] | None, **img2img) -> GenerationSpec:
    choice = resolve_sampler("Euler")
    inputs = None
    if inits is not None:
        masks = img2img.pop("masks", [None] * len(inits))
        inputs = Img2ImgInputs(init_images=inits, masks=masks, **{"denoising_strength": 0.6, **img2img})
    return GenerationSpec(
        checkpoint_path=str(checkpoint), checkpoint_sha256="tiny", prompts=["a floor"] * len(seeds),
        negative_prompts=[""] * len(seeds), seeds=seeds, steps=6, cfg_scale=7.0, width=64, height=64, max_batch=8,
        scheduler_class=choice.scheduler_class, scheduler_kwargs=choice.scheduler_kwargs, img2img=inputs,
    )


def px(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_img2img_depends_on_the_init_image_and_seed_not_on_batch_neighbours(runtime) -> None:
    rt, checkpoint, _ = runtime
    alone = rt.generate(spec(checkpoint, [5], [pattern()]))[0]
    assert alone.size == (64, 64)
    batched = rt.generate(spec(checkpoint, [9, 5], [pattern(shift=4), pattern()]))
    assert np.abs(px(batched[1]) - px(alone)).max() <= 2  # floating-point tolerance only
    assert np.abs(px(batched[0]) - px(alone)).max() > 10
    other_init = rt.generate(spec(checkpoint, [5], [pattern(shift=4)]))[0]
    assert np.abs(px(other_init) - px(alone)).max() > 10
    assert np.array_equal(px(rt.generate(spec(checkpoint, [5], [pattern()]))[0]), px(alone))  # reproducible


def test_denoising_strength_counts_steps_and_zero_returns_the_init_image(runtime) -> None:
    rt, checkpoint, _ = runtime
    steps: list[int] = []
    rt.generate(spec(checkpoint, [1], [pattern()], denoising_strength=0.5), on_step=lambda chunk, step: steps.append(step))
    assert steps == [0, 1, 2, 3]  # int(6 × 0.5) denoising steps, as A1111 runs them
    unchanged = rt.generate(spec(checkpoint, [1], [pattern()], denoising_strength=0.0))[0]
    assert np.array_equal(px(unchanged), px(pattern()))


def test_inpainting_repaints_the_mask_and_keeps_every_other_pixel(runtime) -> None:
    rt, checkpoint, _ = runtime
    for full_res in (True, False):
        settings = InpaintSettings(mask_blur_x=0, mask_blur_y=0, inpaint_full_res=full_res, inpainting_fill=1)
        result = rt.generate(spec(checkpoint, [3], [pattern()], masks=[square_mask()], denoising_strength=1.0, inpaint=settings))[0]
        before, after = px(pattern()), px(result)
        outside = np.asarray(square_mask()) == 0
        assert np.array_equal(after[outside], before[outside]), full_res
        assert np.abs(after[20:44, 20:44] - before[20:44, 20:44]).mean() > 10, full_res


def test_a_vae_file_changes_the_decoder_only(runtime) -> None:
    rt, checkpoint, vae = runtime
    plain = spec(checkpoint, [2], None)
    own = rt.generate(plain)[0]
    swapped = rt.generate(dataclasses.replace(plain, vae_path=str(vae), vae_sha256="v"))[0]
    assert not np.array_equal(px(own), px(swapped))
    assert np.array_equal(px(rt.generate(plain)[0]), px(own))  # the cached pipeline kept its own VAE
    assert rt.pipelines.loads == 1
