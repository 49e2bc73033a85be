"""Reading A1111 generation parameters back out of images (``POST /sdapi/v1/png-info``).

* :func:`read_png_info` finds the ``parameters`` infotext the way A1111's
  ``images.read_info_from_image`` does: a PNG ``tEXt``/``iTXt``/``zTXt`` chunk, or the EXIF
  ``UserComment`` that A1111 writes into JPEG and WebP files (or a GIF comment). The other text
  chunks come back as ``items``.
* :func:`png_bytes` writes an image as a PNG with its infotext (the workers' images, the X/Y/Z
  plot's grid).
* :func:`parse_generation_parameters` ports ``infotext_utils.parse_generation_parameters``
  (v1.10.1): prompt, negative prompt, the trailing ``Key: value, ...`` line, ``Size`` split into
  ``Size-1``/``Size-2``, and the defaults A1111 fills in for keys an infotext leaves out.

Pure: no Django; reading decodes no pixels (only headers and metadata are read).
"""

from __future__ import annotations

import io
import json
import re
import warnings
import zlib

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from a1111.images import ImageInputError

__all__ = ["PNGINFO_MAX_PIXELS", "parse_generation_parameters", "png_bytes", "read_png_info"]

#: ``read_png_info`` refuses headers claiming more pixels than this before reading further.
PNGINFO_MAX_PIXELS = 16384 * 16384

# A1111 `images.IGNORED_INFO_KEYS`: Pillow info entries that are not text metadata.
_IGNORED_INFO_KEYS = frozenset(
    {
        "jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi", "exif", "loop", "background",
        "timestamp", "duration", "progressive", "progression", "icc_profile", "chromaticity",
        "photoshop",
    }
)  # fmt: skip

_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
_USER_COMMENT_ENCODINGS = {
    b"ASCII\x00\x00\x00": "ascii",
    b"UNICODE\x00": "utf_16_be",
    b"JIS\x00\x00\x00\x00\x00": "shift_jis",
}

# A1111 `infotext_utils.re_param_code` / `re_imagesize`.
_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_RE_IMAGESIZE = re.compile(r"^(\d+)x(\d+)$")

# Defaults A1111 fills in when the infotext has no such key (only those whose value is a
# string; A1111 also adds a few numeric/boolean ones such as "Masked area padding": 32, which
# do not fit this module's dict[str, str] and are left to the caller).
_STRING_DEFAULTS: tuple[tuple[str, str], ...] = (
    ("Clip skip", "1"),
    ("Hires sampler", "Use same sampler"),
    ("Hires schedule type", "Use same scheduler"),
    ("Hires checkpoint", "Use same checkpoint"),
    ("Hires prompt", ""),
    ("Hires negative prompt", ""),
    ("Mask mode", "Inpaint masked"),
    ("Masked content", "original"),
    ("Inpaint area", "Whole picture"),
    ("RNG", "GPU"),
    ("Schedule type", "Automatic"),
    ("VAE Encoder", "Full"),
    ("VAE Decoder", "Full"),
    ("FP8 weight", "Disable"),
)


def read_png_info(data: bytes, *, max_pixels: int = PNGINFO_MAX_PIXELS) -> tuple[str | None, dict[str, str]]:
    """Return ``(parameters, items)`` for an encoded image: the A1111 infotext (None if absent)
    and the image's other text metadata.

    Only metadata is read. Text chunks placed after the image data (rare; Pillow and A1111 write
    them first) are picked up by decoding the pixels, which happens only for images within
    ``max_pixels``. Raises :class:`~a1111.images.ImageInputError` (a ValueError) for
    data that is not an image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageInputError("not an image, or an image too large to read") from exc
    except Exception as exc:
        raise ImageInputError("not a valid image: the file is corrupt") from exc

    with image:
        info = dict(image.info or {})
        if image.format == "PNG" and image.size[0] * image.size[1] <= max_pixels:
            try:
                image.load()  # late tEXt/iTXt chunks (after IDAT) are only seen on load
                info = {**info, **(image.info or {})}
            except Exception:
                pass  # corrupt pixels do not hide the metadata already read
        exif_comment = _exif_user_comment(image) if "exif" in info else None

    parameters = info.pop("parameters", None)
    if exif_comment:
        parameters = exif_comment
    elif "comment" in info and parameters is None:  # GIF
        comment = info["comment"]
        parameters = comment.decode("utf-8", errors="ignore") if isinstance(comment, bytes) else str(comment)

    items: dict[str, str] = {}
    for key, value in info.items():
        if key in _IGNORED_INFO_KEYS or key == "parameters":
            continue
        if isinstance(value, bytes):
            items[str(key)] = value.decode("utf-8", errors="replace")
        elif isinstance(value, str):
            items[str(key)] = value
    if parameters is not None and not isinstance(parameters, str):
        parameters = str(parameters)
    return parameters, items


def _exif_user_comment(image: Image.Image) -> str | None:
    """The EXIF UserComment as piexif's ``UserComment.load`` decodes it (A1111 writes
    ``b"UNICODE\\0" + text.encode("utf_16_be")``)."""
    try:
        raw = image.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    except Exception:
        return None
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw or None
    raw = bytes(raw)
    encoding = _USER_COMMENT_ENCODINGS.get(raw[:8])
    if encoding is None:
        text = raw.decode("utf-8", errors="ignore")  # A1111's fallback
    else:
        body = raw[8:]
        if encoding == "utf_16_be" and len(body) >= 2 and body[0] != 0 and body[1] == 0:
            encoding = "utf_16_le"  # some writers use little-endian despite the prefix
        text = body.decode(encoding, errors="replace")
    text = text.rstrip("\x00")
    return text or None


def _unquote(text: str) -> str:
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str) else text


def parse_generation_parameters(text: str) -> dict[str, str]:
    """Parse an A1111 infotext into A1111's ``parameters`` dict (all values strings)::

        a cat
        Negative prompt: blurry
        Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x768

    gives ``{"Steps": "20", ..., "Size-1": "512", "Size-2": "768", "Prompt": "a cat",
    "Negative prompt": "blurry", "Clip skip": "1", "RNG": "GPU", ...}``. The last line counts as
    parameters only if it holds at least three ``key: value`` pairs; otherwise it belongs to the
    prompt (or negative prompt). Quoted values are JSON-unquoted."""
    result: dict[str, str] = {}
    prompt = ""
    negative_prompt = ""
    done_with_prompt = False

    *lines, last_line = text.strip().split("\n")
    if len(_RE_PARAM.findall(last_line)) < 3:
        lines.append(last_line)
        last_line = ""

    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[len("Negative prompt:") :].strip()
        if done_with_prompt:
            negative_prompt += ("" if negative_prompt == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line

    for key, value in _RE_PARAM.findall(last_line):
        if value and value[0] == '"' and value[-1] == '"':
            value = _unquote(value)
        size = _RE_IMAGESIZE.match(value)
        if size is not None:
            result[f"{key}-1"] = size.group(1)
            result[f"{key}-2"] = size.group(2)
        else:
            result[key] = value

    result["Prompt"] = prompt
    result["Negative prompt"] = negative_prompt

    hypernet = result.get("Hypernet")
    if hypernet is not None:
        result["Prompt"] += f"<hypernet:{hypernet}:{result.get('Hypernet strength', '1.0')}>"

    for key, default in _STRING_DEFAULTS:
        result.setdefault(key, default)
    if "Emphasis" not in result and _uses_emphasis(prompt + "\n" + negative_prompt):
        result["Emphasis"] = "Original"
    return result


_RE_ATTENTION = re.compile(r"\\[()\[\]\\]|\((?:[^()\\]|\\.)*:\s*[+-]?[\d.]+\s*\)|\(|\[")


def _uses_emphasis(text: str) -> bool:
    """Whether a prompt has attention syntax giving some text a weight other than 1: an unescaped
    ``(`` or ``[`` (which, like A1111, includes ``[from:to:when]``) other than ``(text:1.0)``.
    A close approximation of A1111's check over ``prompt_parser.parse_prompt_attention``."""
    for match in _RE_ATTENTION.finditer(text):
        token = match.group(0)
        if token.startswith("\\"):
            continue
        weight = re.search(r":\s*([+-]?[\d.]+)\s*\)$", token)
        if weight is not None:
            try:
                if float(weight.group(1)) == 1.0:
                    continue
            except ValueError:
                pass
        return True
    return False


#: Pillow's (and so A1111's) zlib level for PNGs; the platform passes its own (ATELIER_PNG_COMPRESS_LEVEL).
PILLOW_COMPRESS_LEVEL = 6
#: The zlib strategy the platform's PNGs use: run-length matches only. On 512×512 photographs it
#: encoded 15-35% faster than level 1's default strategy, for files 6-8% smaller (docs/PERFORMANCE.md).
PLATFORM_ZLIB_STRATEGY = zlib.Z_RLE


def png_bytes(
    image: Image.Image, infotext: str, key: str = "parameters", *, compress_level: int = PILLOW_COMPRESS_LEVEL,
    zlib_strategy: int = zlib.Z_DEFAULT_STRATEGY,
) -> bytes:
    """A PNG with the infotext in a text chunk: `parameters` for generations (A1111's key).

    `compress_level` (0-9) and `zlib_strategy` only trade encoding time for file size; the pixels
    and the infotext are the same whatever they are (level 1 encodes a 512×512 picture several
    times faster than Pillow's 6, for files some 15% larger; `PLATFORM_ZLIB_STRATEGY` faster still
    and smaller than level 1 alone: see docs/PERFORMANCE.md)."""
    info = PngImagePlugin.PngInfo()
    info.add_text(key, infotext)  # tEXt, or iTXt for non-Latin-1 prompts
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=compress_level, compress_type=zlib_strategy)
    return buffer.getvalue()
