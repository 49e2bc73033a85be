"""ControlNet with SDXL checkpoints: loading SDXL ControlNet files (both layouts, shallower than the
UNet), base-model mismatches, and txt2img/img2img/inpainting through the worker runtime.

Plain pytest, no database: ``.venv/bin/python -m pytest tests/worker/test_controlnet_xl.py -q``.
Runs the tiny random-weight SDXL model with tiny random SDXL ControlNets at 64x64, 3 steps.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file

from a1111.samplers import resolve_sampler
from runtime.checkpoints.loading import get_architecture
from a1111.controlnet import ControlNetError, ControlUnit
from runtime.controlnet import load_controlnet
from runtime.img2img import InpaintSettings
from runtime.engine import WorkerRuntime
from runtime.specs import GenerationSpec, Img2ImgInputs
from runtime.tiny.controlnet import (
    TINY_SDXL_CONTROLNET_DEPTHS,
    build_tiny_controlnet,
    write_tiny_controlnet,
)
from runtime.tiny.families import write_tiny_sdxl_checkpoint

SIZE = 64
STEPS = 3


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("controlnet_xl")


@pytest.fixture(scope="module")
def checkpoint(folder: Path) -> Path:
    return write_tiny_sdxl_checkpoint(folder / "tiny-xl.safetensors")


@pytest.fixture(scope="module")
def runtime(folder: Path) -> WorkerRuntime:
    return WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=folder / "cache")


@pytest.fixture(scope="module")
def xl_unet(runtime: WorkerRuntime, checkpoint: Path) -> UNet2DConditionModel:
    return runtime.pipelines.get(str(checkpoint), "tiny-xl").unet


@pytest.fixture(scope="module")
def ldm_file(folder: Path) -> Path:
    return write_tiny_controlnet(folder / "xl_canny.safetensors", base="sdxl")


@pytest.fixture(scope="module")
def diffusers_file(folder: Path) -> Path:
    return write_tiny_controlnet(folder / "xl_canny_diffusers.safetensors", base="sdxl", layout="diffusers")


def _rectangle(width: int = 128, height: int = 128, box: tuple[int, int, int, int] = (32, 40, 95, 87)) -> Image.Image:
    image = Image.new("RGB", (width, height), "black")
    ImageDraw.Draw(image).rectangle(box, fill="white")
    return image


def _spec(checkpoint: Path, **changes) -> GenerationSpec:
    choice = resolve_sampler("Euler")
    spec = GenerationSpec(
        checkpoint_path=str(checkpoint), checkpoint_sha256="tiny-xl", prompts=["a red house"], negative_prompts=[""],
        seeds=[5], steps=STEPS, cfg_scale=7.0, width=SIZE, height=SIZE, max_batch=4,
        scheduler_class=choice.scheduler_class, scheduler_kwargs=choice.scheduler_kwargs,
    )
    return dataclasses.replace(spec, **changes)


def _unit(path: Path, **overrides) -> ControlUnit:
    fields = {"model_path": str(path), "model_sha256": f"{path.name:x<64}"[:64], "image": _rectangle(), "module": "canny"}
    return ControlUnit(**{**fields, **overrides})


def _px(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def _assert_same_weights(model: ControlNetModel, reference: ControlNetModel) -> None:
    ours, theirs = model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key].to(ours[key].dtype)), key


# --------------------------------------------------------------------------- loading


def test_both_layouts_load_the_same_weights_with_the_depths_read_off_the_file(
    ldm_file: Path, diffusers_file: Path, folder: Path, xl_unet: UNet2DConditionModel
) -> None:
    reference = build_tiny_controlnet(base="sdxl")
    assert any(k.startswith("control_model.label_emb.0.0.") for k in load_file(str(ldm_file)))  # the SGM layout
    assert any(k.startswith("add_embedding.linear_1.") for k in load_file(str(diffusers_file)))
    for path in (ldm_file, diffusers_file):
        model = load_controlnet(path, like_unet=xl_unet, dtype=torch.float32, device="cpu")
        _assert_same_weights(model, reference)
        # Shallower than the UNet (1/2/10 transformer layers): the depths come from the weights.
        assert list(model.config.transformer_layers_per_block) == list(TINY_SDXL_CONTROLNET_DEPTHS)
        assert model.config.addition_embed_type == "text_time"
        assert model.config.projection_class_embeddings_input_dim == xl_unet.config.projection_class_embeddings_input_dim

    # Attentions without transformer blocks, as diffusers' controlnet-*-sdxl-1.0-small; bare LDM names.
    small = build_tiny_controlnet(base="sdxl", seed=3, transformer_layers_per_block=(0, 0, 0))
    small_file = write_tiny_controlnet(folder / "xl_small.safetensors", base="sdxl", seed=3, transformer_layers_per_block=(0, 0, 0))
    bare = folder / "xl_small_bare.safetensors"
    save_file({k.removeprefix("control_model."): v for k, v in load_file(str(small_file)).items()}, str(bare))
    small_diffusers = write_tiny_controlnet(
        folder / "xl_small_diffusers.safetensors", base="sdxl", seed=3, layout="diffusers", transformer_layers_per_block=(0, 0, 0)
    )
    for path in (bare, small_diffusers):
        _assert_same_weights(load_controlnet(path, like_unet=xl_unet, dtype=torch.float32, device="cpu"), small)


def test_a_controlnet_for_another_base_is_refused_naming_both_bases(
    ldm_file: Path, diffusers_file: Path, folder: Path, xl_unet: UNet2DConditionModel
) -> None:
    sd_file = write_tiny_controlnet(folder / "sd15_canny.safetensors")
    with pytest.raises(ControlNetError, match=r"it is a ControlNet for Stable Diffusion 1\.x, but this checkpoint is SDXL"):
        load_controlnet(sd_file, like_unet=xl_unet, dtype=torch.float32, device="cpu")
    with torch.device("meta"):
        sd_unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(get_architecture("tiny-sd").config_dir / "unet"))
    for path in (ldm_file, diffusers_file):
        with pytest.raises(ControlNetError, match=r"it is a ControlNet for SDXL, but this checkpoint is Stable Diffusion 1\.x"):
            load_controlnet(path, like_unet=sd_unet, dtype=torch.float32, device="cpu")

    tensors = load_file(str(ldm_file))
    del tensors["control_model.input_blocks.7.1.transformer_blocks.1.attn2.to_k.weight"]
    broken = folder / "xl_broken.safetensors"
    save_file(tensors, str(broken))
    with pytest.raises(ControlNetError, match=r"1 weights missing \(input_blocks\.7\.1\.transformer_blocks\.1\.attn2\.to_k\.weight\)"):
        load_controlnet(broken, like_unet=xl_unet, dtype=torch.float32, device="cpu")


# --------------------------------------------------------------------------- through WorkerRuntime


def test_txt2img_weight_zero_is_the_plain_image_and_weight_one_changes_it(
    runtime: WorkerRuntime, checkpoint: Path, ldm_file: Path, diffusers_file: Path
) -> None:
    spec = _spec(checkpoint)
    plain = _px(runtime.generate(spec)[0])
    zero = _px(runtime.generate(dataclasses.replace(spec, controlnet=[_unit(ldm_file, weight=0.0)]))[0])
    assert np.array_equal(zero, plain)  # weight 0 adds nothing: the very same image on this CPU
    full = _px(runtime.generate(dataclasses.replace(spec, controlnet=[_unit(ldm_file)]))[0])
    assert np.abs(full - plain).mean() > 3
    again = _px(runtime.generate(dataclasses.replace(spec, controlnet=[_unit(ldm_file)]))[0])
    assert np.array_equal(again, full)  # same seed, same image
    assert runtime.controlnets.loads == 1  # cached, not reloaded per batch
    # The diffusers-layout copy holds the same weights: the same image.
    same = _px(runtime.generate(dataclasses.replace(spec, controlnet=[_unit(diffusers_file)]))[0])
    assert np.array_equal(same, full)
    guess = _px(runtime.generate(dataclasses.replace(spec, controlnet=[_unit(ldm_file, control_mode=2)]))[0])
    assert np.abs(guess - full).mean() > 1


def test_two_units_at_once(runtime: WorkerRuntime, checkpoint: Path, ldm_file: Path, folder: Path) -> None:
    other = write_tiny_controlnet(folder / "xl_other.safetensors", base="sdxl", seed=7, layout="diffusers")
    spec = _spec(checkpoint, seeds=[5, 6], prompts=["a red house"] * 2, negative_prompts=[""] * 2)
    first = _unit(ldm_file)
    second = _unit(other, module="invert", image=_rectangle(96, 64), resize_mode=2, weight=0.7, guidance_start=0.2)
    one = runtime.generate(dataclasses.replace(spec, controlnet=[first]))
    both = runtime.generate(dataclasses.replace(spec, controlnet=[first, second]))
    assert len(both) == 2 and both[1].size == (SIZE, SIZE)
    assert np.abs(_px(both[0]) - _px(one[0])).mean() > 1  # the second unit contributes


def test_img2img_and_inpainting_with_an_sdxl_controlnet(runtime: WorkerRuntime, checkpoint: Path, ldm_file: Path) -> None:
    init = _rectangle(SIZE, SIZE, (16, 20, 47, 43))
    inputs = Img2ImgInputs(init_images=[init], masks=[None], denoising_strength=0.7)
    spec = _spec(checkpoint, img2img=inputs)
    plain = _px(runtime.generate(spec)[0])
    controlled = _px(runtime.generate(dataclasses.replace(spec, controlnet=[_unit(ldm_file, image=_rectangle())]))[0])
    assert controlled.shape == (SIZE, SIZE, 3) and np.abs(controlled - plain).mean() > 1

    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (16, 16, 48, 48))
    settings = InpaintSettings(mask_blur_x=0, mask_blur_y=0, inpainting_fill=1)
    inpaint = dataclasses.replace(inputs, masks=[mask], denoising_strength=1.0, inpaint=settings)
    result = _px(runtime.generate(dataclasses.replace(spec, img2img=inpaint, controlnet=[_unit(ldm_file)]))[0])
    before, outside = _px(init), np.asarray(mask) == 0
    assert np.array_equal(result[outside], before[outside])  # unmasked pixels are kept
    assert np.abs(result[20:44, 20:44] - before[20:44, 20:44]).mean() > 10


def test_an_sd15_controlnet_fails_the_job_and_the_runtime_carries_on(
    runtime: WorkerRuntime, checkpoint: Path, folder: Path
) -> None:
    sd_file = write_tiny_controlnet(folder / "sd15_for_runtime.safetensors")
    spec = _spec(checkpoint)
    with pytest.raises(ControlNetError, match=r"'sd15_for_runtime\.safetensors' cannot be used with this checkpoint: it is a ControlNet for Stable Diffusion 1\.x, but this checkpoint is SDXL"):
        runtime.generate(dataclasses.replace(spec, controlnet=[_unit(sd_file)]))
    assert runtime.generate(spec)[0].size == (SIZE, SIZE)
