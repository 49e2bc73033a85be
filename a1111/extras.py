"""A1111's "Extras" (postprocessing) as a typed request: `ExtrasRequest` (pure, no Django).

`/sdapi/v1/extra-single-image`, `/sdapi/v1/extra-batch-images` and the native jobs API
(`kind: "extras"`) validate their bodies here (A1111's `ExtrasBaseRequest` fields and API
defaults; unknown keys ignored), then `extras_submit` (`inference/services.py`) resolves the
member's upscaler and face restorer files, stores the images and queues one `Job` of kind
"extras". A worker runs it without any checkpoint (`inference/runner/extras.py`,
`runtime/extras.py`).

What runs, in A1111 1.10's order (its postprocessing scripts' `order`: Upscale 1000, GFPGAN
2000, CodeFormer 3000):

1. **Upscale** with `upscaler_1` (skipped when it is "None"): by `upscaling_resize`
   (`resize_mode` 0) or to `upscaling_resize_w`×`upscaling_resize_h` (`resize_mode` 1: scaled
   by the larger ratio, then center-cropped to exactly that size when `upscaling_crop`).
   The size is snapped down to a multiple of 8, as A1111's `Upscaler.upscale` does.
   `upscaler_2` is blended over it by `extras_upscaler_2_visibility`.
2. **GFPGAN**, blended with the image by `gfpgan_visibility` (0: not run).
3. **CodeFormer** with fidelity `codeformer_weight`, blended by `codeformer_visibility`.

`upscale_first` is accepted and, as in A1111 1.10 (which ignores it since its postprocessing
became scripts), changes nothing: a client written for 1.10 gets 1.10's result.
`show_extras_results` only matters to A1111's UI; the API always returns the images.

Every output (the size before a crop included) must fit `max_pixels` (the platform's input
pixel limit, so any output can be sent back in as an input): `check_output_sizes` refuses a
bigger one with a `RequestValidationError` naming the size field.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from a1111.fields import (
    RequestValidationError,
    read_bool,
    read_float,
    read_int,
    read_str,
)
from a1111.infotext import quote_value

EXTRAS_KIND = "extras"
# Upscalers built into A1111's list that need no file.
BUILTIN_RESIZERS = ("None", "Lanczos", "Nearest")
RESTORERS = ("GFPGAN", "CodeFormer")  # in the order they run


@dataclass(frozen=True)
class ExtrasRequest:
    resize_mode: int = 0  # 0: scale by upscaling_resize; 1: to upscaling_resize_w × upscaling_resize_h
    show_extras_results: bool = True
    gfpgan_visibility: float = 0.0
    codeformer_visibility: float = 0.0
    codeformer_weight: float = 0.0
    upscaling_resize: float = 2.0
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0.0
    upscale_first: bool = False
    # Set by `extras_submit`, never by clients: the stored images (storage keys), their names
    # (batch `imageList[].name`) and input sizes, and the files the job runs with, each
    # {"name", "path", "sha256"} under "upscaler_1", "upscaler_2", "GFPGAN", "CodeFormer", "detector".
    images: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    sizes: list[list[int]] = field(default_factory=list)
    resolved_models: dict[str, dict[str, str]] = field(default_factory=dict)
    # what could not run for want of a model and what to install (A1111 degrades: set by `extras_submit`)
    missing_models: list[str] = field(default_factory=list)

    @property
    def upscales(self) -> bool:
        return self.upscaler_1 != "None"

    @property
    def blends_upscaler_2(self) -> bool:
        return self.upscales and self.upscaler_2 != "None" and self.extras_upscaler_2_visibility > 0

    def visibility(self, restorer: str) -> float:
        return self.gfpgan_visibility if restorer == "GFPGAN" else self.codeformer_visibility

    @property
    def restorers(self) -> list[str]:
        """The face restorers this request runs, in order."""
        return [name for name in RESTORERS if self.visibility(name) > 0]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExtrasRequest:
        """Rebuild a request stored by `to_json` (already validated: no checks)."""
        names = cls.__dataclass_fields__.keys()
        return cls(**{key: value for key, value in data.items() if key in names})


def _upscaler_name(data: Mapping[str, Any], name: str) -> str:
    """A built-in resizer in its canonical spelling, else the name as given (a model, resolved at submit)."""
    value = (read_str(data, name, "None", 200) or "None").strip()
    return next((builtin for builtin in BUILTIN_RESIZERS if builtin.lower() == value.lower()), value)


def parse_extras_request(data: Mapping[str, Any]) -> ExtrasRequest:
    """The body's extras settings (the images are read separately, see `inference/inputs/images.py`)."""
    return ExtrasRequest(
        resize_mode=read_int(data, "resize_mode", 0, 0, 1),
        show_extras_results=read_bool(data, "show_extras_results", True),
        gfpgan_visibility=read_float(data, "gfpgan_visibility", 0.0, 0.0, 1.0),
        codeformer_visibility=read_float(data, "codeformer_visibility", 0.0, 0.0, 1.0),
        codeformer_weight=read_float(data, "codeformer_weight", 0.0, 0.0, 1.0),
        upscaling_resize=read_float(data, "upscaling_resize", 2.0, 1.0, 8.0),
        # no upper bound here: past the pixel limit, `check_output_sizes` names the field
        upscaling_resize_w=read_int(data, "upscaling_resize_w", 512, 1, 1_000_000),
        upscaling_resize_h=read_int(data, "upscaling_resize_h", 512, 1, 1_000_000),
        upscaling_crop=read_bool(data, "upscaling_crop", True),
        upscaler_1=_upscaler_name(data, "upscaler_1"),
        upscaler_2=_upscaler_name(data, "upscaler_2"),
        extras_upscaler_2_visibility=read_float(data, "extras_upscaler_2_visibility", 0.0, 0.0, 1.0),
        upscale_first=read_bool(data, "upscale_first", False),
    )


# --- sizes -----------------------------------------------------------------------------------


def upscale_factor(request: ExtrasRequest, width: int, height: int) -> float:
    """How much an image of this size is scaled (A1111: mode 1 scales by the larger ratio)."""
    if request.resize_mode == 1:
        return max(request.upscaling_resize_w / width, request.upscaling_resize_h / height)
    return request.upscaling_resize


def scaled_size(request: ExtrasRequest, width: int, height: int) -> tuple[int, int]:
    """The upscaled size before any crop: `size × factor`, snapped down to a multiple of 8 (A1111's
    `Upscaler.upscale`; never under 8). Without an upscaler, the image's own size.

    Cropping to a target is the exception: snapped down, the image could come out smaller than
    the target, and A1111 then pastes it onto a black canvas with a border; here it is scaled to
    cover the target exactly (no border) instead.
    """
    if not request.upscales:
        return width, height
    factor = upscale_factor(request, width, height)
    if request.resize_mode == 1 and request.upscaling_crop:
        return (max(round(width * factor), request.upscaling_resize_w),
                max(round(height * factor), request.upscaling_resize_h))
    return max(int(width * factor) // 8 * 8, 8), max(int(height * factor) // 8 * 8, 8)


def output_size(request: ExtrasRequest, width: int, height: int) -> tuple[int, int]:
    """The size of the image that comes out: the crop target in mode 1 with `upscaling_crop`."""
    if request.upscales and request.resize_mode == 1 and request.upscaling_crop:
        return request.upscaling_resize_w, request.upscaling_resize_h
    return scaled_size(request, width, height)


def check_output_sizes(request: ExtrasRequest, sizes: Sequence[tuple[int, int]], *, max_pixels: int) -> None:
    """Refuse a request whose upscaled image (before a crop, and after it) is over `max_pixels`."""
    for index, (width, height) in enumerate(sizes):
        scaled_w, scaled_h = scaled_size(request, width, height)
        out_w, out_h = output_size(request, width, height)
        biggest = max(scaled_w * scaled_h, out_w * out_h)
        if biggest <= max_pixels:
            continue
        field_name = "upscaling_resize" if request.resize_mode == 0 else (
            "upscaling_resize_w" if request.upscaling_resize_w / width >= request.upscaling_resize_h / height
            else "upscaling_resize_h"
        )
        which = f" (image {index}, {width}x{height})" if len(sizes) > 1 else f" ({width}x{height})"
        raise RequestValidationError(
            field_name,
            f"the image{which} would be upscaled to {max(scaled_w, out_w)}x{max(scaled_h, out_h)}, over the "
            f"{max_pixels} pixel limit: ask for a smaller size",
        )


# --- what the images say about themselves -----------------------------------------------------


def _number(value: float) -> str:
    return f"{value:g}"


def extras_infotext(request: ExtrasRequest, width: int, height: int) -> str:
    """A1111's postprocessing infotext for one image, e.g. `Postprocess upscale by: 2,
    Postprocess upscaler: R-ESRGAN 4x+, GFPGAN visibility: 1` (entries in A1111's order)."""
    entries: dict[str, str] = {}
    if request.upscales:
        if request.resize_mode == 1:
            entries["Postprocess upscale to"] = f"{request.upscaling_resize_w}x{request.upscaling_resize_h}"
            if request.upscaling_crop:
                entries["Postprocess crop to"] = f"{request.upscaling_resize_w}x{request.upscaling_resize_h}"
        else:
            entries["Postprocess upscale by"] = _number(request.upscaling_resize)
        entries["Postprocess upscaler"] = request.upscaler_1
        if request.blends_upscaler_2:
            entries["Postprocess upscaler 2"] = request.upscaler_2
    if request.gfpgan_visibility > 0:
        entries["GFPGAN visibility"] = _number(round(request.gfpgan_visibility, 3))
    if request.codeformer_visibility > 0:
        entries["CodeFormer visibility"] = _number(round(request.codeformer_visibility, 3))
        entries["CodeFormer weight"] = _number(round(request.codeformer_weight, 3))
    return ", ".join(f"{key}: {quote_value(value)}" for key, value in entries.items())


def plaintext_to_html(text: str) -> str:
    """A1111's `html_info` (`ui_common.plaintext_to_html`)."""
    return "<p>" + "<br>\n".join(html.escape(line) for line in text.split("\n")) + "</p>"


def with_inputs(
    request: ExtrasRequest, *, keys: list[str], names: list[str], sizes: Sequence[tuple[int, int]]
) -> ExtrasRequest:
    return replace(request, images=list(keys), names=list(names), sizes=[[w, h] for w, h in sizes])
