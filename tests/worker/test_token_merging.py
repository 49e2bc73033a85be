"""A1111's token merging (`runtime/token_merging.py`) on the tiny model: on for one call, off after."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from a1111.samplers import resolve_sampler
from runtime.engine import WorkerRuntime
from runtime.specs import GenerationSpec, HiresSpec
from runtime.tiny.model import build_tiny_components, write_tiny_checkpoint
from runtime.token_merging import TokenMergingError, token_merging


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tome")
    checkpoint = write_tiny_checkpoint(folder / "tiny.safetensors")
    euler = resolve_sampler("Euler")
    spec = GenerationSpec(
        checkpoint_path=str(checkpoint), checkpoint_sha256="tiny", prompts=["a cat", "a dog"], negative_prompts=["", ""],
        seeds=[1, 2], steps=2, cfg_scale=7.0, width=64, height=64, max_batch=8,
        scheduler_class=euler.scheduler_class, scheduler_kwargs=euler.scheduler_kwargs,
    )
    return WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=folder / "cache"), spec


def pixels(images: list[Image.Image | None]) -> list[np.ndarray]:
    return [np.asarray(image) for image in images if image is not None]


def unet_state(unet: torch.nn.Module) -> list[tuple[str, type, tuple[str, ...], int, int]]:
    """Each module's name, class, own attribute names and hook counts: what a patch could leave behind."""
    return [
        (name, type(module), tuple(sorted(vars(module))), len(module._forward_pre_hooks), len(module._forward_hooks))
        for name, module in unet.named_modules()
    ]


@pytest.fixture(scope="module")
def unet() -> torch.nn.Module:
    return build_tiny_components()["unet"]


def test_the_patch_is_on_inside_the_with_only_and_off_after_an_exception(unet) -> None:
    before = unet_state(unet)
    sample, timestep, context = torch.randn(1, 4, 8, 8), torch.tensor(10), torch.randn(1, 77, 32)
    with torch.no_grad():
        plain = unet(sample, timestep, context).sample
        with token_merging(unet, 0.5):
            assert any(type(module).__name__ == "ToMeBlock" for module in unet.modules())
            merged = unet(sample, timestep, context).sample
        assert unet_state(unet) == before
        with pytest.raises(RuntimeError, match="cancelled"), token_merging(unet, 0.5):
            raise RuntimeError("cancelled")
        assert unet_state(unet) == before
        assert torch.equal(unet(sample, timestep, context).sample, plain)
    assert not torch.equal(merged, plain)  # an 8x8 latent has 64 tokens at the top level: 32 merged


def test_a_ratio_out_of_range_is_refused_before_touching_the_unet(unet) -> None:
    before = unet_state(unet)
    for ratio in (-0.1, 0.95, True, "0.5"):
        with pytest.raises(TokenMergingError, match="from 0 to 0.9"), token_merging(unet, ratio):
            pass
    assert unet_state(unet) == before


def test_ratio_zero_is_the_same_image_and_a_ratio_changes_it(setup) -> None:
    runtime, spec = setup
    plain = pixels(runtime.generate(spec))
    assert all(np.array_equal(a, b) for a, b in zip(pixels(runtime.generate(dataclasses.replace(spec, token_merging_ratio=0.0))), plain, strict=True))
    merged = pixels(runtime.generate(dataclasses.replace(spec, token_merging_ratio=0.5)))
    assert all(not np.array_equal(a, b) for a, b in zip(merged, plain, strict=True))
    # the cached UNet comes back unpatched: the next batch without the option is the first one again
    assert all(np.array_equal(a, b) for a, b in zip(pixels(runtime.generate(spec)), plain, strict=True))


def test_the_hires_pass_takes_its_own_ratio(setup) -> None:
    runtime, spec = setup
    one = dataclasses.replace(spec, prompts=["a cat"], negative_prompts=[""], seeds=[1])
    hires = HiresSpec(width=96, height=96, upscaler="Latent", steps=2, denoising_strength=0.7)
    plain = pixels(runtime.generate(dataclasses.replace(one, hires=hires)))[0]
    first_only = pixels(runtime.generate(dataclasses.replace(one, hires=hires, token_merging_ratio=0.5)))[0]
    second_only = pixels(runtime.generate(
        dataclasses.replace(one, hires=dataclasses.replace(hires, token_merging_ratio=0.5))
    ))[0]
    assert first_only.shape == second_only.shape == (96, 96, 3)
    assert not np.array_equal(first_only, plain) and not np.array_equal(second_only, plain)
    assert not np.array_equal(first_only, second_only)


def test_a_cancelled_chunk_leaves_the_cached_unet_unpatched(setup) -> None:
    from runtime.engine import SkipChunk

    runtime, spec = setup
    unet = runtime.pipelines.get(spec.checkpoint_path, spec.checkpoint_sha256).unet
    before = unet_state(unet)

    def cancel(chunk_index: int, steps_done: int) -> None:
        if steps_done == 1:  # inside the pipeline call, with the patch on
            assert any(type(module).__name__ == "ToMeBlock" for module in unet.modules())
            raise SkipChunk()

    assert runtime.generate(dataclasses.replace(spec, token_merging_ratio=0.5), on_step=cancel) == [None, None]
    assert unet_state(unet) == before
