"""DeepCache step caching (`runtime/deepcache.py`) on the tiny model: deep blocks skipped on cached calls, on for one call, off after."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from a1111.deepcache import DeepCachePass
from a1111.samplers import resolve_sampler
from runtime.deepcache import DeepCacheError, deep_cache, deep_layers, input_block_count
from runtime.engine import WorkerRuntime
from runtime.specs import GenerationSpec, HiresSpec
from runtime.tiny.model import build_tiny_components, write_tiny_checkpoint


@pytest.fixture(scope="module")
def unet() -> torch.nn.Module:
    return build_tiny_components()["unet"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deepcache")
    checkpoint = write_tiny_checkpoint(folder / "tiny.safetensors")
    euler = resolve_sampler("Euler")
    spec = GenerationSpec(
        checkpoint_path=str(checkpoint), checkpoint_sha256="tiny", prompts=["a cat", "a dog"], negative_prompts=["", ""],
        seeds=[1, 2], steps=6, cfg_scale=7.0, width=64, height=64, max_batch=8,
        scheduler_class=euler.scheduler_class, scheduler_kwargs=euler.scheduler_kwargs,
    )
    return WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=folder / "cache"), spec


def unet_state(unet: torch.nn.Module) -> list[tuple[str, type, tuple[str, ...], int, int]]:
    """Each module's name, class, own attribute names and hook counts: what a patch could leave behind."""
    return [
        (name, type(module), tuple(sorted(vars(module))), len(module._forward_pre_hooks), len(module._forward_hooks))
        for name, module in unet.named_modules()
    ]


def pixels(images: list[Image.Image | None]) -> list[np.ndarray]:
    return [np.asarray(image) for image in images if image is not None]


class DeepCalls:
    """Counts the calls that reach the mid block's first resnet: only a full UNet call does."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.count = 0
        self.handle = unet.mid_block.resnets[0].register_forward_hook(self.seen)

    def seen(self, *args: object) -> None:
        self.count += 1


def test_cached_calls_skip_the_deep_blocks_and_reuse_the_last_full_calls_features(unet) -> None:
    sample, timestep, context = torch.randn(2, 4, 8, 8), torch.tensor(10), torch.randn(2, 77, 32)
    deep = DeepCalls(unet)
    before = unet_state(unet)
    try:
        with torch.no_grad():
            plain = unet(sample, timestep, context).sample
            deep.count = 0
            # the extension's schedule: calls -1 and 0 full, 1 and 2 cached, 3 full (3 % 3), 4 cached
            with deep_cache(unet, DeepCachePass(level=4, enable_after=-1, full_run_step_rate=3)) as state:
                outputs = [unet(sample, timestep, context).sample for _ in range(6)]
                assert (state.full, state.cached, deep.count) == (3, 3, 3)
                # a cached call of the same input gives the full call's output, bit for bit
                assert all(torch.equal(output, plain) for output in outputs)
                halved = unet(sample[1:], timestep, context[1:]).sample  # call 5 would be cached: another shape, so in full
                unet(sample, timestep, context)  # call 6: full (6 % 3)
                moved = unet(sample + 0.5, timestep, context).sample  # call 7: cached, the shallow blocks see the new input
                assert (state.full, state.cached, deep.count) == (5, 4, 5)
            assert unet_state(unet) == before
            assert not torch.equal(moved, plain) and not torch.equal(moved, unet(sample + 0.5, timestep, context).sample)
            assert torch.allclose(halved, plain[1:], atol=1e-5)
            with pytest.raises(RuntimeError, match="cancelled"), deep_cache(unet, DeepCachePass(0, -1, 2)):
                unet(sample, timestep, context)
                raise RuntimeError("cancelled")
            assert unet_state(unet) == before
            assert torch.equal(unet(sample, timestep, context).sample, plain)
    finally:
        deep.handle.remove()


def test_levels_follow_the_ldm_input_blocks_and_a_level_the_unet_lacks_is_refused(unet) -> None:
    assert input_block_count(unet) == 12  # SD 1.x's layout: conv_in, 3 x (2 layers + downsampler), 2 layers
    assert [type(m).__name__ for m in deep_layers(unet, 11)] == ["UNetMidBlock2DCrossAttn"]
    assert [type(m).__name__ for m in deep_layers(unet, 10)] == ["ResnetBlock2D", "UNetMidBlock2DCrossAttn", "ResnetBlock2D"]
    assert len(deep_layers(unet, 0)) > len(deep_layers(unet, 5)) > len(deep_layers(unet, 10))
    before = unet_state(unet)
    for level in (12, -1, True):
        with pytest.raises(DeepCacheError, match="from 0 to 11"), deep_cache(unet, DeepCachePass(level, 0, 5)):
            pass
    assert unet_state(unet) == before


def test_a_caching_batch_is_deterministic_and_the_next_plain_batch_is_untouched(setup) -> None:
    runtime, spec = setup
    plain = pixels(runtime.generate(spec))
    cached_spec = dataclasses.replace(spec, deepcache=DeepCachePass(level=1, enable_after=0, full_run_step_rate=5))
    unet = runtime.pipelines.get(spec.checkpoint_path, spec.checkpoint_sha256).unet
    before = unet_state(unet)
    deep = DeepCalls(unet)
    try:
        cached = pixels(runtime.generate(cached_spec))
        # 6 Euler steps, one UNet call each, counted from -1: calls -1 and 0 full, 1 to 4 cached
        assert deep.count == 2
        deep.count = 0
        assert all(np.array_equal(a, b) for a, b in zip(pixels(runtime.generate(cached_spec)), cached, strict=True))
        assert all(not np.array_equal(a, b) for a, b in zip(cached, plain, strict=True))
        assert all(np.array_equal(a, b) for a, b in zip(pixels(runtime.generate(spec)), plain, strict=True))
        assert deep.count == 2 + 6
    finally:
        deep.handle.remove()
    assert unet_state(unet) == before


def test_the_hires_pass_takes_its_own_plan(setup) -> None:
    runtime, spec = setup
    one = dataclasses.replace(spec, prompts=["a cat"], negative_prompts=[""], seeds=[1], steps=3)
    hires = HiresSpec(width=96, height=96, upscaler="Latent", steps=4, denoising_strength=0.7)
    plan = DeepCachePass(level=2, enable_after=-1, full_run_step_rate=5)
    plain = pixels(runtime.generate(dataclasses.replace(one, hires=hires)))[0]
    second_only = pixels(runtime.generate(dataclasses.replace(one, hires=dataclasses.replace(hires, deepcache=plan))))[0]
    both = pixels(runtime.generate(dataclasses.replace(one, deepcache=plan, hires=dataclasses.replace(hires, deepcache=plan))))[0]
    assert second_only.shape == both.shape == (96, 96, 3)
    assert not np.array_equal(second_only, plain) and not np.array_equal(both, second_only)
