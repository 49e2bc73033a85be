"""The NSFW censor (a tiny random-weight safety checker) and seamless tiling, in the worker runtime."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from a1111.samplers import resolve_sampler
from runtime.engine import WorkerRuntime
from runtime.safety import (
    SafetyChecker,
    SafetyCheckerMissing,
    censor_image,
    write_tiny_safety_checker,
)
from runtime.specs import GenerationSpec
from runtime.tiling import seamless
from runtime.tiny.model import write_tiny_checkpoint


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("safety")
    checkpoint = write_tiny_checkpoint(folder / "tiny.safetensors")
    euler = resolve_sampler("Euler")
    spec = GenerationSpec(
        checkpoint_path=str(checkpoint), checkpoint_sha256="tiny", prompts=["a"] * 2, negative_prompts=[""] * 2,
        seeds=[1, 2], steps=3, cfg_scale=7.0, width=64, height=64, max_batch=8,
        scheduler_class=euler.scheduler_class, scheduler_kwargs=euler.scheduler_kwargs,
    )
    return folder, spec


def px(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def roughness(image: Image.Image) -> float:
    """Mean difference between horizontal neighbours: high for the tiny model's noisy images, ~0 when blurred."""
    return float(np.abs(np.diff(px(image), axis=1)).mean())


@pytest.mark.parametrize("flag_everything", [True, False])
def test_the_checker_flags_by_its_thresholds_and_the_runtime_blurs_what_it_flags(setup, flag_everything) -> None:
    folder, spec = setup
    checker_dir = write_tiny_safety_checker(folder / f"checker-{flag_everything}", flag_everything=flag_everything)
    runtime = WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=folder / "cache", safety_checker_dir=checker_dir)
    images = runtime.generate(spec)
    censored, flags = runtime.censor(list(images))
    assert flags == [flag_everything, flag_everything]
    for before, after in zip(images, censored, strict=True):
        if flag_everything:
            assert after.size == before.size
            assert roughness(after) < roughness(before) / 4
        else:
            assert after is before


def test_the_checker_reads_any_image_size_and_skips_cancelled_slots(setup) -> None:
    folder, _ = setup
    checker = SafetyChecker(write_tiny_safety_checker(folder / "any", flag_everything=True),
                            device=torch.device("cpu"), dtype=torch.float32)
    assert checker.flagged([Image.new("RGB", (300, 64), "red"), Image.new("L", (64, 500))]) == [True, True]
    assert checker.flagged([]) == []
    runtime = WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=folder / "cache", safety_checker_dir=folder / "any")
    images, flags = runtime.censor([None, Image.new("RGB", (64, 64))])
    assert images[0] is None and flags == [False, True]


def test_censor_on_without_a_checker_model_is_an_error_that_says_where_it_goes(setup) -> None:
    folder, _ = setup
    runtime = WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=folder / "cache",
                            safety_checker_dir=folder / "nothing-here")
    with pytest.raises(SafetyCheckerMissing, match="nothing-here"):
        runtime.censor([Image.new("RGB", (64, 64))])
    off = WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=folder / "cache")
    image = Image.new("RGB", (64, 64))
    assert off.censor([image]) == ([image], [False])


def test_censor_image_leaves_nothing_recognisable() -> None:
    checker = Image.fromarray((np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)).convert("RGB")
    assert roughness(censor_image(checker)) < 5 < roughness(checker)


def test_tiling_makes_the_image_wrap_around(setup) -> None:
    """With circular padding the model is shift-equivariant: rolling the starting noise by 8 latent
    pixels (the UNet's downsampling factor) rolls the image by 64 pixels, exactly: that is what
    "tiles seamlessly" means."""
    folder, spec = setup
    runtime = WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=folder / "cache")
    pipeline = runtime.pipelines.get(spec.checkpoint_path, spec.checkpoint_sha256)
    latents = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(5))

    def image(noise: torch.Tensor) -> np.ndarray:
        out = pipeline(prompt="a", num_inference_steps=3, width=128, height=128, latents=noise, output_type="np").images
        return out[0]

    rolled = torch.roll(latents, shifts=8, dims=-1)
    with seamless(pipeline.unet, pipeline.vae):
        tiled, tiled_rolled = image(latents), image(rolled)
    assert np.abs(np.roll(tiled, 64, axis=1) - tiled_rolled).max() < 1e-3
    plain, plain_rolled = image(latents), image(rolled)  # padding restored: edges are edges again
    assert np.abs(np.roll(plain, 64, axis=1) - plain_rolled).max() > 1e-2
    assert all(layer.padding_mode == "zeros" for layer in pipeline.unet.modules() if isinstance(layer, torch.nn.Conv2d))


def test_tiling_through_the_runtime_changes_the_image_and_is_reproducible(setup) -> None:
    folder, spec = setup
    runtime = WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=folder / "cache")
    plain = runtime.generate(spec)
    tiled = runtime.generate(dataclasses.replace(spec, tiling=True))
    again = runtime.generate(dataclasses.replace(spec, tiling=True))
    assert np.abs(px(tiled[0]) - px(plain[0])).mean() > 1
    assert np.array_equal(px(tiled[0]), px(again[0]))
    assert np.array_equal(px(runtime.generate(spec)[0]), px(plain[0]))
