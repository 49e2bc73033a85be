"""ControlNet pipelines: diffusers' ControlNet pipeline for a task, and the keyword arguments of its call.

:func:`controlnet_pipeline` (the runtime's entry point) builds diffusers' ControlNet pipeline for a
task (the SDXL ones for an SDXL checkpoint) over the cached pipeline's modules;
:func:`controlnet_pipeline_kwargs` prepares each unit's control map and returns the keyword
arguments of diffusers' ControlNet pipelines plus the control maps (returned to users like PAI's
``image_mask_url``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from PIL import Image

from .images import prepare_control_image
from a1111.controlnet import ControlUnit

if TYPE_CHECKING:
    from diffusers import ControlNetModel, DiffusionPipeline, MultiControlNetModel

    from .loading import ControlNetCache

__all__ = [
    "controlnet_component",
    "controlnet_pipeline",
    "controlnet_pipeline_class",
    "controlnet_pipeline_kwargs",
]


_CONTROL_IMAGE_KEYS = {"txt2img": "image", "img2img": "control_image", "inpaint": "control_image"}


def controlnet_pipeline_class(task: str, *, xl: bool = False) -> type[DiffusionPipeline]:
    """The diffusers ControlNet pipeline for ``task`` (``txt2img``, ``img2img`` or ``inpaint``); ``xl``: SDXL's."""
    import diffusers

    if xl:
        classes = {
            "txt2img": diffusers.StableDiffusionXLControlNetPipeline,
            "img2img": diffusers.StableDiffusionXLControlNetImg2ImgPipeline,
            "inpaint": diffusers.StableDiffusionXLControlNetInpaintPipeline,
        }
    else:
        classes = {
            "txt2img": diffusers.StableDiffusionControlNetPipeline,
            "img2img": diffusers.StableDiffusionControlNetImg2ImgPipeline,
            "inpaint": diffusers.StableDiffusionControlNetInpaintPipeline,
        }
    return classes[task]


def controlnet_component(controlnets: Sequence[ControlNetModel]) -> ControlNetModel | MultiControlNetModel:
    """The pipeline's ``controlnet`` component for these units' models, in the form the kwargs expect.

    One model is passed as itself (the kwargs then hold plain values); several are wrapped in a
    ``MultiControlNetModel`` (the kwargs hold one value per unit). The same model may appear twice.
    """
    from diffusers import MultiControlNetModel

    if not controlnets:
        raise ValueError("at least one ControlNet is needed")
    return controlnets[0] if len(controlnets) == 1 else MultiControlNetModel(list(controlnets))


def controlnet_pipeline_kwargs(
    units: Sequence[ControlUnit],
    controlnets: Sequence[ControlNetModel],
    *,
    width: int,
    height: int,
    batch: int,
    task: str = "txt2img",
) -> tuple[dict[str, Any], list[Image.Image]]:
    """Keyword arguments for a diffusers ControlNet pipeline call, and the control maps used.

    ``controlnets[i]`` is the loaded model of ``units[i]``; build the pipeline with
    ``controlnet=controlnet_component(controlnets)`` (one model as is, several as a
    ``MultiControlNetModel``: the kwargs' shapes differ between the two). The maps go in as ``image`` (txt2img) or ``control_image`` (img2img/inpaint), one per unit, shared
    by all ``batch`` images of the call. A unit whose guidance window is empty (start >= end, which
    diffusers refuses) runs with weight 0, i.e. no effect, as in the extension.
    """
    if task not in _CONTROL_IMAGE_KEYS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(_CONTROL_IMAGE_KEYS)}")
    if not units:
        raise ValueError("controlnet_pipeline_kwargs needs at least one unit")
    if len(units) != len(controlnets):
        raise ValueError(f"{len(units)} units but {len(controlnets)} ControlNets")
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    images = [prepare_control_image(unit, width=width, height=height) for unit in units]
    scales, starts, ends = [], [], []
    for unit in units:
        if unit.guidance_start >= unit.guidance_end:
            scales.append(0.0)
            starts.append(0.0)
            ends.append(1.0)
        else:
            scales.append(float(unit.weight))
            starts.append(float(unit.guidance_start))
            ends.append(float(unit.guidance_end))
    single = len(units) == 1
    kwargs: dict[str, Any] = {
        _CONTROL_IMAGE_KEYS[task]: images[0] if single else images,
        "controlnet_conditioning_scale": scales[0] if single else scales,
        "control_guidance_start": starts[0] if single else starts,
        "control_guidance_end": ends[0] if single else ends,
        "guess_mode": any(unit.control_mode == 2 for unit in units),
    }
    return kwargs, images


SOFT_INJECTION_DECAY = 0.825  # ControlNet's own per-block decay (its guess mode), which the extension reuses


@contextmanager
def soft_injection(controlnet: Any, units: Sequence[ControlUnit]) -> Iterator[None]:
    """The extension's "My prompt is more important" (control_mode 1, its soft injection) for the
    calls made inside the block: each such unit's residuals are scaled block by block, the i-th of
    [down blocks…, mid block] by 0.825^(12 − i) on top of its weight, so the shallow blocks' control
    fades and the deep ones' stays (SD 1.x/2.x: the mid block keeps the full weight; SDXL's fewer
    blocks take the first factors, as the extension's `zip` does). `controlnet` is the pipeline's
    component (`controlnet_component`): one model, or a `MultiControlNetModel` in the units' order.
    A model two units share is scaled only when both ask for it (a hook is per model)."""
    nets = list(getattr(controlnet, "nets", [controlnet]))
    wanted: dict[int, bool] = {}
    for net, unit in zip(nets, units, strict=True):
        wanted[id(net)] = wanted.get(id(net), True) and unit.control_mode == 1
    soft = {id(net): net for net in nets if wanted[id(net)]}

    def scaled(module: Any, args: Any, output: Any) -> Any:
        down, mid = (output[0], output[1]) if isinstance(output, tuple) else (output.down_block_res_samples, output.mid_block_res_sample)
        factors = [SOFT_INJECTION_DECAY ** (12 - i) for i in range(len(down) + 1)]
        down = tuple(sample * factor for sample, factor in zip(down, factors))
        mid = mid * factors[len(down)]
        if isinstance(output, tuple):
            return (down, mid, *output[2:])
        output.down_block_res_samples, output.mid_block_res_sample = down, mid
        return output

    handles = [net.register_forward_hook(scaled) for net in soft.values()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def controlnet_pipeline(
    pipeline: DiffusionPipeline,
    units: Sequence[ControlUnit],
    cache: ControlNetCache,
    *,
    task: str,
    width: int,
    height: int,
) -> tuple[DiffusionPipeline, dict[str, Any]]:
    """The ControlNet variant of ``pipeline`` (same modules) for ``units``, and its call kwargs.

    The runtime's entry point: loads each unit's model through ``cache`` for the pipeline's UNet
    (a ControlNet for another architecture or base model raises :class:`ControlNetError`),
    preprocesses the control images and builds the pipeline of ``task`` over the same cached
    modules: an SDXL pipeline (one with ``text_encoder_2``) gets diffusers' SDXL ControlNet
    pipelines, with its own options (empty-prompt zeros, aesthetic score, watermark) carried over.
    """
    controlnets = [cache.get(unit.model_path, unit.model_sha256, like_unet=pipeline.unet) for unit in units]
    kwargs, _ = controlnet_pipeline_kwargs(units, controlnets, width=width, height=height, batch=1, task=task)
    components = {name: module for name, module in pipeline.components.items() if name != "controlnet"}
    xl = getattr(pipeline, "text_encoder_2", None) is not None
    options: dict[str, Any]
    if xl:
        options = {
            "force_zeros_for_empty_prompt": bool(pipeline.config.get("force_zeros_for_empty_prompt", True)),
            "add_watermarker": getattr(pipeline, "watermark", None) is not None,
        }
        if task != "txt2img":
            options["requires_aesthetics_score"] = bool(pipeline.config.get("requires_aesthetics_score", False))
    else:
        options = {"requires_safety_checker": False}
    controlled = controlnet_pipeline_class(task, xl=xl)(
        **components, controlnet=controlnet_component(controlnets), **options
    )
    controlled.set_progress_bar_config(disable=True)
    return controlled, kwargs
