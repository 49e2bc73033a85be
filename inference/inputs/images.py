"""Input images from an API body: decoded, checked and normalised before any job exists.

Adapters (`/sdapi/v1/img2img`, the native jobs API) call `read_input_images(body)`; the Extras
ones (`/sdapi/v1/extra-*`, native `kind: "extras"`) call `read_extras_images(body, batch=…)`
for `image` / `imageList`. `read_input_images` reads
`init_images` (raw base64, data URIs or http(s) URLs), PAI-EAS's `alwayson_scripts.image_link`
(one URL, in place of `init_images`) and `mask`, and returns them re-encoded as plain PNGs. What
a client sent is never stored as sent: re-encoding drops metadata and anything that merely
claimed to be an image. URLs are fetched by the SSRF-safe `Fetcher` (public addresses only,
re-checked on every redirect, byte and time limits). Every refusal is an `ImageInputError`
whose message says what to fix.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from PIL import Image

from inference.inputs.fetch import Fetcher
from a1111.images import ImageInputError, decode_image


@dataclass(frozen=True)
class InputImages:
    """PNG bytes of the init images and the optional mask, in the order the client sent them."""

    init_images: list[bytes] = field(default_factory=list)
    mask: bytes | None = None
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (width, height) of each init image
    mask_size: tuple[int, int] | None = None
    # A1111's `latent_mask`: the mask of the latent-space blend and fills, instead of `mask` (any size)
    latent_mask: bytes | None = None
    # one PNG per ControlNet unit (None: the unit uses the init image); see controlnet_requests.py
    controlnet_images: list[bytes | None] = field(default_factory=list)


def default_fetcher() -> Fetcher:
    return Fetcher(
        max_bytes=settings.ATELIER_MAX_UPLOAD_BYTES,
        timeout_s=settings.ATELIER_FETCH_TIMEOUT_SECONDS,
        allow_private=settings.ATELIER_FETCH_ALLOW_PRIVATE,
    )


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # fast: these files are read once or twice
    return buffer.getvalue()


def read_input_images(
    body: Mapping[str, Any],
    *,
    max_images: int,
    fetcher_factory: Callable[[], Fetcher] | None = default_fetcher,
) -> InputImages:
    """The body's init images and mask; raises `ImageInputError` naming the field at fault.

    `fetcher_factory=None` refuses URLs: for callers that run on Django's one shared sync
    thread, where a slow URL would stall every other request (the async `/sdapi/v1` views
    fetch off that thread).
    """
    alwayson = body.get("alwayson_scripts") if isinstance(body.get("alwayson_scripts"), Mapping) else {}
    image_link = alwayson.get("image_link") if alwayson else None
    sources = body.get("init_images")
    labels = [f"init_images[{index}]" for index in range(len(sources))] if isinstance(sources, list) else []
    if image_link not in (None, ""):
        if not isinstance(image_link, str):
            raise ImageInputError("alwayson_scripts.image_link: must be an http(s) URL string")
        sources, labels = [image_link], ["alwayson_scripts.image_link"]
    if sources is None or sources == []:
        raise ImageInputError("init_images: send at least one image (base64, data URI or URL), or an image_link")
    if not isinstance(sources, list):
        raise ImageInputError("init_images: must be a list of images")
    if len(sources) > max_images:
        raise ImageInputError(f"init_images: {len(sources)} images sent; at most {max_images} (one per batch image)")

    fetcher = fetcher_factory() if fetcher_factory is not None else None

    def decode(value: Any, where: str) -> Image.Image:
        try:
            return decode_image(
                value,
                max_bytes=settings.ATELIER_MAX_UPLOAD_BYTES,
                max_pixels=settings.ATELIER_MAX_INPUT_PIXELS,
                fetch=fetcher,
            )
        except ImageInputError as exc:
            raise ImageInputError(f"{where}: {exc.message}") from None

    images = [decode(value, label) for value, label in zip(sources, labels, strict=True)]
    mask_value = body.get("mask")
    mask = decode(mask_value, "mask") if mask_value not in (None, "") else None
    if mask is not None:
        for index, image in enumerate(images):
            if image.size != mask.size:
                raise ImageInputError(
                    f"mask: it is {mask.width}x{mask.height} but init_images[{index}] is "
                    f"{image.width}x{image.height}; send a mask of the same size as the image"
                )
    latent_value = body.get("latent_mask")
    latent_mask = decode(latent_value, "latent_mask") if latent_value not in (None, "") and mask is not None else None
    return InputImages(
        init_images=[_png(image) for image in images],
        mask=_png(mask) if mask is not None else None,
        latent_mask=_png(latent_mask) if latent_mask is not None else None,
        sizes=[image.size for image in images],
        mask_size=mask.size if mask is not None else None,
    )


@dataclass(frozen=True)
class ExtrasInputs:
    """The images of an Extras request as PNG bytes, with their names and (width, height)."""

    images: list[bytes]
    names: list[str]
    sizes: list[tuple[int, int]]


def read_extras_images(
    body: Mapping[str, Any],
    *,
    batch: bool,
    fetcher_factory: Callable[[], Fetcher] | None = default_fetcher,
) -> ExtrasInputs:
    """`image` (`/extra-single-image`) or `imageList: [{"data", "name"}]` (`/extra-batch-images`),
    decoded with the same byte and pixel limits as init images. Alpha is dropped: every
    postprocessing step works on RGB, as A1111's upscalers and restorers do. A batch may hold
    as many images as one generation request may make (batch size × n_iter limits)."""
    max_images = settings.ATELIER_MAX_BATCH_SIZE * settings.ATELIER_MAX_N_ITER
    if batch:
        entries = body.get("imageList")
        if not isinstance(entries, list) or not entries:
            raise ImageInputError('imageList: send a list of {"data": base64 image, "name": str}')
        if len(entries) > max_images:
            raise ImageInputError(f"imageList: {len(entries)} images sent; at most {max_images} per request")
        sources, names, labels = [], [], []
        for index, entry in enumerate(entries):
            if not isinstance(entry, Mapping):
                raise ImageInputError(f'imageList[{index}]: must be {{"data": base64 image, "name": str}}')
            sources.append(entry.get("data"))
            name = entry.get("name")
            names.append(name[:200] if isinstance(name, str) and name else f"image{index:05d}")
            labels.append(f"imageList[{index}].data")
    else:
        sources, names, labels = [body.get("image")], ["image"], ["image"]
        if sources[0] in (None, ""):
            raise ImageInputError("image: send an image (base64, data URI or URL)")
    fetcher = fetcher_factory() if fetcher_factory is not None else None
    images = []
    for value, label in zip(sources, labels, strict=True):
        try:
            image = decode_image(
                value, max_bytes=settings.ATELIER_MAX_UPLOAD_BYTES, max_pixels=settings.ATELIER_MAX_INPUT_PIXELS,
                fetch=fetcher,
            )
        except ImageInputError as exc:
            raise ImageInputError(f"{label}: {exc.message}") from None
        images.append(image.convert("RGB"))
    return ExtrasInputs(images=[_png(image) for image in images], names=names, sizes=[image.size for image in images])
