"""ControlNet preprocessor names: which ones run, their aliases and default thresholds (pure).

The sd-webui-controlnet extension names a preprocessor in a unit's ``module`` field. This module
holds the name tables the API, the workspace and the request parser need: the canonical names this
server runs (:data:`PREPROCESSOR_NAMES`), the extension's aliases and UI labels, the names known but
not runnable here (model-based or sampling-changing) and the sliders' defaults. The implementations
(OpenCV) live in :mod:`runtime.controlnet.preprocessors`, which checks at import that it runs
exactly :data:`PREPROCESSOR_NAMES`; importing this module loads no cv2 or torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = [
    "MODEL_PREPROCESSORS",
    "PREPROCESSOR_DEFAULTS",
    "PREPROCESSOR_NAMES",
    "UNSUPPORTED_PREPROCESSORS",
    "available_preprocessors",
    "canonical_module",
    "default_thresholds",
]

#: The model-free preprocessors this server runs, by canonical (extension) name, in a stable order.
PREPROCESSOR_NAMES: tuple[str, ...] = (
    "none", "canny", "invert", "scribble", "scribble_xdog", "lineart_standard", "threshold",
    "blur_gaussian", "tile_resample",
)

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
    """The canonical names :func:`runtime.controlnet.preprocessors.preprocess` can run, in a stable order."""
    return list(PREPROCESSOR_NAMES)


def _error(message: str) -> Exception:
    from a1111.controlnet import (
        ControlNetError,  # lazily: a1111.controlnet imports this module
    )

    return ControlNetError(message)


def canonical_module(module: str | None) -> str:
    """The canonical name of a runnable preprocessor, from any name or alias the extension accepts.

    ``None`` and ``""`` mean ``"none"``. Raises ``ControlNetError`` (a ``ValueError``) for names that
    need a model, that this server does not support, or that are unknown; the message lists the
    available ones.
    """
    name = (module or "none").strip().lower()
    name = _ALIASES.get(name, name)
    if name in PREPROCESSOR_NAMES:
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
