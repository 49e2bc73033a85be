"""ESRGAN-family upscalers: both file layouts, every scale, bad files, and the hires fix through them."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from a1111.samplers import resolve_sampler
from runtime.engine import WorkerRuntime
from runtime.specs import GenerationSpec, HiresSpec
from runtime.tiny.model import write_tiny_checkpoint
from runtime.upscalers import (
    UpscalerError,
    load_upscaler,
    upscale,
    write_tiny_esrgan,
)


@pytest.mark.parametrize(("name", "scale", "layout"), [
    ("x4.pth", 4, "basicsr"), ("x4-old.pth", 4, "esrgan"), ("x2.safetensors", 2, "basicsr"), ("x1.pth", 1, "basicsr"),
])
def test_each_layout_and_scale_loads_and_scales_the_image(tmp_path, name, scale, layout) -> None:
    model = load_upscaler(write_tiny_esrgan(tmp_path / name, scale=scale, layout=layout))
    assert model.scale == scale
    assert tuple(model(torch.rand(1, 3, 16, 24)).shape) == (1, 3, 16 * scale, 24 * scale)
    assert upscale(model, Image.new("RGB", (24, 16), "red"), width=100, height=70).size == (100, 70)


def test_the_two_layouts_of_the_same_weights_upscale_identically(tmp_path) -> None:
    new = load_upscaler(write_tiny_esrgan(tmp_path / "new.pth", seed=3))
    old = load_upscaler(write_tiny_esrgan(tmp_path / "old.pth", seed=3, layout="esrgan"))
    pixels = torch.rand(1, 3, 16, 16)
    assert torch.equal(new(pixels), old(pixels))


def test_files_that_are_not_rrdbnet_weights_are_refused_with_a_reason(tmp_path) -> None:
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(UpscalerError, match="junk.pth"):
        load_upscaler(tmp_path / "junk.pth")
    save_file({"weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(UpscalerError, match="not an ESRGAN"):
        load_upscaler(tmp_path / "other.safetensors")
    with open(tmp_path / "code.pth", "wb") as handle:  # a pickle that would run code: never unpickled
        pickle.dump({"conv_first.weight": print}, handle)
    with pytest.raises(UpscalerError, match="weights only"):
        load_upscaler(tmp_path / "code.pth")


def test_the_hires_fix_can_upscale_through_a_model(tmp_path) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.safetensors")
    model_path = write_tiny_esrgan(tmp_path / "RealESRGAN_x4plus.pth")
    euler = resolve_sampler("Euler")
    spec = GenerationSpec(
        checkpoint_path=str(checkpoint), checkpoint_sha256="tiny", prompts=["a"], negative_prompts=[""], seeds=[4],
        steps=3, cfg_scale=7.0, width=64, height=64, max_batch=8, scheduler_class=euler.scheduler_class,
        scheduler_kwargs=euler.scheduler_kwargs,
    )
    runtime = WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=tmp_path / "cache")
    lanczos = HiresSpec(width=128, height=128, upscaler="Lanczos", steps=3, denoising_strength=0.0)
    by_model = dataclasses.replace(lanczos, upscaler="R-ESRGAN 4x+", upscaler_path=str(model_path), upscaler_sha256="m")
    resized = runtime.generate(dataclasses.replace(spec, hires=lanczos))[0]
    upscaled = runtime.generate(dataclasses.replace(spec, hires=by_model))[0]
    assert resized.size == upscaled.size == (128, 128)
    assert np.abs(np.asarray(resized, dtype=np.float32) - np.asarray(upscaled, dtype=np.float32)).mean() > 1
