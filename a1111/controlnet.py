"""ControlNet units: the request side, pure (no torch import).

:func:`parse_controlnet_args` validates the sd-webui-controlnet API units a client sends in
``alwayson_scripts.controlnet.args`` (A1111's form, and PAI-EAS's ``image_link``) into plain dicts;
the API adapters call it and report its :class:`ControlNetArgumentError`. :class:`ControlUnit` is
one unit ready to run (resolved model file, decoded image), :func:`controlnet_infotext` the
extension's infotext entries. :class:`ControlNetError`, the error every part of the ControlNet
package raises, lives here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from a1111.fields import RequestValidationError, shown_value, fields_of, read_bool, read_float, read_number

__all__ = [
    "CONTROL_MODES",
    "MAX_UNITS",
    "RESIZE_MODES",
    "ControlNetArgumentError",
    "ControlNetError",
    "ControlUnit",
    "controlnet_infotext",
    "parse_controlnet_args",
]

RESIZE_MODES: tuple[str, ...] = ("Just Resize", "Crop and Resize", "Resize and Fill")
CONTROL_MODES: tuple[str, ...] = ("Balanced", "My prompt is more important", "ControlNet is more important")
MAX_UNITS = 8
_DEFAULT_PROCESSOR_RES = 512
_PROCESSOR_RES_RANGE = (64, 2048)


class ControlNetError(ValueError):
    """A ControlNet request or file that cannot be used. The message is safe to show to users."""


class ControlNetArgumentError(RequestValidationError, ControlNetError):
    """A bad field in ``alwayson_scripts.controlnet.args``; ``field`` is its path, e.g. ``...args[1].weight``.

    A :class:`~a1111.errors.RequestValidationError`: every adapter maps it as any
    other bad field (``ControlNetArgumentError(field, problem)``).
    """


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


def _number(unit: Mapping[str, Any], key: str, field: str, default: float, low: float, high: float) -> float:
    """A number or numeric string (the shared reader, as for every other numeric field) in [low, high]."""
    with fields_of(field, ControlNetArgumentError):
        return read_float(unit, key, default, low, high)


def _flag(unit: Mapping[str, Any], key: str, field: str, default: bool) -> bool:
    with fields_of(field, ControlNetArgumentError):
        return read_bool(unit, key, default)


def _choice(value: Any, key: str, field: str, names: Mapping[str, int], labels: Sequence[str], *, extra_ints: Mapping[int, int]) -> int:
    """An index into `labels`: by one of `names` (any case), or a whole number (numeric strings too)."""
    if isinstance(value, str) and value.strip().lower() in names:
        return names[value.strip().lower()]
    if not isinstance(value, bool) and isinstance(value, (int, float, str)):
        try:
            number = read_number({key: value}, key, 0, "a number")
        except RequestValidationError:
            number = math.nan  # neither a name nor a number: the message below lists both
        if number.is_integer():
            index = int(number)
            if 0 <= index < len(labels):
                return index
            if index in extra_ints:
                return extra_ints[index]
    allowed = ", ".join(f"{i} or {label!r}" for i, label in enumerate(labels))
    raise ControlNetArgumentError(f"{field}.{key}", f"must be one of {allowed}; got {shown_value(value)}")


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
    from a1111.preprocessors import canonical_module, default_thresholds

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

    with fields_of(field, ControlNetArgumentError):
        processor_res_value = read_number(unit, "processor_res", -1, "a number")
    low, high = _PROCESSOR_RES_RANGE
    if processor_res_value < 0:  # the extension's -1: the preprocessor's default
        processor_res = _DEFAULT_PROCESSOR_RES
    elif not (low <= processor_res_value <= high and processor_res_value.is_integer()):
        raise ControlNetArgumentError(f"{field}.processor_res", f"must be -1 (default) or a whole number between {low} and {high}")
    else:
        processor_res = int(processor_res_value)

    default_a, default_b = default_thresholds(module)
    threshold_a = _number(unit, "threshold_a", field, -1, -1, 10_000)
    threshold_b = _number(unit, "threshold_b", field, -1, -1, 10_000)
    guidance_start = _number(unit, "guidance_start", field, 0.0, 0, 1)
    guidance_end = _number(unit, "guidance_end", field, 1.0, 0, 1)
    if guidance_start > guidance_end:
        raise ControlNetArgumentError(f"{field}.guidance_start", "must not be greater than guidance_end")

    return {
        "field": field,
        "module": module,
        "model": model,
        "model_hash": model_hash,
        "image": image,
        "image_field": image_field,
        "weight": _number(unit, "weight", field, 1.0, 0, 2),
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
