"""ControlNet on the request side: the API's units and their images, before any job exists.

Adapters (`/sdapi/v1/txt2img`, `/sdapi/v1/img2img`, the native jobs API) call
`with_controlnet_inputs(body, generation, inputs)` after `parse_generation_request`. It reads
`alwayson_scripts.controlnet.args` (any case: webuiapi sends `ControlNet`) in the
sd-webui-controlnet form and PAI-EAS's `image_link` form, validates every enabled unit
(`parse_controlnet_args`), and decodes each unit's image exactly as init images are decoded
(base64, data URI, or an http(s) URL through the SSRF-safe `Fetcher`; the same byte and pixel
caps; re-encoded as a plain PNG). The units go into the `GenerationRequest`, the PNGs into
`InputImages.controlnet_images`; `job_submit` then resolves each model against the member's
visible ControlNet folders and stores each image content-addressed in their `inputs/` folder.

Bad fields raise `RequestValidationError` naming the field (e.g.
`alwayson_scripts.controlnet.args[1].weight`), bad images `ImageInputError`.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from PIL import Image

from inference.inputs.fetch import Fetcher
from a1111.images import ImageInputError, decode_image
from a1111.generation import ControlNetUnitRequest, GenerationRequest
from inference.inputs.images import InputImages, default_fetcher

_SETTINGS = (
    "module", "weight", "guidance_start", "guidance_end", "control_mode", "resize_mode", "processor_res",
    "threshold_a", "threshold_b", "pixel_perfect", "save_detected_map", "field", "model_hash",
)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def controlnet_units_parse(body: Mapping[str, Any], *, kind: str) -> list[dict[str, Any]]:
    """The enabled units of the body, validated (no I/O); a `RequestValidationError` naming the
    field (`parse_controlnet_args` raises `ControlNetArgumentError`, one of those)."""
    from a1111.controlnet import parse_controlnet_args

    alwayson = body.get("alwayson_scripts")
    return parse_controlnet_args(alwayson if isinstance(alwayson, Mapping) else None, allow_missing_image=kind == "img2img")


def with_controlnet_inputs(
    body: Mapping[str, Any],
    generation: GenerationRequest,
    inputs: InputImages | None,
    *,
    fetcher_factory: Callable[[], Fetcher] | None = default_fetcher,
) -> tuple[GenerationRequest, InputImages | None]:
    """`generation` with the body's ControlNet units, `inputs` with their decoded images.

    Unchanged when no unit is enabled. `fetcher_factory=None` refuses image URLs (for callers on
    Django's one sync thread, as `read_input_images`). An img2img unit without an image uses the
    first init image, as the extension does.
    """
    units = controlnet_units_parse(body, kind=generation.kind)
    if not units:
        return generation, inputs
    fetcher = fetcher_factory() if fetcher_factory is not None else None
    images: list[bytes | None] = []
    for unit in units:
        if unit["image"] is None:
            images.append(None)
            continue
        where = f"{unit['field']}.{unit['image_field']}"
        try:
            image = decode_image(
                unit["image"],
                max_bytes=settings.ATELIER_MAX_UPLOAD_BYTES,
                max_pixels=settings.ATELIER_MAX_INPUT_PIXELS,
                fetch=fetcher,
            )
        except ImageInputError as exc:
            raise ImageInputError(f"{where}: {exc.message}") from None
        images.append(_png(image))
    requests = [ControlNetUnitRequest(model=unit["model"], **{k: unit[k] for k in _SETTINGS}) for unit in units]
    generation = dataclasses.replace(generation, controlnet_units=requests)
    return generation, dataclasses.replace(inputs or InputImages(), controlnet_images=images)


def controlnet_infotext_entries(units: list[ControlNetUnitRequest]) -> dict[str, str]:
    """The extension's `ControlNet 0: "Module: canny, Model: name [hash8], …"` infotext entries."""
    from a1111.controlnet import controlnet_infotext

    return controlnet_infotext([dataclasses.asdict(unit) for unit in units])
