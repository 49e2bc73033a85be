"""Tests for ControlNet support: preprocessors, file loading, API units and pipeline kwargs.

Plain pytest, no database: ``.venv/bin/python -m pytest tests/worker/test_controlnet.py -q``.
The end-to-end tests run the tiny random-weight SD1.x model with a tiny random ControlNet at 64x64.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    ControlNetModel,
    StableDiffusionControlNetPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file

from runtime.checkpoints.loading import get_architecture, load_pipeline
from a1111.controlnet import ControlNetArgumentError, ControlNetError, ControlUnit, controlnet_infotext, parse_controlnet_args
from runtime.controlnet import ControlNetCache, controlnet_component, controlnet_pipeline_class, controlnet_pipeline_kwargs, controlnet_to_ldm, fit_control_image, load_controlnet, pixel_perfect_resolution
from runtime.controlnet.preprocessors import PREPROCESSORS, preprocess
from a1111.preprocessors import available_preprocessors, canonical_module
from runtime.tiny.controlnet import (
    build_tiny_controlnet,
    write_tiny_controlnet,
)
from runtime.tiny.model import write_tiny_checkpoint

SIZE = 64
STEPS = 3
PROMPT = "a red house"


def _rectangle(width: int = 128, height: int = 128, box: tuple[int, int, int, int] = (32, 40, 95, 87)) -> Image.Image:
    image = Image.new("RGB", (width, height), "black")
    ImageDraw.Draw(image).rectangle(box, fill="white")
    return image


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("models") / "tiny.safetensors")


@pytest.fixture(scope="module")
def pipe(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> StableDiffusionPipeline:
    return load_pipeline(checkpoint, cache_dir=tmp_path_factory.mktemp("cfg"))


@pytest.fixture(scope="module")
def cn_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("controlnet")


@pytest.fixture(scope="module")
def ldm_file(cn_dir: Path) -> Path:
    return write_tiny_controlnet(cn_dir / "tiny_canny.safetensors", seed=0)


@pytest.fixture(scope="module")
def diffusers_file(cn_dir: Path) -> Path:
    return write_tiny_controlnet(cn_dir / "tiny_canny_diffusers.safetensors", seed=0, layout="diffusers")


@pytest.fixture(scope="module")
def controlnet(ldm_file: Path, pipe: StableDiffusionPipeline) -> ControlNetModel:
    return load_controlnet(ldm_file, like_unet=pipe.unet, dtype=torch.float32, device="cpu")


@pytest.fixture(scope="module")
def second_controlnet(cn_dir: Path, pipe: StableDiffusionPipeline) -> ControlNetModel:
    path = write_tiny_controlnet(cn_dir / "tiny_other.safetensors", seed=7)
    return load_controlnet(path, like_unet=pipe.unet, dtype=torch.float32, device="cpu")


# --------------------------------------------------------------------------- preprocessors


def test_every_preprocessor_returns_rgb_at_the_requested_resolution() -> None:
    source = Image.new("RGBA", (100, 60), (200, 30, 30, 128))
    ImageDraw.Draw(source).line((0, 0, 99, 59), fill=(0, 0, 0, 255), width=3)
    keeps_size = {"none", "invert", "tile_resample"}
    for module in available_preprocessors():
        result = preprocess(module, source, resolution=32, threshold_a=-1, threshold_b=-1)
        assert result.mode == "RGB", module
        assert result.size == ((100, 60) if module in keeps_size else (53, 32)), module
    downsampled = preprocess("tile_resample", source, resolution=512, threshold_a=2.0, threshold_b=-1)
    assert downsampled.size == (50, 30)


def test_canny_finds_the_edges_of_a_rectangle() -> None:
    edges = np.asarray(preprocess("canny", _rectangle(), resolution=128, threshold_a=100, threshold_b=200))
    assert edges.shape == (128, 128, 3)
    assert set(np.unique(edges)) == {0, 255}
    mask = edges[:, :, 0] > 0
    left, top, right, bottom = 32, 40, 95, 87
    for y in range(top + 4, bottom - 4):  # each row crosses the left and right edges
        assert mask[y, left - 1 : left + 2].any() and mask[y, right - 1 : right + 2].any(), y
    for x in range(left + 4, right - 4):
        assert mask[top - 1 : top + 2, x].any() and mask[bottom - 1 : bottom + 2, x].any(), x
    inside = mask[top + 3 : bottom - 2, left + 3 : right - 2]
    outside = np.concatenate([mask[: top - 2].ravel(), mask[bottom + 3 :].ravel()])
    assert not inside.any() and not outside.any()


def test_threshold_invert_scribble_and_lineart_follow_the_extension() -> None:
    gradient = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (8, 1)))  # "L", 256 x 8
    binary = np.asarray(preprocess("threshold", gradient, resolution=8, threshold_a=127, threshold_b=-1))
    assert (binary[0, :128] == 0).all() and (binary[0, 128:] == 255).all()
    inverted = np.asarray(preprocess("invert", gradient, resolution=8, threshold_a=-1, threshold_b=-1))
    assert (inverted[0, :, 0] == 255 - np.arange(256)).all()

    drawing = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(drawing).line((10, 32, 54, 32), fill="black", width=3)
    scribble = np.asarray(preprocess("scribble", drawing, resolution=64, threshold_a=-1, threshold_b=-1))
    assert scribble[32, 30].tolist() == [255, 255, 255] and scribble[5, 5].tolist() == [0, 0, 0]
    xdog = np.asarray(preprocess("scribble_xdog", drawing, resolution=64, threshold_a=32, threshold_b=-1))
    assert xdog[32, 30, 0] == 255 and xdog[5, 5, 0] == 0
    lineart = np.asarray(preprocess("lineart_standard", drawing, resolution=64, threshold_a=-1, threshold_b=-1))
    assert lineart[32, 30, 0] > 100 and lineart[5, 5, 0] == 0
    flat = np.asarray(preprocess("lineart_standard", Image.new("RGB", (32, 32), "gray"), resolution=32, threshold_a=-1, threshold_b=-1))
    assert (flat == 0).all()  # no NaN from the median of nothing
    blurred = np.asarray(preprocess("blur_gaussian", drawing, resolution=64, threshold_a=4, threshold_b=-1))
    assert 0 < blurred[32, 30, 0] < 255


def test_module_names_and_aliases() -> None:
    assert canonical_module("Canny") == "canny"
    assert canonical_module("invert (from white bg & black line)") == "invert"
    assert canonical_module("lineart_standard (from white bg & black line)") == "lineart_standard"
    assert canonical_module(None) == canonical_module("None") == "none"
    assert set(available_preprocessors()) == set(PREPROCESSORS)
    with pytest.raises(ControlNetError, match="unknown preprocessor 'sparkles'; available: none, canny, invert"):
        canonical_module("sparkles")
    with pytest.raises(ControlNetError, match="preprocessor 'depth_midas' needs a model that is not installed; available: "):
        preprocess("depth_midas", _rectangle(), resolution=64, threshold_a=-1, threshold_b=-1)
    with pytest.raises(ControlNetError, match="'depth' needs a model"):  # legacy alias of depth_midas
        canonical_module("depth")
    with pytest.raises(ControlNetError, match="not supported"):
        canonical_module("reference_only")


def test_fit_control_image_resize_modes() -> None:
    wide = Image.new("RGB", (200, 100), "white")
    ImageDraw.Draw(wide).rectangle((0, 0, 49, 99), fill="black")  # left quarter black
    stretched = np.asarray(fit_control_image(wide, width=64, height=64, resize_mode=0))
    assert stretched.shape == (64, 64, 3) and stretched[32, 4, 0] == 0 and stretched[32, 20, 0] == 255
    cropped = np.asarray(fit_control_image(wide, width=64, height=64, resize_mode=1))
    assert cropped.shape == (64, 64, 3) and (cropped == 255).all()  # the centre crop misses the black quarter
    filled = np.asarray(fit_control_image(wide, width=64, height=64, resize_mode=2))
    assert filled.shape == (64, 64, 3)
    assert filled[0, 32].tolist() == [255, 255, 255]  # border filled with the edge's median colour
    assert filled[32, 2, 0] == 0  # the whole image is visible, black quarter included
    assert pixel_perfect_resolution((200, 100), width=512, height=512, resize_mode=1) == 512
    assert pixel_perfect_resolution((200, 100), width=512, height=512, resize_mode=2) == 256


# --------------------------------------------------------------------------- loading files


def _assert_same_weights(model: ControlNetModel, reference: ControlNetModel) -> None:
    ours, theirs = model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key].to(ours[key].dtype)), key


def test_ldm_and_diffusers_layouts_load_the_same_weights(
    ldm_file: Path, diffusers_file: Path, cn_dir: Path, pipe: StableDiffusionPipeline, controlnet: ControlNetModel
) -> None:
    reference = build_tiny_controlnet(seed=0)
    _assert_same_weights(controlnet, reference)
    from_diffusers = load_controlnet(diffusers_file, like_unet=pipe.unet, dtype=torch.float32, device="cpu")
    _assert_same_weights(from_diffusers, reference)
    # The bare LDM layout (no control_model. prefix), as in some lllyasviel releases.
    bare = cn_dir / "bare.safetensors"
    save_file({k.removeprefix("control_model."): v for k, v in load_file(str(ldm_file)).items()}, str(bare))
    _assert_same_weights(load_controlnet(bare, like_unet=pipe.unet, dtype=torch.float32, device="cpu"), reference)
    with torch.device("meta"):  # an inpainting UNet takes 9 channels; its ControlNet still sees 4
        inpainting_unet = UNet2DConditionModel.from_config({**pipe.unet.config, "in_channels": 9})
    _assert_same_weights(load_controlnet(ldm_file, like_unet=inpainting_unet, dtype=torch.float32, device="cpu"), reference)
    half = load_controlnet(ldm_file, like_unet=pipe.unet, dtype=torch.float16, device="cpu")
    assert half.dtype == torch.float16 and not half.training
    assert any((controlnet.controlnet_mid_block.weight != 0).flatten().tolist())  # zero convs were randomised


def _write_ldm(model: ControlNetModel, path: Path) -> Path:
    save_file({k: v.to(torch.float16).contiguous() for k, v in controlnet_to_ldm(model.state_dict()).items()}, str(path))
    return path


def test_a_controlnet_for_another_architecture_is_refused(cn_dir: Path, checkpoint: Path, pipe: StableDiffusionPipeline) -> None:
    config = dict(UNet2DConditionModel.load_config(get_architecture("tiny-sd").config_dir / "unet"))
    config["cross_attention_dim"] = 48  # like an SD2.x ControlNet against an SD1.x checkpoint
    other = ControlNetModel.from_unet(UNet2DConditionModel.from_config(config))
    path = _write_ldm(other, cn_dir / "other_arch.safetensors")
    with pytest.raises(ControlNetError, match=r"another architecture: \d+ weights have other shapes: input_blocks\.\d+\.1\.transformer_blocks\.0\.attn2\.to_k\.weight is \[32, 48\] in the file but \[32, 32\] here"):
        load_controlnet(path, like_unet=pipe.unet, dtype=torch.float32, device="cpu")

    with pytest.raises(ControlNetError, match="Stable Diffusion checkpoint, not a ControlNet"):
        load_controlnet(checkpoint, like_unet=pipe.unet, dtype=torch.float32, device="cpu")

    tensors = load_file(str(cn_dir / "tiny_canny.safetensors"))
    del tensors["control_model.zero_convs.3.0.weight"]
    tensors["control_model.extra.weight"] = torch.zeros(1)
    broken = cn_dir / "broken.safetensors"
    save_file(tensors, str(broken))
    with pytest.raises(ControlNetError, match=r"1 weights missing \(zero_convs\.3\.0\.weight\); 1 unknown weights \(extra\.weight\)"):
        load_controlnet(broken, like_unet=pipe.unet, dtype=torch.float32, device="cpu")

    pickle = cn_dir / "control_sd15_canny.pth"
    pickle.write_bytes(b"not loaded")
    with pytest.raises(ControlNetError, match="only .safetensors files are accepted"):
        load_controlnet(pickle, like_unet=pipe.unet, dtype=torch.float32, device="cpu")
    garbage = cn_dir / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ControlNetError, match="not a valid safetensors file"):
        load_controlnet(garbage, like_unet=pipe.unet, dtype=torch.float32, device="cpu")


def test_controlnet_cache_is_lru_by_sha256(ldm_file: Path, diffusers_file: Path, pipe: StableDiffusionPipeline) -> None:
    cache = ControlNetCache(capacity=1, device="cpu", dtype=torch.float32)
    first = cache.get(str(ldm_file), "a" * 64, like_unet=pipe.unet)
    assert cache.get(str(ldm_file), "a" * 64, like_unet=pipe.unet) is first
    cache.get(str(diffusers_file), "b" * 64, like_unet=pipe.unet)
    assert cache.loaded() == ["b" * 64] and cache.loads == 2
    assert cache.get(str(ldm_file), "a" * 64, like_unet=pipe.unet) is not first  # evicted, loaded again
    assert cache.loads == 3


# --------------------------------------------------------------------------- API units


def test_parse_accepts_the_a1111_form_as_webuiapi_sends_it() -> None:
    import webuiapi

    unit = webuiapi.ControlNetUnit(
        image=_rectangle(16, 16), module="canny", model="control_v11p_sd15_canny [d14c016b]", weight=0.8,
        resize_mode="Crop and Resize", control_mode=2, pixel_perfect=True, guidance_end=0.6,
    ).to_dict()
    disabled = {**unit, "enabled": False, "weight": 99}  # disabled units are not validated
    legacy = {
        "input_image": "aGVsbG8=", "module": "Canny", "model": "tiny", "resize_mode": 0,
        "processor_res": -1, "threshold_a": -1, "threshold_b": -1, "guess_mode": True,
    }
    parsed = parse_controlnet_args({"ControlNet": {"args": [unit, disabled, legacy]}, "ADetailer": {"args": [False]}})
    assert len(parsed) == 2
    first, second = parsed
    assert first["field"] == "alwayson_scripts.ControlNet.args[0]"
    assert (first["module"], first["model"], first["model_hash"]) == ("canny", "control_v11p_sd15_canny", "d14c016b")
    assert first["image"] == unit["image"] and first["image_field"] == "image"
    assert (first["weight"], first["resize_mode"], first["control_mode"], first["pixel_perfect"]) == (0.8, 1, 2, True)
    assert (first["threshold_a"], first["threshold_b"], first["guidance_end"]) == (64.0, 64.0, 0.6)
    assert second["field"] == "alwayson_scripts.ControlNet.args[2]"
    assert (second["image"], second["image_field"], second["module"]) == ("aGVsbG8=", "input_image", "canny")
    assert (second["processor_res"], second["threshold_a"], second["threshold_b"]) == (512, 100.0, 200.0)
    assert (second["resize_mode"], second["control_mode"], second["model_hash"]) == (0, 2, "")
    assert parse_controlnet_args({"ControlNet": {"args": []}}) == []  # what webuiapi always sends
    assert parse_controlnet_args({}) == [] and parse_controlnet_args(None) == []

    infotext = controlnet_infotext(parsed)
    assert infotext["ControlNet 0"] == (
        "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 0.8, Resize Mode: Crop and Resize, "
        "Processor Res: 512, Threshold A: 64.0, Threshold B: 64.0, Guidance Start: 0.0, Guidance End: 0.6, "
        "Pixel Perfect: True, Control Mode: ControlNet is more important"
    )


def test_parse_accepts_pai_image_link() -> None:
    scripts = {
        "sd_model_checkpoint": "deliberate_v2.safetensors",
        "controlnet": {"args": [{
            "enabled": True, "module": "lineart_standard (from white bg & black line)", "model": "control_v11p_sd15_lineart",
            "weight": 1, "image_link": "https://bucket.oss.example.com/in/cat.png", "resize_mode": "Resize and Fill",
            "control_mode": "My prompt is more important", "input_mode": "simple",
        }]},
    }
    [unit] = parse_controlnet_args(scripts)
    assert (unit["image"], unit["image_field"]) == ("https://bucket.oss.example.com/in/cat.png", "image_link")
    assert (unit["module"], unit["resize_mode"], unit["control_mode"], unit["weight"]) == ("lineart_standard", 2, 1, 1.0)
    control_unit = ControlUnit.from_args(unit, model_path="/models/ControlNet/x.safetensors", model_sha256="f" * 64, image=_rectangle())
    assert (control_unit.module, control_unit.resize_mode, control_unit.control_mode) == ("lineart_standard", 2, 1)
    assert control_unit.threshold_a == 100.0 and control_unit.processor_res == 512
    no_image = {"controlnet": {"args": [{"module": "canny", "model": "m"}]}}
    assert parse_controlnet_args(no_image, allow_missing_image=True)[0]["image"] is None  # img2img: the init image


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"weight": 3}, "alwayson_scripts.controlnet.args[1].weight: must be between 0 and 2"),
        ({"weight": "heavy"}, "args[1].weight: must be a number"),  # "1" is read as 1, as for every numeric field
        ({"weight": True}, "args[1].weight: must be a number"),
        ({"weight": "nan"}, "args[1].weight: must be a number"),
        ({"threshold_a": float("inf")}, "args[1].threshold_a: must be a number"),
        ({"control_mode": "7"}, "args[1].control_mode: must be one of"),
        ({"resize_mode": "Stretch"}, "args[1].resize_mode: must be one of 0 or 'Just Resize'"),
        ({"resize_mode": 7}, "args[1].resize_mode: must be one of"),
        ({"control_mode": "Whatever"}, "args[1].control_mode: must be one of"),
        ({"module": "sparkles"}, "args[1].module: unknown preprocessor 'sparkles'; available: none, canny"),
        ({"module": "openpose_full"}, "args[1].module: preprocessor 'openpose_full' needs a model that is not installed"),
        ({"model": "None"}, "args[1].model: required"),
        ({"image": ""}, "args[1].image: required"),
        ({"image": 5}, "args[1].image: must be a base64 image string or a URL"),
        ({"image": None, "image_link": "file:///etc/passwd"}, "args[1].image_link: must be an http(s) URL"),
        ({"guidance_start": 0.8, "guidance_end": 0.2}, "args[1].guidance_start: must not be greater than guidance_end"),
        ({"guidance_end": 1.5}, "args[1].guidance_end: must be between 0 and 1"),
        ({"processor_res": 10}, "args[1].processor_res: must be -1 (default) or a whole number between 64 and 2048"),
        ({"pixel_perfect": "yes"}, "args[1].pixel_perfect: must be true or false"),
        ({"enabled": "no"}, "args[1].enabled: must be true or false"),
    ],
)
def test_parse_rejects_bad_fields(change: dict, message: str) -> None:
    good = {"module": "canny", "model": "tiny", "image": "aGVsbG8="}
    with pytest.raises(ControlNetArgumentError) as caught:
        parse_controlnet_args({"controlnet": {"args": [good, {**good, **change}]}})
    assert message in str(caught.value)
    assert caught.value.field.startswith("alwayson_scripts.controlnet.args[1].")
    assert isinstance(caught.value, ValueError)


def test_parse_rejects_malformed_containers() -> None:
    with pytest.raises(ControlNetArgumentError, match=r"alwayson_scripts\.controlnet\.args: must be a list"):
        parse_controlnet_args({"controlnet": {"args": {"module": "canny"}}})
    with pytest.raises(ControlNetArgumentError, match=r"args\[0\]: must be an object"):
        parse_controlnet_args({"controlnet": {"args": ["canny"]}})
    with pytest.raises(ControlNetArgumentError, match="at most 2 enabled units"):
        parse_controlnet_args({"controlnet": {"args": [{"model": "m", "image": "x"}] * 3}}, max_units=2)


# --------------------------------------------------------------------------- end to end


def _unit(**overrides) -> ControlUnit:
    fields = {"model_path": "tiny_canny.safetensors", "model_sha256": "0" * 64, "image": _rectangle(), "module": "canny"}
    return ControlUnit(**{**fields, **overrides})


def _generate(pipeline, *, batch: int = 1, **kwargs) -> np.ndarray:
    generators = [torch.Generator("cpu").manual_seed(1234 + i) for i in range(batch)]
    with torch.inference_mode():
        images = pipeline(
            prompt=[PROMPT] * batch, negative_prompt=[""] * batch, num_inference_steps=STEPS, guidance_scale=7.0,
            width=SIZE, height=SIZE, generator=generators, output_type="pil", **kwargs,
        ).images
    return np.stack([np.asarray(image, dtype=np.int16) for image in images])


@pytest.fixture(scope="module")
def plain_image(pipe: StableDiffusionPipeline) -> np.ndarray:
    plain = StableDiffusionPipeline(**pipe.components, requires_safety_checker=False)
    plain.set_progress_bar_config(disable=True)
    return _generate(plain)


def _controlnet_pipeline(pipe: StableDiffusionPipeline, controlnets: list[ControlNetModel], task: str = "txt2img"):
    pipeline_class = controlnet_pipeline_class(task)
    pipeline = pipeline_class(**pipe.components, controlnet=controlnet_component(controlnets), requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def test_weight_zero_matches_the_plain_pipeline_and_weight_one_changes_it(
    pipe: StableDiffusionPipeline, controlnet: ControlNetModel, plain_image: np.ndarray
) -> None:
    pipeline = _controlnet_pipeline(pipe, [controlnet])
    assert isinstance(pipeline, StableDiffusionControlNetPipeline)

    kwargs, maps = controlnet_pipeline_kwargs([_unit(weight=0.0)], [controlnet], width=SIZE, height=SIZE, batch=1)
    assert set(kwargs) == {"image", "controlnet_conditioning_scale", "control_guidance_start", "control_guidance_end", "guess_mode"}
    assert [m.size for m in maps] == [(SIZE, SIZE)] and maps[0].mode == "RGB"
    assert set(np.unique(np.asarray(maps[0]))) == {0, 255}  # the canny map stays black and white after fitting
    assert np.abs(_generate(pipeline, **kwargs) - plain_image).max() <= 1

    kwargs, _ = controlnet_pipeline_kwargs([_unit(weight=1.0)], [controlnet], width=SIZE, height=SIZE, batch=1)
    controlled = _generate(pipeline, **kwargs)
    assert np.abs(controlled - plain_image).mean() > 3

    # An empty guidance window (guidance_end 0) is accepted and has no effect, as in the extension.
    kwargs, _ = controlnet_pipeline_kwargs([_unit(guidance_end=0.0)], [controlnet], width=SIZE, height=SIZE, batch=1)
    assert np.abs(_generate(pipeline, **kwargs) - plain_image).max() <= 1

    kwargs, _ = controlnet_pipeline_kwargs([_unit(control_mode=2)], [controlnet], width=SIZE, height=SIZE, batch=1)
    assert kwargs["guess_mode"] is True
    assert np.abs(_generate(pipeline, **kwargs) - controlled).mean() > 1


def test_two_units_at_once_in_a_batch(
    pipe: StableDiffusionPipeline, controlnet: ControlNetModel, second_controlnet: ControlNetModel, plain_image: np.ndarray
) -> None:
    units = [_unit(weight=1.0), _unit(module="invert", image=_rectangle(96, 64), resize_mode=2, weight=0.7, guidance_start=0.2)]
    controlnets = [controlnet, second_controlnet]
    kwargs, maps = controlnet_pipeline_kwargs(units, controlnets, width=SIZE, height=SIZE, batch=2)
    assert kwargs["controlnet_conditioning_scale"] == [1.0, 0.7]
    assert kwargs["control_guidance_start"] == [0.0, 0.2] and len(kwargs["image"]) == len(maps) == 2
    both = _generate(_controlnet_pipeline(pipe, controlnets), batch=2, **kwargs)
    assert both.shape == (2, SIZE, SIZE, 3)
    assert np.abs(both[:1] - plain_image).mean() > 3

    kwargs_one, _ = controlnet_pipeline_kwargs(units[:1], controlnets[:1], width=SIZE, height=SIZE, batch=1)
    first_only = _generate(_controlnet_pipeline(pipe, controlnets[:1]), **kwargs_one)
    assert np.abs(both[:1] - first_only).mean() > 1  # the second unit contributes


def test_img2img_controlnet_uses_control_image(pipe: StableDiffusionPipeline, controlnet: ControlNetModel) -> None:
    kwargs, _ = controlnet_pipeline_kwargs([_unit()], [controlnet], width=SIZE, height=SIZE, batch=1, task="img2img")
    assert "control_image" in kwargs and "image" not in kwargs
    result = _generate(_controlnet_pipeline(pipe, [controlnet], "img2img"), image=[_rectangle(SIZE, SIZE)], strength=0.7, **kwargs)
    assert result.shape == (1, SIZE, SIZE, 3)



# --------------------------------------------------------------------------- through WorkerRuntime


def test_worker_runtime_runs_controlnet_units_and_survives_a_mismatch(checkpoint: Path, ldm_file: Path, cn_dir: Path, tmp_path: Path) -> None:
    import dataclasses

    from a1111.samplers import resolve_sampler
    from runtime.engine import WorkerRuntime
    from runtime.specs import GenerationSpec, Img2ImgInputs

    runtime = WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=tmp_path / "cache")
    choice = resolve_sampler("Euler")
    spec = GenerationSpec(
        checkpoint_path=str(checkpoint), checkpoint_sha256="tiny", prompts=[PROMPT], negative_prompts=[""], seeds=[5],
        steps=STEPS, cfg_scale=7.0, width=SIZE, height=SIZE, max_batch=4,
        scheduler_class=choice.scheduler_class, scheduler_kwargs=choice.scheduler_kwargs,
    )
    unit = ControlUnit(model_path=str(ldm_file), model_sha256="c" * 64, image=_rectangle(), module="canny")
    plain = np.asarray(runtime.generate(spec)[0], dtype=np.int16)
    zero = np.asarray(runtime.generate(dataclasses.replace(spec, controlnet=[dataclasses.replace(unit, weight=0.0)]))[0], dtype=np.int16)
    assert np.abs(zero - plain).max() <= 1
    full = np.asarray(runtime.generate(dataclasses.replace(spec, controlnet=[unit]))[0], dtype=np.int16)
    assert np.abs(full - plain).mean() > 3
    assert runtime.controlnets.loads == 1  # cached by the runtime, not reloaded per batch

    init = Img2ImgInputs(init_images=[_rectangle(SIZE, SIZE)], masks=[None], denoising_strength=0.7)
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (16, 16, 48, 48))
    for inputs in (init, dataclasses.replace(init, masks=[mask])):  # img2img, then inpainting
        images = runtime.generate(dataclasses.replace(spec, img2img=inputs, controlnet=[unit]))
        assert images[0].size == (SIZE, SIZE)

    config = dict(UNet2DConditionModel.load_config(get_architecture("tiny-sd").config_dir / "unet"))
    config["cross_attention_dim"] = 48
    other = _write_ldm(ControlNetModel.from_unet(UNet2DConditionModel.from_config(config)), cn_dir / "runtime_other.safetensors")
    mismatched = dataclasses.replace(unit, model_path=str(other), model_sha256="d" * 64)
    with pytest.raises(ControlNetError, match="cannot be used with this checkpoint: it is for another architecture"):
        runtime.generate(dataclasses.replace(spec, controlnet=[mismatched]))
    after = np.asarray(runtime.generate(spec)[0], dtype=np.int16)  # the runtime keeps working
    assert np.abs(after - plain).max() <= 1


def test_my_prompt_is_more_important_fades_the_shallow_blocks_and_is_taken_off(
    pipe: StableDiffusionPipeline, controlnet: ControlNetModel, plain_image: np.ndarray
) -> None:
    """control_mode 1 (the extension's soft injection): residual i scaled by 0.825^(12 - i) on top of the weight."""
    from runtime.controlnet import soft_injection

    pipeline = _controlnet_pipeline(pipe, [controlnet])
    kwargs, _ = controlnet_pipeline_kwargs([_unit()], [controlnet], width=SIZE, height=SIZE, batch=1)
    balanced = _generate(pipeline, **kwargs)
    def probe(into: list) -> object:
        return controlnet.register_forward_hook(lambda m, a, out: into.append([float(t.abs().mean()) for t in (*out[0], out[1])]))

    raw: list[list[float]] = []
    scaled: list[list[float]] = []
    before = probe(raw)  # runs before the soft-injection hook: the unscaled residuals
    try:
        with soft_injection(pipeline.controlnet, [_unit(control_mode=1)]):
            after = probe(scaled)  # runs after it
            soft = _generate(pipeline, **kwargs)
            after.remove()
    finally:
        before.remove()
    assert not controlnet._forward_hooks  # taken off after the block
    assert np.abs(soft - balanced).mean() > 1 and np.abs(soft - plain_image).mean() > 1
    for i, (out, unscaled) in enumerate(zip(scaled[0], raw[0], strict=True)):
        assert out == pytest.approx(unscaled * 0.825 ** (12 - i), rel=1e-4)
    assert np.abs(_generate(pipeline, **kwargs) - balanced).max() == 0


def test_the_hires_pass_is_guided_by_controlnet_at_its_own_size(checkpoint: Path, ldm_file: Path, tmp_path: Path) -> None:
    from a1111.samplers import resolve_sampler
    from runtime.engine import WorkerRuntime
    from runtime.specs import GenerationSpec, HiresSpec

    runtime = WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=tmp_path / "cache")
    choice = resolve_sampler("Euler")
    unit = ControlUnit(model_path=str(ldm_file), model_sha256="c" * 64, image=_rectangle(), module="canny")
    spec = GenerationSpec(
        checkpoint_path=str(checkpoint), checkpoint_sha256="tiny", prompts=[PROMPT], negative_prompts=[""], seeds=[5],
        steps=STEPS, cfg_scale=7.0, width=SIZE, height=SIZE, max_batch=4, controlnet=[unit],
        scheduler_class=choice.scheduler_class, scheduler_kwargs=choice.scheduler_kwargs,
        hires=HiresSpec(width=SIZE * 2, height=SIZE * 2, upscaler="Latent", steps=STEPS, denoising_strength=0.6),
    )
    runtime.generate(spec)  # loads the ControlNet
    sizes: list[tuple[int, int]] = []
    model = runtime.controlnets.get(str(ldm_file), "c" * 64, like_unet=runtime.pipelines.get(str(checkpoint), "tiny").unet)
    probe = model.register_forward_pre_hook(lambda m, args, kwargs: sizes.append(tuple(kwargs["controlnet_cond"].shape[-2:])), with_kwargs=True)
    try:
        image = runtime.generate(spec)[0]
    finally:
        probe.remove()
    assert image.size == (SIZE * 2, SIZE * 2)
    assert sizes.count((SIZE, SIZE)) == STEPS and sizes.count((SIZE * 2, SIZE * 2)) == STEPS  # both passes, each at its size
