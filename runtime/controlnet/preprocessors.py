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

Everything here is pure (PIL/numpy/OpenCV in, PIL out); no global state is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import cv2
import numpy as np
from PIL import Image

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

# (threshold_a, threshold_b) defaults of the extension's sliders; a negative value asks for these.
PREPROCESSOR_DEFAULTS: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "canny": (100.0, 200.0),
        "scribble_xdog": (32.0, 200.0),
        "threshold": (127.0, 200.0),
        "blur_gaussian": (9.0, 200.0),
        "tile_resample": (1.0, 200.0),
    }
)
_FALLBACK_THRESHOLDS = (100.0, 200.0)

# Known to the extension, but they run a neural network whose weights this server does not ship.
MODEL_PREPROCESSORS: frozenset[str] = frozenset(
    {
        "depth_midas", "depth_leres", "depth_leres++", "depth_zoe", "depth_anything", "depth_hand_refiner",
        "normal_midas", "normal_bae", "openpose", "openpose_face", "openpose_faceonly", "openpose_full",
        "openpose_hand", "dw_openpose_full", "animal_openpose", "mediapipe_face", "mlsd", "lineart_realistic",
        "lineart_coarse", "lineart_anime", "lineart_anime_denoise", "softedge_hed", "softedge_hedsafe",
        "softedge_pidinet", "softedge_pidisafe", "softedge_teed", "scribble_hed", "scribble_pidinet",
        "seg_ofade20k", "seg_ofcoco", "seg_ufade20k", "seg_anime_face", "densepose", "densepose_parula",
        "t2ia_sketch_pidi", "t2ia_style_clipvision", "t2ia_color_grid", "inpaint_only+lama",
        "ip-adapter_clip_sd15", "ip-adapter_clip_sdxl", "ip-adapter_clip_sdxl_plus_vith", "ip-adapter_face_id",
        "ip-adapter_face_id_plus", "instant_id_face_keypoints", "instant_id_face_embedding",
        "revision_clipvision", "revision_ignore_prompt",
    }
)
# Known to the extension, model-free, but they change sampling itself (not a control map).
UNSUPPORTED_PREPROCESSORS: frozenset[str] = frozenset(
    {
        "reference_only", "reference_adain", "reference_adain+attn", "inpaint_global_harmonious",
        "inpaint_only", "tile_colorfix", "tile_colorfix+sharp", "shuffle", "recolor_luminance",
        "recolor_intensity",
    }
)

# The extension's UI labels and legacy names -> canonical names (keys are lower case).
_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "invert (from white bg & black line)": "invert",
        "lineart_standard (from white bg & black line)": "lineart_standard",
        "scribble_thr": "scribble",
        "lineart": "lineart_realistic",
        "color": "t2ia_color_grid",
        "clip_vision": "t2ia_style_clipvision",
        "pidinet_sketch": "t2ia_sketch_pidi",
        "depth": "depth_midas",
        "normal_map": "normal_midas",
        "hed": "softedge_hed",
        "fake_scribble": "scribble_hed",
        "hed_safe": "softedge_hedsafe",
        "pidinet": "softedge_pidinet",
        "pidinet_safe": "softedge_pidisafe",
        "te_hed": "softedge_teed",
        "segmentation": "seg_ufade20k",
        "oneformer_coco": "seg_ofcoco",
        "oneformer_ade20k": "seg_ofade20k",
        "anime_face_segment": "seg_anime_face",
        "pidinet_scribble": "scribble_pidinet",
        "inpaint": "inpaint_global_harmonious",
        "densepose (pruple bg & purple torso)": "densepose",
        "densepose_parula (black bg & blue torso)": "densepose_parula",
    }
)


def available_preprocessors() -> list[str]:
    """The canonical names :func:`preprocess` can run, in a stable order."""
    return list(PREPROCESSORS)


def _error(message: str) -> Exception:
    from a1111.controlnet import ControlNetError  # the error type lives with the rest of the ControlNet API

    return ControlNetError(message)


def canonical_module(module: str | None) -> str:
    """The canonical name of a runnable preprocessor, from any name or alias the extension accepts.

    ``None`` and ``""`` mean ``"none"``. Raises ``ControlNetError`` (a ``ValueError``) for names that
    need a model, that this server does not support, or that are unknown; the message lists the
    available ones.
    """
    name = (module or "none").strip().lower()
    name = _ALIASES.get(name, name)
    if name in PREPROCESSORS:
        return name
    available = ", ".join(available_preprocessors())
    if name in MODEL_PREPROCESSORS:
        raise _error(f"preprocessor {module!r} needs a model that is not installed; available: {available}")
    if name in UNSUPPORTED_PREPROCESSORS:
        raise _error(f"preprocessor {module!r} is not supported by this server; available: {available}")
    raise _error(f"unknown preprocessor {module!r}; available: {available}")


def default_thresholds(module: str) -> tuple[float, float]:
    """The extension's default ``(threshold_a, threshold_b)`` for a canonical preprocessor name."""
    return PREPROCESSOR_DEFAULTS.get(module, _FALLBACK_THRESHOLDS)


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
