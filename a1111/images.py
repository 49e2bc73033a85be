"""Turning the images that A1111 API clients send into Pillow images, safely.

Clients put images into ``init_images``, ``mask``, ControlNet units and ``/png-info`` as raw base64,
as ``data:image/...;base64,`` URIs or (where the caller allows it) as http(s) URLs. Everything here
treats that input as hostile:

* :func:`decode_image` caps the encoded size before decoding, reads the pixel dimensions from the
  header before any pixel is decoded (a few-KB PNG can claim 50000×50000 pixels), accepts only
  PNG, JPEG, WebP, GIF (first frame) and BMP, and returns a fully loaded RGB or RGBA image.
* Image URLs are fetched by whatever ``fetch`` object the caller passes (:class:`UrlFetcher`);
  the control plane passes :class:`inference.inputs.fetch.Fetcher`, which keeps the download off
  the platform's own network (SSRF). This module does no network I/O itself.

The module is part of the pure A1111 vocabulary (no Django, no network); callers pass limits from settings as arguments. Every error a
client can cause is an :class:`ImageInputError` whose message can be shown to that client.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from typing import Protocol

from PIL import Image, ImageOps, UnidentifiedImageError

from a1111.errors import InvalidField

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "ImageInputError",
    "UrlFetcher",
    "decode_image",
    "decode_image_bytes",
    "open_image",
]

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 4096 * 4096

#: Pillow format names that :func:`decode_image` opens. Everything else is refused by name.
ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF", "BMP")

_WHITESPACE = re.compile(r"\s+")
_DATA_URI = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(?:;[^;,]*)*),", re.IGNORECASE)

# Magic numbers of formats that are images but not accepted, only to word the error message.
_OTHER_FORMATS: tuple[tuple[bytes, str], ...] = (
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"%PDF", "PDF"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"qoif", "QOI"),
)


class UrlFetcher(Protocol):
    """What :func:`decode_image` needs to read an image URL (``inference.inputs.fetch.Fetcher``)."""

    def fetch(self, url: str) -> bytes: ...


class ImageInputError(InvalidField):
    """A client-supplied image (or image URL) was refused; ``str(error)`` is safe to show them.

    An :class:`~a1111.errors.InvalidField` (a ``ValueError``): ``ImageInputError(message)``,
    with ``field=`` where the caller knows which one.
    """


# --------------------------------------------------------------------------------------------
# Decoding


def decode_image(
    value: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    fetch: UrlFetcher | None = None,
) -> Image.Image:
    """Decode a client-supplied image: raw base64, a ``data:image/...;base64,`` URI, or an http(s)
    URL when ``fetch`` is given. Returns a fully loaded, detached RGB or RGBA image (EXIF
    orientation applied, as A1111's ``fix_image`` does). Raises :class:`ImageInputError`."""
    data = decode_image_bytes(value, max_bytes=max_bytes, fetch=fetch)
    return open_image(data, max_bytes=max_bytes, max_pixels=max_pixels)


def decode_image_bytes(value: str, *, max_bytes: int = DEFAULT_MAX_BYTES, fetch: UrlFetcher | None = None) -> bytes:
    """The encoded image bytes behind ``value`` (base64, data URI, or URL when ``fetch`` is
    given), size-capped but not yet opened - for callers such as ``/png-info`` that need the
    file itself. Raises :class:`ImageInputError`."""
    if not isinstance(value, str):
        raise ImageInputError("image must be a base64 string")
    text = value.strip()
    if not text:
        raise ImageInputError("image is empty")
    lowered = text[:16].lower()
    if lowered.startswith(("http://", "https://")):
        if fetch is None:
            raise ImageInputError("image URLs are not accepted here; send the image as base64")
        data = fetch.fetch(text)
    elif lowered.startswith("data:"):
        data = _decode_base64(_data_uri_payload(text), max_bytes=max_bytes)
    elif re.match(r"^[a-z][a-z0-9+.-]*://", lowered):
        raise ImageInputError("URL not allowed: only http and https URLs are accepted")
    else:
        data = _decode_base64(text, max_bytes=max_bytes)
    if len(data) > max_bytes:
        raise ImageInputError(f"image is {len(data)} bytes; the limit is {max_bytes} bytes")
    return data


def open_image(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Open already-decoded image bytes with the same checks as :func:`decode_image`."""
    if len(data) > max_bytes:
        raise ImageInputError(f"image is {len(data)} bytes; the limit is {max_bytes} bytes")
    if not data:
        raise ImageInputError("image is empty")
    with warnings.catch_warnings():
        # Pillow's own bomb guard must refuse too, whatever max_pixels the caller chose.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_many_pixels(_header_size(data), max_pixels) from exc
        except UnidentifiedImageError as exc:
            raise ImageInputError(_unidentified_message(data)) from exc
        except Exception as exc:  # malformed headers raise all sorts (SyntaxError, struct.error, ...)
            raise ImageInputError("not a valid image: the file is corrupt") from exc

        width, height = image.size
        if width <= 0 or height <= 0 or width * height > max_pixels:
            image.close()
            if width <= 0 or height <= 0:
                raise ImageInputError("not a valid image: it has no pixels")
            raise _too_many_pixels((width, height), max_pixels)

        try:
            image.seek(0)  # GIF/WebP: the first frame only
            image.load()
            return _normalise(image)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_many_pixels((width, height), max_pixels) from exc
        except Exception as exc:
            raise ImageInputError("not a valid image: the data is truncated or corrupt") from exc
        finally:
            image.close()


def _data_uri_payload(text: str) -> str:
    match = _DATA_URI.match(text[:256])
    if match is None:
        raise ImageInputError("not a valid data URI")
    mime = match["mime"].strip().lower()
    params = [p.strip().lower() for p in match["params"].split(";") if p.strip()]
    if mime and not mime.startswith("image/"):
        raise ImageInputError(f"data URI is {mime!r}, not an image")
    if "base64" not in params:
        raise ImageInputError("data URI must be base64-encoded (data:image/...;base64,...)")
    return text[match.end() :]


def _decode_base64(text: str, *, max_bytes: int) -> bytes:
    # 4 characters carry 3 bytes; allow padding. Check before stripping (cheap, bounds the work)
    # and again after, since MIME-style base64 may wrap lines.
    limit = 4 * -(-max_bytes // 3)
    if len(text) > 2 * limit + 1024:
        raise _too_large_encoded(len(text), max_bytes)
    text = _WHITESPACE.sub("", text)
    if len(text) > limit:
        raise _too_large_encoded(len(text), max_bytes)
    text += "=" * (-len(text) % 4)  # some clients drop the padding
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageInputError("not valid base64") from exc
    if not data:
        raise ImageInputError("image is empty")
    return data


def _too_large_encoded(length: int, max_bytes: int) -> ImageInputError:
    return ImageInputError(
        f"image data is too large ({length} base64 characters, about {length * 3 // 4} bytes); "
        f"the limit is {max_bytes} bytes"
    )


def _too_many_pixels(size: tuple[int, int] | None, max_pixels: int) -> ImageInputError:
    if size is None:
        return ImageInputError(f"image has too many pixels; the limit is {max_pixels} pixels")
    return ImageInputError(f"image is {size[0]}×{size[1]} pixels; the limit is {max_pixels} pixels")


def _header_size(data: bytes) -> tuple[int, int] | None:
    """The dimensions a header claims, read with the format plugin directly (no bomb check, no
    pixel decoding) - only to word the error once Pillow has refused the image as a bomb."""
    Image.init()
    prefix = data[:16]
    for name in ALLOWED_FORMATS:
        factory, accept = Image.OPEN[name]
        try:
            if accept is not None and accept(prefix) is not True:
                continue
            with factory(io.BytesIO(data), None) as image:
                return image.size
        except Exception:
            continue
    return None


def _unidentified_message(data: bytes) -> str:
    for magic, name in _OTHER_FORMATS:
        if data.startswith(magic):
            return f"unsupported image format {name}; PNG, JPEG, WebP, GIF and BMP are accepted"
    if data[4:12] in (b"ftypavif", b"ftypheic", b"ftypheix", b"ftypmif1"):
        return "unsupported image format AVIF/HEIF; PNG, JPEG, WebP, GIF and BMP are accepted"
    head = data[:256].lstrip().lower()
    if head.startswith((b"<svg", b"<?xml")):
        return "unsupported image format SVG; PNG, JPEG, WebP, GIF and BMP are accepted"
    return "not an image (PNG, JPEG, WebP, GIF and BMP are accepted)"


def _normalise(image: Image.Image) -> Image.Image:
    """A detached RGB/RGBA copy, upright per its EXIF orientation."""
    transposed = ImageOps.exif_transpose(image)  # a new image when a rotation was applied
    source = transposed if transposed is not None else image
    has_alpha = source.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        source.mode == "P" and "transparency" in source.info
    ) or (source.mode in ("L", "RGB") and "transparency" in source.info)
    target = "RGBA" if has_alpha else "RGB"
    if source.mode == target:
        return source.copy() if source is image else source
    if source.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        source = source.convert("I").point(lambda v: v / 256).convert("L")
    return source.convert(target)
