"""Acceleration settings and the two-tier pipeline cache, on the tiny model (CPU).

The same features run on a GPU in `bench/gpu_runtime_check.py` (figures in bench/results/).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from a1111.samplers import resolve_sampler
from runtime.acceleration import (
    Acceleration,
    AccelerationSettingError,
    apply_to_pipeline,
    configure_vae,
)
from runtime.caches import PipelineCache
from runtime.engine import WorkerRuntime
from runtime.specs import GenerationSpec
from runtime.tiny.model import write_tiny_checkpoint


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("acceleration")
    first = write_tiny_checkpoint(folder / "first.safetensors", seed=0)
    second = write_tiny_checkpoint(folder / "second.safetensors", seed=1)
    third = write_tiny_checkpoint(folder / "third.safetensors", seed=2)
    euler = resolve_sampler("Euler")
    spec = GenerationSpec(
        checkpoint_path=str(first), checkpoint_sha256="first", prompts=["a house"] * 2, negative_prompts=[""] * 2,
        seeds=[1, 2], steps=3, cfg_scale=7.0, width=64, height=64, max_batch=8,
        scheduler_class=euler.scheduler_class, scheduler_kwargs=euler.scheduler_kwargs,
    )
    return folder, {"first": first, "second": second, "third": third}, spec


def px(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [("attention", "flash", "attention"), ("channels_last", "maybe", "channels_last"),
     ("compile_mode", "fastest", "compile mode"), ("vae_slicing_from_batch", -1, "thresholds")],
)
def test_a_bad_setting_is_refused_with_its_name(field, value, named) -> None:
    with pytest.raises(AccelerationSettingError, match=named):
        Acceleration(**{field: value})


def test_channels_last_and_forced_attention_give_the_same_image(models) -> None:
    folder, _, spec = models
    plain = WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=folder / "cache",
                          acceleration=Acceleration(attention="sdpa", channels_last="off")).generate(spec)
    fast = WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=folder / "cache",
                         acceleration=Acceleration(attention="xformers", channels_last="on"))  # no xformers: SDPA
    images = fast.generate(spec)
    pipeline = fast.pipelines.get(spec.checkpoint_path, spec.checkpoint_sha256)
    assert pipeline.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert {type(p) for p in pipeline.unet.attn_processors.values()} == {AttnProcessor2_0}
    for ours, reference in zip(images, plain, strict=True):
        assert np.abs(px(ours) - px(reference)).mean() < 0.5


def test_compile_wraps_the_unet_in_place(models) -> None:
    folder, paths, _ = models
    cache = PipelineCache(capacity=1, device=torch.device("cpu"), dtype=torch.float32, config_cache_dir=folder / "cache")
    pipeline = cache.get(str(paths["first"]), "first")
    applied = apply_to_pipeline(pipeline, Acceleration(compile_mode="default"), torch.device("cpu"))
    assert applied["compile"] == "default"
    assert pipeline.unet._compiled_call_impl is not None  # compiled lazily, at the first call
    assert type(pipeline.unet).__name__ == "UNet2DConditionModel"  # LoRA and hypernetwork hooks still find it


def test_vae_slicing_and_tiling_follow_batch_size_and_image_size(models) -> None:
    folder, paths, spec = models
    runtime = WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=folder / "cache",
                            acceleration=Acceleration(vae_slicing_from_batch=2, vae_tiling_from_pixels=256 * 256))
    vae = runtime.pipelines.get(spec.checkpoint_path, spec.checkpoint_sha256).vae
    configure_vae(vae, runtime.acceleration, batch=1, width=64, height=64)
    assert (vae.use_slicing, vae.use_tiling) == (False, False)
    configure_vae(vae, runtime.acceleration, batch=2, width=512, height=512)
    assert (vae.use_slicing, vae.use_tiling) == (True, True)
    # A tiled decode of a large image: right size, and close to the whole decode (tiles blend at seams).
    big = dataclasses.replace(spec, width=768, height=768, steps=2, prompts=["a"], negative_prompts=[""], seeds=[3])
    tiled = runtime.generate(big)[0]
    assert vae.use_tiling
    whole = WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=folder / "cache",
                          acceleration=Acceleration(vae_tiling_from_pixels=0)).generate(big)[0]
    assert tiled.size == whole.size == (768, 768)
    assert np.abs(px(tiled) - px(whole)).mean() < 8


def test_the_host_tier_keeps_evicted_pipelines_and_gives_them_back_without_a_load(models) -> None:
    folder, paths, _ = models
    # On a CPU the host tier is the same memory, but its bookkeeping is the GPU worker's.
    cache = PipelineCache(capacity=1, host_capacity=1, device=torch.device("cpu"), dtype=torch.float32,
                          config_cache_dir=folder / "cache")
    first = cache.get(str(paths["first"]), "first")
    cache.get(str(paths["second"]), "second")
    assert (cache.loaded(), cache.cached(), cache.loads) == (["second"], ["first"], 2)
    assert cache.get(str(paths["first"]), "first") is first  # back from host RAM, not from disk
    assert (cache.loaded(), cache.cached(), cache.loads, cache.restores) == (["first"], ["second"], 2, 1)
    cache.get(str(paths["third"]), "third")  # host tier full: its least recently used leaves
    assert (cache.loaded(), cache.cached(), cache.loads) == (["third"], ["first"], 3)


def test_the_host_tier_empties_before_a_load_when_ram_runs_low(models) -> None:
    folder, paths, _ = models
    cache = PipelineCache(capacity=1, host_capacity=4, min_ram_reserved=2**62, device=torch.device("cpu"),
                          dtype=torch.float32, config_cache_dir=folder / "cache")
    cache.get(str(paths["first"]), "first")
    cache.get(str(paths["second"]), "second")
    assert cache.cached() == ["first"]
    cache.get(str(paths["third"]), "third")  # less RAM free than reserved: host RAM is given up first
    assert cache.cached() == ["second"]


def test_a_cpu_worker_has_one_tier(models) -> None:
    folder, _, _ = models
    runtime = WorkerRuntime(device="cpu", cache_size=1, host_cache_size=4, config_cache_dir=folder / "cache")
    assert runtime.pipelines.host_capacity == 0


def test_the_weights_dtype_is_a_setting(models) -> None:
    folder, _, spec = models
    runtime = WorkerRuntime(device="cpu", dtype="bfloat16", cache_size=1, config_cache_dir=folder / "cache")
    images = runtime.generate(spec)
    assert runtime.pipelines.get(spec.checkpoint_path, spec.checkpoint_sha256).unet.dtype == torch.bfloat16
    assert all(np.isfinite(px(image)).all() and px(image).std() > 0 for image in images)
    with pytest.raises(ValueError, match="bfloat16"):
        WorkerRuntime(device="cpu", dtype="half", config_cache_dir=folder / "cache")
