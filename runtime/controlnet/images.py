"""ControlNet control maps: run a unit's preprocessor and fit the map to the generation size.

:func:`prepare_control_image` runs the unit's preprocessor (at the "Pixel Perfect" resolution of
:func:`pixel_perfect_resolution` when asked) and :func:`fit_control_image` fits the map to the
generation size with the extension's three resize modes, keeping hard maps (edges, segmentation)
hard.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from a1111.controlnet import ControlUnit

__all__ = ["fit_control_image", "pixel_perfect_resolution", "prepare_control_image"]


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
    from runtime.controlnet.preprocessors import to_rgb_array

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
    from runtime.controlnet.preprocessors import preprocess

    resolution = unit.processor_res
    if unit.pixel_perfect:
        resolution = pixel_perfect_resolution(unit.image.size, width=width, height=height, resize_mode=unit.resize_mode)
    detected = preprocess(
        unit.module, unit.image, resolution=resolution, threshold_a=unit.threshold_a, threshold_b=unit.threshold_b
    )
    return fit_control_image(detected, width=width, height=height, resize_mode=unit.resize_mode)
