"""ControlNet for the worker: load ControlNet files, read the A1111 API's units, build pipeline kwargs.

Three parts, used at three places:

* :func:`parse_controlnet_args` (pure, no torch import) validates the sd-webui-controlnet API units
  a client sends in ``alwayson_scripts.controlnet.args`` (A1111's form, and PAI-EAS's ``image_link``)
  into plain dicts; the API adapters call it and report its :class:`ControlNetArgumentError`.
* :func:`load_controlnet` reads a ControlNet ``.safetensors`` file, offline, in the original
  lllyasviel/A1111/SGM layout (``control_model.input_blocks...``, ``zero_convs``, ``input_hint_block``,
  ``middle_block_out``, SDXL's ``label_emb``; with or without the ``control_model.`` prefix) or in
  the diffusers layout, for SD 1.x, SD 2.x and SDXL checkpoints. The model config is derived from
  the base checkpoint's UNet (``ControlNetModel.from_unet``), so no config is downloaded; for SDXL
  the attention layout (transformer depth per block) is read off the weights, as SDXL ControlNets
  are often shallower than the UNet. A ControlNet made for another base model is refused naming
  both bases (SDXL vs SD 1.x/2.x) or the mismatching keys. :class:`ControlNetCache` keeps loaded
  ControlNets (one cache per worker runtime).
* :func:`controlnet_pipeline` builds diffusers' ControlNet pipeline for a task (the SDXL ones for
  an SDXL checkpoint) over the cached pipeline's modules.
* :func:`controlnet_pipeline_kwargs` runs each unit's preprocessor, fits the map to the generation
  size as the extension does, and returns the keyword arguments of diffusers' ControlNet pipelines
  plus the control maps (returned to users like PAI's ``image_mask_url``).

Differences from the extension: "My prompt is more important" (control_mode 1) runs as Balanced
(diffusers has no per-block soft injection), and "ControlNet is more important" maps to diffusers'
``guess_mode``, which is one switch for all units of a call. Pickle files are never loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from inference.worker.weight_files import MAX_NAMED, few, require_safetensors

if TYPE_CHECKING:
    import torch
    from diffusers import ControlNetModel, DiffusionPipeline, MultiControlNetModel, UNet2DConditionModel

__all__ = [
    "CONTROL_MODES",
    "MAX_UNITS",
    "RESIZE_MODES",
    "ControlNetArgumentError",
    "ControlNetCache",
    "ControlNetError",
    "ControlUnit",
    "controlnet_component",
    "controlnet_infotext",
    "controlnet_pipeline",
    "controlnet_pipeline_class",
    "controlnet_pipeline_kwargs",
    "controlnet_to_ldm",
    "fit_control_image",
    "load_controlnet",
    "parse_controlnet_args",
    "pixel_perfect_resolution",
    "prepare_control_image",
]

logger = logging.getLogger(__name__)

LDM_CONTROL_PREFIX = "control_model."
RESIZE_MODES: tuple[str, ...] = ("Just Resize", "Crop and Resize", "Resize and Fill")
CONTROL_MODES: tuple[str, ...] = ("Balanced", "My prompt is more important", "ControlNet is more important")
MAX_UNITS = 8
_DEFAULT_PROCESSOR_RES = 512
_PROCESSOR_RES_RANGE = (64, 2048)


class ControlNetError(ValueError):
    """A ControlNet request or file that cannot be used. The message is safe to show to users."""


class ControlNetArgumentError(ControlNetError):
    """A bad field in ``alwayson_scripts.controlnet.args``; ``field`` is its path, e.g. ``...args[1].weight``."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


# --------------------------------------------------------------------------- units


@dataclass(frozen=True)
class ControlUnit:
    """One ControlNet unit of a generation, ready to run: the model file and the decoded image."""

    model_path: str
    model_sha256: str
    image: Image.Image
    module: str = "none"
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    processor_res: int = 512
    threshold_a: float = 100
    threshold_b: float = 200
    resize_mode: int = 1  # 0 Just Resize, 1 Crop and Resize, 2 Resize and Fill
    control_mode: int = 0  # 0 Balanced, 1 My prompt is more important, 2 ControlNet is more important
    pixel_perfect: bool = False

    @classmethod
    def from_args(
        cls, args: Mapping[str, Any], *, model_path: str, model_sha256: str, image: Image.Image
    ) -> ControlUnit:
        """A unit from one dict of :func:`parse_controlnet_args` plus the resolved model and decoded image."""
        fields = (
            "module", "weight", "guidance_start", "guidance_end", "processor_res", "threshold_a",
            "threshold_b", "resize_mode", "control_mode", "pixel_perfect",
        )
        return cls(model_path=model_path, model_sha256=model_sha256, image=image, **{f: args[f] for f in fields})


# --------------------------------------------------------------------------- API arguments (pure)

_RESIZE_NAMES = {
    "just resize": 0, "resizemode.resize": 0, "resize": 0,
    "crop and resize": 1, "scale to fit (inner fit)": 1, "resizemode.inner_fit": 1, "inner_fit": 1,
    "resize and fill": 2, "envelope (outer fit)": 2, "resizemode.outer_fit": 2, "outer_fit": 2,
}
_CONTROL_NAMES = {
    "balanced": 0, "controlmode.balanced": 0,
    "my prompt is more important": 1, "controlmode.prompt": 1,
    "controlnet is more important": 2, "controlmode.control": 2,
}
_MODEL_WITH_HASH = re.compile(r"^(?P<name>.*?)\s*\[(?P<hash>[0-9a-fA-F]{8,64})\]$")


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _number(unit: Mapping[str, Any], key: str, field: str, default: float, low: float, high: float) -> float:
    value = unit.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ControlNetArgumentError(f"{field}.{key}", f"must be a number, got {value!r}")
    if not low <= value <= high:
        raise ControlNetArgumentError(f"{field}.{key}", f"must be between {_fmt(low)} and {_fmt(high)}")
    return float(value)


def _flag(unit: Mapping[str, Any], key: str, field: str, default: bool) -> bool:
    value = unit.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ControlNetArgumentError(f"{field}.{key}", f"must be true or false, got {value!r}")
    return value


def _choice(value: Any, key: str, field: str, names: Mapping[str, int], labels: Sequence[str], *, extra_ints: Mapping[int, int]) -> int:
    if isinstance(value, bool):
        pass
    elif isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        index = int(value)
        if 0 <= index < len(labels):
            return index
        if index in extra_ints:
            return extra_ints[index]
    elif isinstance(value, str) and value.strip().lower() in names:
        return names[value.strip().lower()]
    allowed = ", ".join(f"{i} or {label!r}" for i, label in enumerate(labels))
    raise ControlNetArgumentError(f"{field}.{key}", f"must be one of {allowed}; got {value!r}")


def _image(unit: Mapping[str, Any], field: str, allow_missing: bool) -> tuple[str | None, str | None]:
    """The client's image string and the field it came from (``image``, ``input_image``, ``image_link``)."""
    for key in ("image", "input_image", "image_link"):
        value = unit.get(key)
        if isinstance(value, Mapping):  # the extension's {"image": ..., "mask": ...} form
            value = value.get("image")
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise ControlNetArgumentError(f"{field}.{key}", "must be a base64 image string or a URL")
        if key == "image_link" and not value.lower().startswith(("http://", "https://")):
            raise ControlNetArgumentError(f"{field}.{key}", "must be an http(s) URL")
        return value, key
    if allow_missing:
        return None, None  # img2img: the unit uses the init image, as the extension does
    raise ControlNetArgumentError(f"{field}.image", "required (a base64 image, or image_link with a URL)")


def _parse_unit(unit: Mapping[str, Any], field: str, allow_missing_image: bool) -> dict[str, Any]:
    from ..preprocessors import canonical_module, default_thresholds

    module_value = unit.get("module", "none")
    if module_value is not None and not isinstance(module_value, str):
        raise ControlNetArgumentError(f"{field}.module", f"must be a preprocessor name, got {module_value!r}")
    try:
        module = canonical_module(module_value)
    except ControlNetError as exc:
        raise ControlNetArgumentError(f"{field}.module", str(exc)) from None

    model_value = unit.get("model")
    if not isinstance(model_value, str) or model_value.strip().lower() in ("", "none"):
        raise ControlNetArgumentError(f"{field}.model", "required (the name of a ControlNet model)")
    model, model_hash = model_value.strip(), ""
    if match := _MODEL_WITH_HASH.match(model):  # A1111 titles: "control_v11p_sd15_canny [d14c016b]"
        model, model_hash = match["name"], match["hash"].lower()

    image, image_field = _image(unit, field, allow_missing_image)

    resize_mode = _choice(unit.get("resize_mode", 1), "resize_mode", field, _RESIZE_NAMES, RESIZE_MODES, extra_ints={3: 0})
    if "control_mode" in unit and unit["control_mode"] is not None:
        control_mode = _choice(unit["control_mode"], "control_mode", field, _CONTROL_NAMES, CONTROL_MODES, extra_ints={})
    else:  # the extension's legacy boolean
        control_mode = 2 if _flag(unit, "guess_mode", field, False) else 0

    processor_res_value = _number(unit, "processor_res", field, -1, -math.inf, math.inf)
    low, high = _PROCESSOR_RES_RANGE
    if processor_res_value < 0:  # the extension's -1: the preprocessor's default
        processor_res = _DEFAULT_PROCESSOR_RES
    elif not (low <= processor_res_value <= high and processor_res_value.is_integer()):
        raise ControlNetArgumentError(f"{field}.processor_res", f"must be -1 (default) or a whole number between {low} and {high}")
    else:
        processor_res = int(processor_res_value)

    default_a, default_b = default_thresholds(module)
    threshold_a = _number(unit, "threshold_a", field, -1, -1, 1e4)
    threshold_b = _number(unit, "threshold_b", field, -1, -1, 1e4)
    guidance_start = _number(unit, "guidance_start", field, 0.0, 0.0, 1.0)
    guidance_end = _number(unit, "guidance_end", field, 1.0, 0.0, 1.0)
    if guidance_start > guidance_end:
        raise ControlNetArgumentError(f"{field}.guidance_start", "must not be greater than guidance_end")

    return {
        "field": field,
        "module": module,
        "model": model,
        "model_hash": model_hash,
        "image": image,
        "image_field": image_field,
        "weight": _number(unit, "weight", field, 1.0, 0.0, 2.0),
        "resize_mode": resize_mode,
        "processor_res": processor_res,
        "threshold_a": default_a if threshold_a < 0 else threshold_a,
        "threshold_b": default_b if threshold_b < 0 else threshold_b,
        "guidance_start": guidance_start,
        "guidance_end": guidance_end,
        "pixel_perfect": _flag(unit, "pixel_perfect", field, False),
        "control_mode": control_mode,
        "save_detected_map": _flag(unit, "save_detected_map", field, True),
    }


def parse_controlnet_args(
    alwayson_scripts: Mapping[str, Any] | None,
    *,
    allow_missing_image: bool = False,
    max_units: int = MAX_UNITS,
) -> list[dict[str, Any]]:
    """The enabled ControlNet units of a request's ``alwayson_scripts``, validated (pure, no I/O).

    The entry is found case-insensitively (A1111 clients send ``controlnet``; webuiapi sends
    ``ControlNet``, often with ``{"args": []}``). Each unit is an sd-webui-controlnet API dict;
    unknown keys (``low_vram``, ``hr_option``, ``input_mode``, ...) are ignored and disabled units
    are skipped. Each returned dict has ``field`` (the unit's path, for later error messages),
    ``module`` (the canonical preprocessor name), ``model`` (without an A1111 ``[hash]`` suffix,
    which is in ``model_hash``), ``image`` (the client's string, still to be decoded or fetched; None
    only with ``allow_missing_image``, meaning "use the img2img init image"), ``image_field``
    (``"image"``, ``"input_image"`` or ``"image_link"``: a URL to fetch), and the numbers
    ``weight``, ``resize_mode`` (0-2), ``processor_res``, ``threshold_a``, ``threshold_b`` (with
    the extension's ``-1`` defaults resolved), ``guidance_start``, ``guidance_end``,
    ``pixel_perfect``, ``control_mode`` (0-2) and ``save_detected_map`` (the extension's per-unit
    switch for returning the preprocessed map; default true).

    Raises :class:`ControlNetArgumentError` (a ``ValueError``) naming the first bad field, e.g.
    ``alwayson_scripts.controlnet.args[1].weight: must be between 0 and 2``.
    """
    if alwayson_scripts is None:
        return []
    if not isinstance(alwayson_scripts, Mapping):
        raise ControlNetArgumentError("alwayson_scripts", "must be an object")
    key = next((k for k in alwayson_scripts if isinstance(k, str) and k.lower() == "controlnet"), None)
    if key is None or alwayson_scripts[key] is None:
        return []
    entry = alwayson_scripts[key]
    field = f"alwayson_scripts.{key}"
    if not isinstance(entry, Mapping):
        raise ControlNetArgumentError(field, 'must be an object like {"args": [unit, ...]}')
    args = entry.get("args")
    if args is None:
        return []
    if not isinstance(args, (list, tuple)):
        raise ControlNetArgumentError(f"{field}.args", "must be a list of ControlNet units")
    units: list[dict[str, Any]] = []
    for index, unit in enumerate(args):
        unit_field = f"{field}.args[{index}]"
        if not isinstance(unit, Mapping):
            raise ControlNetArgumentError(unit_field, "must be an object (a ControlNet unit)")
        if not _flag(unit, "enabled", unit_field, True):
            continue
        units.append(_parse_unit(unit, unit_field, allow_missing_image))
    if len(units) > max_units:
        raise ControlNetArgumentError(f"{field}.args", f"at most {max_units} enabled units, got {len(units)}")
    return units


def controlnet_infotext(units: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The extension's infotext entries (``ControlNet 0`` -> ``Module: canny, Model: ..., ...``).

    ``units`` are dicts of :func:`parse_controlnet_args`; values are unquoted (the infotext writer
    quotes values that contain commas, as A1111 does).
    """
    entries: dict[str, str] = {}
    for index, unit in enumerate(units):
        model = f"{unit['model']} [{unit['model_hash']}]" if unit.get("model_hash") else unit["model"]
        values = {
            "Module": unit["module"],
            "Model": model,
            "Weight": unit["weight"],
            "Resize Mode": RESIZE_MODES[unit["resize_mode"]],
            "Processor Res": unit["processor_res"],
            "Threshold A": unit["threshold_a"],
            "Threshold B": unit["threshold_b"],
            "Guidance Start": unit["guidance_start"],
            "Guidance End": unit["guidance_end"],
            "Pixel Perfect": unit["pixel_perfect"],
            "Control Mode": CONTROL_MODES[unit["control_mode"]],
        }
        entries[f"ControlNet {index}"] = ", ".join(f"{k}: {v}" for k, v in values.items())
    return entries


# --------------------------------------------------------------------------- control images


def pixel_perfect_resolution(image_size: tuple[int, int], *, width: int, height: int, resize_mode: int) -> int:
    """The preprocessor resolution "Pixel Perfect" picks: the raw image's short side at output scale."""
    raw_w, raw_h = image_size
    k_h, k_w = height / raw_h, width / raw_w
    k = min(k_h, k_w) if resize_mode == 2 else max(k_h, k_w)
    return max(1, int(round(k * min(raw_h, raw_w))))


def _resize_map(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a control map, keeping hard maps hard (the extension's ``high_quality_resize``, simplified).

    Maps with a few colours (segmentation) are resized nearest-neighbour; black/white maps (edges,
    scribbles) are re-binarised with Otsu afterwards so thin lines stay lines, not grey smears.
    """
    import cv2

    if arr.shape[1] == width and arr.shape[0] == height:
        return arr
    packed = (arr[:, :, 0].astype(np.uint32) << 16) | (arr[:, :, 1].astype(np.uint32) << 8) | arr[:, :, 2]
    colours = len(np.unique(packed))
    is_binary = colours == 2 and arr.min() < 16 and arr.max() > 240
    smaller = width * height < arr.shape[0] * arr.shape[1]
    if 2 < colours < 200:
        interpolation = cv2.INTER_NEAREST
    elif smaller:
        interpolation = cv2.INTER_AREA
    else:
        interpolation = cv2.INTER_CUBIC
    resized = cv2.resize(arr, (width, height), interpolation=interpolation)
    if is_binary:
        gray = resized.astype(np.float32).mean(axis=2).clip(0, 255).astype(np.uint8)
        _, gray = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        resized = np.repeat(gray[:, :, None], 3, axis=2)
    return np.ascontiguousarray(resized)


def fit_control_image(image: Image.Image, *, width: int, height: int, resize_mode: int) -> Image.Image:
    """Fit a control map to ``width`` x ``height`` as the extension does (``detectmap_proc``).

    0 "Just Resize" stretches; 1 "Crop and Resize" scales to cover and crops the centre; 2 "Resize
    and Fill" scales to fit and fills the border with the median colour of the map's edge.
    """
    from ..preprocessors import to_rgb_array

    arr = to_rgb_array(image)
    raw_h, raw_w = arr.shape[:2]
    if resize_mode == 0:
        return Image.fromarray(_resize_map(arr, width, height))
    k_h, k_w = height / raw_h, width / raw_w
    if resize_mode == 2:
        k = min(k_h, k_w)
        border = np.concatenate([arr[0, :, :], arr[-1, :, :], arr[:, 0, :], arr[:, -1, :]], axis=0)
        canvas = np.tile(np.median(border, axis=0).astype(np.uint8)[None, None], (height, width, 1))
        scaled = _resize_map(arr, max(1, min(width, round(raw_w * k))), max(1, min(height, round(raw_h * k))))
        new_h, new_w = scaled.shape[:2]
        top, left = (height - new_h) // 2, (width - new_w) // 2
        canvas[top : top + new_h, left : left + new_w] = scaled
        return Image.fromarray(canvas)
    k = max(k_h, k_w)
    scaled = _resize_map(arr, max(width, round(raw_w * k)), max(height, round(raw_h * k)))
    new_h, new_w = scaled.shape[:2]
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return Image.fromarray(np.ascontiguousarray(scaled[top : top + height, left : left + width]))


def prepare_control_image(unit: ControlUnit, *, width: int, height: int) -> Image.Image:
    """The unit's preprocessed control map, fitted to the generation size (an RGB image)."""
    from ..preprocessors import preprocess

    resolution = unit.processor_res
    if unit.pixel_perfect:
        resolution = pixel_perfect_resolution(unit.image.size, width=width, height=height, resize_mode=unit.resize_mode)
    detected = preprocess(
        unit.module, unit.image, resolution=resolution, threshold_a=unit.threshold_a, threshold_b=unit.threshold_b
    )
    return fit_control_image(detected, width=width, height=height, resize_mode=unit.resize_mode)


_CONTROL_IMAGE_KEYS = {"txt2img": "image", "img2img": "control_image", "inpaint": "control_image"}


def controlnet_pipeline_class(task: str, *, xl: bool = False) -> type[DiffusionPipeline]:
    """The diffusers ControlNet pipeline for ``task`` (``txt2img``, ``img2img`` or ``inpaint``); ``xl``: SDXL's."""
    import diffusers

    if xl:
        classes = {
            "txt2img": diffusers.StableDiffusionXLControlNetPipeline,
            "img2img": diffusers.StableDiffusionXLControlNetImg2ImgPipeline,
            "inpaint": diffusers.StableDiffusionXLControlNetInpaintPipeline,
        }
    else:
        classes = {
            "txt2img": diffusers.StableDiffusionControlNetPipeline,
            "img2img": diffusers.StableDiffusionControlNetImg2ImgPipeline,
            "inpaint": diffusers.StableDiffusionControlNetInpaintPipeline,
        }
    return classes[task]


def controlnet_component(controlnets: Sequence[ControlNetModel]) -> ControlNetModel | MultiControlNetModel:
    """The pipeline's ``controlnet`` component for these units' models, in the form the kwargs expect.

    One model is passed as itself (the kwargs then hold plain values); several are wrapped in a
    ``MultiControlNetModel`` (the kwargs hold one value per unit). The same model may appear twice.
    """
    from diffusers import MultiControlNetModel

    if not controlnets:
        raise ValueError("at least one ControlNet is needed")
    return controlnets[0] if len(controlnets) == 1 else MultiControlNetModel(list(controlnets))


def controlnet_pipeline_kwargs(
    units: Sequence[ControlUnit],
    controlnets: Sequence[ControlNetModel],
    *,
    width: int,
    height: int,
    batch: int,
    task: str = "txt2img",
) -> tuple[dict[str, Any], list[Image.Image]]:
    """Keyword arguments for a diffusers ControlNet pipeline call, and the control maps used.

    ``controlnets[i]`` is the loaded model of ``units[i]``; build the pipeline with
    ``controlnet=controlnet_component(controlnets)`` (one model as is, several as a
    ``MultiControlNetModel``: the kwargs' shapes differ between the two). The maps go in as ``image`` (txt2img) or ``control_image`` (img2img/inpaint), one per unit, shared
    by all ``batch`` images of the call. A unit whose guidance window is empty (start >= end, which
    diffusers refuses) runs with weight 0, i.e. no effect, as in the extension.
    """
    if task not in _CONTROL_IMAGE_KEYS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(_CONTROL_IMAGE_KEYS)}")
    if not units:
        raise ValueError("controlnet_pipeline_kwargs needs at least one unit")
    if len(units) != len(controlnets):
        raise ValueError(f"{len(units)} units but {len(controlnets)} ControlNets")
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    images = [prepare_control_image(unit, width=width, height=height) for unit in units]
    scales, starts, ends = [], [], []
    for unit in units:
        if unit.guidance_start >= unit.guidance_end:
            scales.append(0.0)
            starts.append(0.0)
            ends.append(1.0)
        else:
            scales.append(float(unit.weight))
            starts.append(float(unit.guidance_start))
            ends.append(float(unit.guidance_end))
    single = len(units) == 1
    kwargs: dict[str, Any] = {
        _CONTROL_IMAGE_KEYS[task]: images[0] if single else images,
        "controlnet_conditioning_scale": scales[0] if single else scales,
        "control_guidance_start": starts[0] if single else starts,
        "control_guidance_end": ends[0] if single else ends,
        "guess_mode": any(unit.control_mode == 2 for unit in units),
    }
    return kwargs, images


def controlnet_pipeline(
    pipeline: DiffusionPipeline,
    units: Sequence[ControlUnit],
    cache: ControlNetCache,
    *,
    task: str,
    width: int,
    height: int,
) -> tuple[DiffusionPipeline, dict[str, Any]]:
    """The ControlNet variant of ``pipeline`` (same modules) for ``units``, and its call kwargs.

    The runtime's entry point: loads each unit's model through ``cache`` for the pipeline's UNet
    (a ControlNet for another architecture or base model raises :class:`ControlNetError`),
    preprocesses the control images and builds the pipeline of ``task`` over the same cached
    modules: an SDXL pipeline (one with ``text_encoder_2``) gets diffusers' SDXL ControlNet
    pipelines, with its own options (empty-prompt zeros, aesthetic score, watermark) carried over.
    """
    controlnets = [cache.get(unit.model_path, unit.model_sha256, like_unet=pipeline.unet) for unit in units]
    kwargs, _ = controlnet_pipeline_kwargs(units, controlnets, width=width, height=height, batch=1, task=task)
    components = {name: module for name, module in pipeline.components.items() if name != "controlnet"}
    xl = getattr(pipeline, "text_encoder_2", None) is not None
    options: dict[str, Any]
    if xl:
        options = {
            "force_zeros_for_empty_prompt": bool(pipeline.config.get("force_zeros_for_empty_prompt", True)),
            "add_watermarker": getattr(pipeline, "watermark", None) is not None,
        }
        if task != "txt2img":
            options["requires_aesthetics_score"] = bool(pipeline.config.get("requires_aesthetics_score", False))
    else:
        options = {"requires_safety_checker": False}
    controlled = controlnet_pipeline_class(task, xl=xl)(
        **components, controlnet=controlnet_component(controlnets), **options
    )
    controlled.set_progress_bar_config(disable=True)
    return controlled, kwargs


# --------------------------------------------------------------------------- loading


def _ldm_names(keys: Iterable[str]) -> dict[str, str]:
    """Each diffusers ``ControlNetModel`` parameter name -> its original LDM name (without prefix)."""
    from ..checkpoints import UNET_PREFIX
    from ..tiny_model import unet_to_ldm

    keys = list(keys)
    num_hint_blocks = len({k.split(".")[2] for k in keys if k.startswith("controlnet_cond_embedding.blocks.")})
    layers_per_block = 1 + max(
        (int(m[1]) for k in keys if (m := re.match(r"down_blocks\.\d+\.resnets\.(\d+)\.", k))), default=1
    )
    names: dict[str, str] = {}
    encoder: dict[str, str] = {}
    for key in keys:
        if m := re.fullmatch(r"controlnet_down_blocks\.(\d+)\.(weight|bias)", key):
            names[key] = f"zero_convs.{m[1]}.0.{m[2]}"
        elif m := re.fullmatch(r"controlnet_mid_block\.(weight|bias)", key):
            names[key] = f"middle_block_out.0.{m[1]}"
        elif m := re.fullmatch(r"controlnet_cond_embedding\.conv_in\.(weight|bias)", key):
            names[key] = f"input_hint_block.0.{m[1]}"
        elif m := re.fullmatch(r"controlnet_cond_embedding\.blocks\.(\d+)\.(weight|bias)", key):
            names[key] = f"input_hint_block.{2 * int(m[1]) + 2}.{m[2]}"
        elif m := re.fullmatch(r"controlnet_cond_embedding\.conv_out\.(weight|bias)", key):
            names[key] = f"input_hint_block.{2 * num_hint_blocks + 2}.{m[1]}"
        else:
            encoder[key] = key  # the UNet-encoder part: named as in an LDM UNet
    # unet_to_ldm only renames keys, so it maps each name to itself here (values are the old names).
    for ldm_key, key in unet_to_ldm(encoder, layers_per_block=layers_per_block).items():  # type: ignore[arg-type]
        names[key] = ldm_key[len(UNET_PREFIX) :]
    return names


def controlnet_to_ldm(state: Mapping[str, Any], *, prefix: str = LDM_CONTROL_PREFIX) -> dict[str, Any]:
    """A diffusers ``ControlNetModel`` state dict (SD 1.x/2.x/XL) under the original LDM/SGM names.

    The inverse of diffusers' ``convert_controlnet_checkpoint`` (plus SDXL's ``add_embedding`` ->
    ``label_emb.0``): the UNet-encoder part is named as in an LDM UNet, ``controlnet_down_blocks.i`` -> ``zero_convs.i.0``, ``controlnet_mid_block`` ->
    ``middle_block_out.0``, ``controlnet_cond_embedding`` -> ``input_hint_block`` (convs at 0, 2, 4,
    ...). Raises ``ValueError`` for a parameter with no LDM name.
    """
    names = _ldm_names(state)
    return {prefix + names[k]: v for k, v in state.items()}


def _fail(name: str, reason: str) -> ControlNetError:
    return ControlNetError(f"ControlNet {name!r} cannot be used with this checkpoint: {reason}")


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {key: f.get_tensor(key) for key in f.keys()}
    except SafetensorError as exc:
        raise _fail(path.name, f"it is not a valid safetensors file ({exc})") from None


def _not_a_controlnet(keys: Iterable[str]) -> str:
    keys = list(keys)
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return "it is a Stable Diffusion checkpoint, not a ControlNet"
    if any(k.startswith("lora_controlnet") or k == "lora_controlnet" for k in keys):
        return "it is a Control-LoRA, which is not supported"
    if any(k.startswith(("adapter.", "body.", "conv_in.")) for k in keys) and not any("time_embed" in k for k in keys):
        return "it looks like a T2I-Adapter, which is not supported"
    if any("lora" in k.lower() for k in keys):
        return "it looks like a LoRA, not a ControlNet"
    return "it contains no ControlNet weights (no input_hint_block / controlnet_cond_embedding)"


_BASE_BY_CONTEXT_DIM = {768: "Stable Diffusion 1.x", 1024: "Stable Diffusion 2.x", 2048: "SDXL"}
_XL_EMBEDDING_PREFIXES = ("label_emb.", "add_embedding.")  # SDXL's size/crop/pooled-text MLP, in both layouts
_ATTENTION_KEY = re.compile(
    r"(?:down_blocks\.(?P<block>\d+)\.attentions\.\d+|input_blocks\.(?P<slot>\d+)\.1"
    r"|(?P<mid>mid_block\.attentions\.0|middle_block\.1))\.(?:transformer_blocks\.(?P<layer>\d+)\.)?"
)


def _base_hint(ldm_shapes: Mapping[str, tuple[int, ...]]) -> str:
    to_k = next((s for k, s in ldm_shapes.items() if k.endswith("attn2.to_k.weight") and len(s) == 2), None)
    if to_k is not None and to_k[1] in _BASE_BY_CONTEXT_DIM:
        return f" (the file looks like a ControlNet for {_BASE_BY_CONTEXT_DIM[to_k[1]]})"
    return ""


def _unet_is_xl(unet: UNet2DConditionModel) -> bool:
    return unet.config.get("addition_embed_type") == "text_time"


def _unet_base(unet: UNet2DConditionModel) -> str:
    """The base model family of a UNet, by its conditioning: SDXL, else SD 1.x or SD 2.x."""
    if _unet_is_xl(unet):
        return "SDXL"
    known = _BASE_BY_CONTEXT_DIM.get(int(unet.config.cross_attention_dim))
    if known is not None:
        return known
    return "Stable Diffusion 2.x" if unet.config.use_linear_projection else "Stable Diffusion 1.x"  # small test models


def _file_base(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """The base model family a ControlNet file (either layout) was made for, read off its weights.

    SDXL ControlNets carry SDXL's ``label_emb``/``add_embedding``; otherwise the text width of the
    cross-attention names SD 1.x (768) or SD 2.x (1024), and failing that (small test models) the
    projection into attention: SD 1.x uses 1x1 convs, SD 2.x linear layers.
    """
    if any(k.startswith(_XL_EMBEDDING_PREFIXES) for k in shapes):
        return "SDXL"
    to_k = next((s for k, s in shapes.items() if k.endswith("attn2.to_k.weight") and len(s) == 2), None)
    if to_k is not None and to_k[1] in _BASE_BY_CONTEXT_DIM:
        return _BASE_BY_CONTEXT_DIM[to_k[1]]
    proj_in = next((s for k, s in shapes.items() if k.endswith(".proj_in.weight")), None)
    if proj_in is not None:
        return "Stable Diffusion 1.x" if len(proj_in) == 4 else "Stable Diffusion 2.x"
    return "Stable Diffusion 1.x/2.x"


def _attention_depths(keys: Iterable[str], *, layers_per_block: int) -> tuple[dict[int, int], int | None]:
    """The transformer depth of each down block with attention, and of the mid block (None: no attention).

    Works on both layouts (``down_blocks.i.attentions...`` / ``input_blocks.n.1...``). An attention
    without ``transformer_blocks`` (only ``norm``/``proj_in``/``proj_out``) has depth 0, as in
    diffusers' small SDXL ControlNets.
    """
    down: dict[int, int] = {}
    mid: int | None = None
    for key in keys:
        m = _ATTENTION_KEY.match(key)
        if m is None:
            continue
        depth = int(m["layer"]) + 1 if m["layer"] is not None else 0
        if m["mid"] is not None:
            mid = max(mid or 0, depth)
            continue
        block = int(m["block"]) if m["block"] is not None else (int(m["slot"]) - 1) // (layers_per_block + 1)
        down[block] = max(down.get(block, 0), depth)
    return down, mid


def _structure_from_weights(config: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """``config`` (a ControlNet config from an SDXL UNet) with the attention layout read off the weights.

    SDXL ControlNets often have fewer transformer layers than the UNet (diffusers' "-mid" and
    "-small" variants): which down blocks have attention, and how deep each is, come from the
    file. ControlNetModel gives the mid block the last entry's depth.
    """
    down, mid = _attention_depths(keys, layers_per_block=int(config["layers_per_block"]))
    count = len(config["block_out_channels"])
    depths = config["transformer_layers_per_block"]
    depths = [int(depths)] * count if isinstance(depths, int) else [int(d) for d in depths]
    types = list(config["down_block_types"])
    for block in range(count):
        if block in down:
            types[block], depths[block] = "CrossAttnDownBlock2D", down[block]
        else:
            types[block] = "DownBlock2D"
    if mid is not None and count - 1 not in down:
        depths[-1] = mid
    return {**config, "down_block_types": types, "transformer_layers_per_block": depths}


def _unet_fingerprint(unet: UNet2DConditionModel) -> str:
    config = json.dumps(dict(unet.config), sort_keys=True, default=str)
    return hashlib.sha256(config.encode()).hexdigest()[:16]


def _empty_controlnet(like_unet: UNet2DConditionModel, keys: Iterable[str]) -> ControlNetModel:
    """A ControlNetModel on the meta device shaped for ``like_unet`` (and, for SDXL, the file's attention layout)."""
    import torch
    from diffusers import ControlNetModel

    with torch.device("meta"):  # shapes only: no random init of weights that are replaced
        model = ControlNetModel.from_unet(like_unet, load_weights_from_unet=False)
        config = dict(model.config)
        # An inpainting UNet takes 9 channels, but its ControlNet sees only the 4-channel latents.
        config["in_channels"] = like_unet.config.out_channels
        if _unet_is_xl(like_unet):
            config = _structure_from_weights(config, keys)
        if config != dict(model.config):
            model = ControlNetModel.from_config(config)
    return model


def load_controlnet(
    path: Path,
    *,
    like_unet: UNet2DConditionModel,
    dtype: torch.dtype,
    device: str | torch.device,
) -> ControlNetModel:
    """A ``ControlNetModel`` for ``like_unet``'s architecture with the weights in ``path``, offline.

    ``path`` is a ``.safetensors`` file in the original LDM/SGM layout (keys under ``control_model.``,
    or bare ``input_blocks...``/``zero_convs...``/``input_hint_block...``/``middle_block_out...``)
    or in the diffusers layout (e.g. a renamed ``diffusion_pytorch_model.safetensors``), for SD 1.x,
    SD 2.x or SDXL. The config comes from ``like_unet`` (``ControlNetModel.from_unet``); for SDXL the
    down blocks' attention and transformer depths are read off the weights, since SDXL ControlNets
    may be shallower than the UNet. The result has ``dtype``, is on ``device`` and in eval mode.
    ``like_unet`` is not modified.

    Raises :class:`ControlNetError` for other file types (pickles are never loaded), unreadable
    files, files without ControlNet weights, ControlNets for another base model (SDXL vs SD 1.x/2.x,
    naming both) and for another architecture (naming a few mismatching keys); ``FileNotFoundError``
    for a missing path.
    """
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING, convert_controlnet_checkpoint

    path = Path(path)
    require_safetensors(path, "ControlNet", ControlNetError)
    state = _read_tensors(path)

    diffusers_layout = any(k.startswith(("controlnet_cond_embedding.", "controlnet_down_blocks.")) for k in state)
    if not diffusers_layout:
        if any(k.startswith(LDM_CONTROL_PREFIX) for k in state):
            state = {k[len(LDM_CONTROL_PREFIX) :]: v for k, v in state.items() if k.startswith(LDM_CONTROL_PREFIX)}
        if not any(k.startswith(("input_hint_block.", "zero_convs.")) for k in state):
            raise _fail(path.name, _not_a_controlnet(state))
    file_shapes = {k: tuple(v.shape) for k, v in state.items()}
    file_base, checkpoint_base = _file_base(file_shapes), _unet_base(like_unet)
    if (file_base == "SDXL") != (checkpoint_base == "SDXL"):
        raise _fail(
            path.name,
            f"it is a ControlNet for {file_base}, but this checkpoint is {checkpoint_base}: "
            f"use a ControlNet made for {checkpoint_base}",
        )

    model = _empty_controlnet(like_unet, state)
    model_state = model.state_dict()
    try:  # diffusers name -> LDM name, for this architecture
        ldm_names: dict[str, str] | None = _ldm_names(model_state)
    except ValueError:  # a layout without LDM names: keys are then checked after conversion only
        ldm_names = None

    if diffusers_layout:
        converted = state
    else:
        if ldm_names is not None:
            expected = set(ldm_names.values())
            unknown, missing = state.keys() - expected, expected - state.keys()
            if unknown or missing:
                parts = [f"{len(missing)} weights missing ({few(missing)})"] if missing else []
                parts += [f"{len(unknown)} unknown weights ({few(unknown)})"] if unknown else []
                raise _fail(path.name, "different structure: " + "; ".join(parts) + _base_hint(file_shapes))
        converted = convert_controlnet_checkpoint(state, dict(model.config))
        converted = {k: v for k, v in converted.items() if v is not None}
        if model.config.addition_embed_type is not None:  # SDXL's label_emb, which diffusers' converter skips
            for new, old in DIFFUSERS_TO_LDM_MAPPING["controlnet"]["addition_embed_type"].items():
                if old in state:
                    converted[new] = state[old]

    names = ldm_names if converted is not state else None
    missing = model_state.keys() - converted.keys()
    unknown = converted.keys() - model_state.keys()
    if missing or unknown:
        parts = [f"{len(missing)} weights missing ({few(missing)})"] if missing else []
        parts += [f"{len(unknown)} unknown weights ({few(unknown)})"] if unknown else []
        raise _fail(path.name, "different structure: " + "; ".join(parts))
    wrong = {k: (tuple(converted[k].shape), tuple(model_state[k].shape)) for k in model_state if converted[k].shape != model_state[k].shape}
    if wrong:
        named = sorted(((names or {}).get(k, k), theirs, ours) for k, (theirs, ours) in wrong.items())
        shown = "; ".join(f"{k} is {list(t)} in the file but {list(o)} here" for k, t, o in named[:MAX_NAMED])
        more = f" (and {len(wrong) - MAX_NAMED} more)" if len(wrong) > MAX_NAMED else ""
        ldm_shapes = {(names or {}).get(k, k): tuple(v.shape) for k, v in converted.items()}
        raise _fail(path.name, f"it is for another architecture: {len(wrong)} weights have other shapes: {shown}{more}{_base_hint(ldm_shapes)}")

    tensors = {k: v.to(device=device, dtype=dtype).contiguous() for k, v in converted.items()}
    try:
        model.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as exc:  # not expected after the checks above; still a mismatch, not a crash
        raise _fail(path.name, str(exc).splitlines()[0]) from None
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        raise _fail(path.name, "some weights of the ControlNet were not filled")
    return model.eval()


class ControlNetCache:
    """Loaded ControlNets, least recently used first out; one per worker runtime.

    Keyed by the file's sha256 and the base UNet's architecture (the same file is converted once per
    architecture it is used with). Failed loads are not cached.
    """

    def __init__(self, *, capacity: int = 4, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> None:
        import torch

        self.capacity = max(1, capacity)
        self.device = device
        self.dtype = dtype if dtype is not None else torch.float32
        self._models: OrderedDict[tuple[str, str], ControlNetModel] = OrderedDict()
        self.loads = 0

    def get(self, path: str, sha256: str, *, like_unet: UNet2DConditionModel) -> ControlNetModel:
        """The ControlNet in ``path`` (content hash ``sha256``) for ``like_unet``'s architecture."""
        key = (sha256, _unet_fingerprint(like_unet))
        model = self._models.get(key)
        if model is not None:
            self._models.move_to_end(key)
            return model
        started = time.perf_counter()
        model = load_controlnet(Path(path), like_unet=like_unet, dtype=self.dtype, device=self.device)
        self.loads += 1
        logger.info("loaded ControlNet %s in %.2fs", path, time.perf_counter() - started)
        self._models[key] = model
        while len(self._models) > self.capacity:
            self._models.popitem(last=False)
        return model

    def loaded(self) -> list[str]:
        """The sha256 of each loaded ControlNet, least recently used first."""
        return [sha for sha, _ in self._models]
