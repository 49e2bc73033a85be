"""ControlNet for the worker: read the A1111 API's units, load ControlNet files, build pipeline kwargs.

Four modules, used at three places:

* `units.py` (pure, no torch import): :func:`parse_controlnet_args` validates the
  sd-webui-controlnet API units a client sends in ``alwayson_scripts.controlnet.args`` (A1111's
  form, and PAI-EAS's ``image_link``) into plain dicts; the API adapters call it and report its
  :class:`ControlNetArgumentError`. Also :class:`ControlUnit` (one unit ready to run),
  :func:`controlnet_infotext` and :class:`ControlNetError`, the package's one error type.
* `loading.py`: :func:`load_controlnet` reads a ControlNet ``.safetensors`` file, offline, in the
  original lllyasviel/A1111/SGM layout (``control_model.input_blocks...``, ``zero_convs``,
  ``input_hint_block``, ``middle_block_out``, SDXL's ``label_emb``; with or without the
  ``control_model.`` prefix) or in the diffusers layout, for SD 1.x, SD 2.x and SDXL checkpoints.
  The model config is derived from the base checkpoint's UNet (``ControlNetModel.from_unet``), so
  no config is downloaded; for SDXL the attention layout (transformer depth per block) is read off
  the weights, as SDXL ControlNets are often shallower than the UNet. A ControlNet made for another
  base model is refused naming both bases (SDXL vs SD 1.x/2.x) or the mismatching keys.
  :class:`ControlNetCache` keeps loaded ControlNets (one cache per worker runtime).
* `pipelines.py`: :func:`controlnet_pipeline` builds diffusers' ControlNet pipeline for a task (the
  SDXL ones for an SDXL checkpoint) over the cached pipeline's modules;
  :func:`controlnet_pipeline_kwargs` runs each unit's preprocessor, fits the map to the generation
  size as the extension does (`images.py`), and returns the keyword arguments of diffusers'
  ControlNet pipelines plus the control maps (returned to users like PAI's ``image_mask_url``).

Differences from the extension: "My prompt is more important" (control_mode 1) is its soft
injection, a forward hook scaling each block's residual (:func:`soft_injection`); "ControlNet is
more important" maps to diffusers' ``guess_mode``, which is one switch for all units of a call.
Pickle files are never loaded.
"""

from __future__ import annotations

from .images import fit_control_image, pixel_perfect_resolution, prepare_control_image
from .loading import ControlNetCache, controlnet_to_ldm, load_controlnet
from .pipelines import (
    controlnet_component,
    controlnet_pipeline,
    controlnet_pipeline_class,
    controlnet_pipeline_kwargs,
    soft_injection,
)
from a1111.controlnet import (
    CONTROL_MODES,
    MAX_UNITS,
    RESIZE_MODES,
    ControlNetArgumentError,
    ControlNetError,
    ControlUnit,
    controlnet_infotext,
    parse_controlnet_args,
)

__all__ = [
    "CONTROL_MODES",
    "MAX_UNITS",
    "RESIZE_MODES",
    "ControlNetArgumentError",
    "ControlNetCache",
    "ControlNetError",
    "ControlUnit",
    "controlnet_component",
    "controlnet_infotext",
    "controlnet_pipeline",
    "controlnet_pipeline_class",
    "controlnet_pipeline_kwargs",
    "soft_injection",
    "controlnet_to_ldm",
    "fit_control_image",
    "load_controlnet",
    "parse_controlnet_args",
    "pixel_perfect_resolution",
    "prepare_control_image",
]
