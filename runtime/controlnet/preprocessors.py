"""ControlNet preprocessors ("annotators") that need no model: canny, scribble, lineart_standard, ...

A ControlNet is conditioned on a *control map* (edges, a scribble, a blurred image, ...). The
sd-webui-controlnet extension computes that map from the user's image with a named preprocessor
(its API field ``module``); :func:`preprocess` does the same for the preprocessors that are plain
image operations, with the extension's arithmetic (``scripts/processor.py``), so a map made here
matches one made by A1111:

* the image is flattened to RGB (transparency composited over white, as the extension's ``HWC3``);
* most preprocessors first resize it so its *short side* is ``resolution`` pixels (the extension's
  "Preprocessor Resolution"; cubic when enlarging, area when shrinking);
* ``threshold_a``/``threshold_b`` are the preprocessor's two sliders (canny's low/high threshold,
  the XDoG threshold, the Gaussian sigma, ...); a negative value means "the preprocessor's default",
  as the extension's API sends ``-1``.

Preprocessors that need a neural network (depth, openpose, HED, ...) are known by name but not
installed: asking for one raises :class:`~a1111.controlnet.ControlNetError` saying so.
Names are matched case-insensitively, and the extension's UI labels and legacy names are accepted
as aliases (``"Canny"``, ``"invert (from white bg & black line)"``, ``"depth"`` -> ``depth_midas``).

Everything here is pure (PIL/numpy/OpenCV in, PIL out); no global state is kept. The name tables
(aliases, default thresholds, :func:`canonical_module`) live in :mod:`a1111.preprocessors` so the
web process and the workspace read them without loading OpenCV; they are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import cv2
import numpy as np
from PIL import Image

from a1111.controlnet import ControlNetError
from a1111.preprocessors import (
    MODEL_PREPROCESSORS,
    PREPROCESSOR_DEFAULTS,
    PREPROCESSOR_NAMES,
    UNSUPPORTED_PREPROCESSORS,
    available_preprocessors,
    canonical_module,
    default_thresholds,
)

__all__ = [
    "MODEL_PREPROCESSORS",
    "PREPROCESSORS",
    "PREPROCESSOR_DEFAULTS",
    "UNSUPPORTED_PREPROCESSORS",
    "available_preprocessors",
    "canonical_module",
    "default_thresholds",
    "preprocess",
    "to_rgb_array",
]

# A preprocessor: RGB uint8 array (H, W, 3) -> RGB uint8 array, with the resolution and both sliders.
Preprocessor = Callable[[np.ndarray, int, float, float], np.ndarray]


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """``image`` as an RGB uint8 array; transparency is composited over white (the extension's HWC3)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        alpha = rgba[:, :, 3:4] / 255.0
        flat = rgba[:, :, :3] * alpha + 255.0 * (1.0 - alpha)
        return flat.clip(0, 255).astype(np.uint8)
    return np.array(image.convert("RGB"), dtype=np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))


def _resize_short_side(rgb: np.ndarray, resolution: int) -> np.ndarray:
    """Resize so the short side is ``resolution`` (the extension's ``resize_image_with_pad``, unpadded).

    The extension also pads to a multiple of 64 (edge mode) and crops the result back; that only
    matters for neural annotators, so it is left out here.
    """
    height, width = rgb.shape[:2]
    k = float(resolution) / float(min(height, width))
    target_h, target_w = max(1, int(np.round(height * k))), max(1, int(np.round(width * k)))
    if (target_h, target_w) == (height, width):
        return rgb
    interpolation = cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA
    return cv2.resize(rgb, (target_w, target_h), interpolation=interpolation)


def _none(rgb: np.ndarray, resolution: int, threshold_a: float, threshold_b: float) -> np.ndarray:
    return rgb


def _canny(rgb: np.ndarray, resolution: int, threshold_a: float, threshold_b: float) -> np.ndarray:
    edges = cv2.Canny(_resize_short_side(rgb, resolution), float(threshold_a), float(threshold_b))
    return _gray_to_rgb(edges)


def _invert(rgb: np.ndarray, resolution: int, threshold_a: float, threshold_b: float) -> np.ndarray:
    return 255 - rgb


def _scribble_threshold(rgb: np.ndarray, resolution: int, threshold_a: float, threshold_b: float) -> np.ndarray:
    """Dark strokes on a light background become white strokes on black (the extension's ``scribble_thr``)."""
    rgb = _resize_short_side(rgb, resolution)
    result = np.zeros_like(rgb)
    result[np.min(rgb, axis=2) < 127] = 255
    return result


def _scribble_xdog(rgb: np.ndarray, resolution: int, threshold_a: float, threshold_b: float) -> np.ndarray:
    rgb = _resize_short_side(rgb, resolution)
    g1 = cv2.GaussianBlur(rgb.astype(np.float32), (0, 0), 0.5)
    g2 = cv2.GaussianBlur(rgb.astype(np.float32), (0, 0), 5.0)
    dog = (255 - np.min(g2 - g1, axis=2)).clip(0, 255).astype(np.uint8)
    result = np.zeros_like(rgb)
    result[2 * (255 - dog.astype(np.int32)) > threshold_a] = 255
    return result


def _lineart_standard(rgb: np.ndarray, resolution: int, threshold_a: float, threshold_b: float) -> np.ndarray:
    x = _resize_short_side(rgb, resolution).astype(np.float32)
    blurred = cv2.GaussianBlur(x, (0, 0), 6.0)
    intensity = np.min(blurred - x, axis=2).clip(0, 255)
    strong = intensity[intensity > 8]
    # The extension divides by max(16, median): on a flat image the median is NaN and max() keeps 16.
    scale = max(16.0, float(np.median(strong))) if strong.size else 16.0
    intensity = intensity / scale * 127
    return _gray_to_rgb(intensity.clip(0, 255).astype(np.uint8))


def _threshold(rgb: np.ndarray, resolution: int, threshold_a: float, threshold_b: float) -> np.ndarray:
    rgb = _resize_short_side(rgb, resolution)
    result = np.zeros_like(rgb)
    result[np.min(rgb, axis=2) > threshold_a] = 255
    return result


def _blur_gaussian(rgb: np.ndarray, resolution: int, threshold_a: float, threshold_b: float) -> np.ndarray:
    rgb = _resize_short_side(rgb, resolution)
    return cv2.GaussianBlur(rgb, (0, 0), max(float(threshold_a), 0.01))


def _tile_resample(rgb: np.ndarray, resolution: int, threshold_a: float, threshold_b: float) -> np.ndarray:
    """Downsample by ``threshold_a`` (the "Down Sampling Rate"); below 1.1 the image is kept as is."""
    if threshold_a < 1.1:
        return rgb
    height, width = rgb.shape[:2]
    target = (max(1, int(width / threshold_a)), max(1, int(height / threshold_a)))
    return cv2.resize(rgb, target, interpolation=cv2.INTER_AREA)


PREPROCESSORS: Mapping[str, Preprocessor] = MappingProxyType(
    {
        "none": _none,
        "canny": _canny,
        "invert": _invert,
        "scribble": _scribble_threshold,
        "scribble_xdog": _scribble_xdog,
        "lineart_standard": _lineart_standard,
        "threshold": _threshold,
        "blur_gaussian": _blur_gaussian,
        "tile_resample": _tile_resample,
    }
)
"""Model-free preprocessors by canonical (extension) name."""
if tuple(PREPROCESSORS) != PREPROCESSOR_NAMES:  # the name table (a1111) and the code must agree
    raise ImportError("runtime.controlnet.preprocessors.PREPROCESSORS differs from a1111.preprocessors.PREPROCESSOR_NAMES")


def _error(message: str) -> Exception:
    return ControlNetError(message)


def preprocess(
    module: str,
    image: Image.Image,
    *,
    resolution: int,
    threshold_a: float,
    threshold_b: float,
) -> Image.Image:
    """The control map of ``image`` made by preprocessor ``module`` (an RGB image).

    ``resolution`` is the short side the image is resized to before the operation (ignored by
    ``none``, ``invert`` and ``tile_resample``, as in the extension); negative thresholds mean the
    preprocessor's defaults. The map is not yet fitted to the generation size: see
    :func:`runtime.controlnet.fit_control_image`.
    """
    name = canonical_module(module)
    if resolution < 1:
        raise _error(f"preprocessor resolution must be positive, got {resolution}")
    default_a, default_b = default_thresholds(name)
    a = default_a if threshold_a < 0 else float(threshold_a)
    b = default_b if threshold_b < 0 else float(threshold_b)
    result = PREPROCESSORS[name](to_rgb_array(image), int(resolution), a, b)
    return Image.fromarray(np.ascontiguousarray(result, dtype=np.uint8))
