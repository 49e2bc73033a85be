"""A1111 "parameters" infotext: the text written into each PNG (pure).

    <prompt>
    Negative prompt: <negative>           (omitted when empty)
    Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.0, Seed: 1, Size: 512x512, ...
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from a1111.samplers import resolve_sampler

VERSION = "atelier-0.1"


def quote_value(value: Any) -> str:
    """An infotext value, JSON-quoted when it holds a comma, colon or newline (as A1111 does)."""
    text = str(value)
    if "," in text or ":" in text or "\n" in text:
        return json.dumps(text, ensure_ascii=False)
    return text


def format_infotext(prompt: str, negative_prompt: str, params: Mapping[str, Any]) -> str:
    """`params` in A1111's key order; keys whose value is None are dropped."""
    lines = [prompt]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    lines.append(", ".join(f"{key}: {quote_value(value)}" for key, value in params.items() if value is not None))
    return "\n".join(lines)


def generation_infotext(
    *,
    prompt: str,
    negative_prompt: str,
    steps: int,
    sampler_name: str,
    schedule_label: str,
    cfg_scale: float,
    seed: int,
    width: int,
    height: int,
    model_hash: str | None,
    model_name: str | None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """One image's infotext; `extra` adds entries after the model (VAE, img2img settings) in A1111's order."""
    return format_infotext(
        prompt,
        negative_prompt,
        {
            "Steps": steps,
            "Sampler": sampler_name,
            "Schedule type": schedule_label,
            "CFG scale": cfg_scale,
            "Seed": seed,
            "Size": f"{width}x{height}",
            "Model hash": model_hash,
            "Model": model_name,
            **(extra or {}),
            "Version": VERSION,
        },
    )


INPAINT_AREAS = {True: "Only masked", False: "Whole picture"}
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")


def seed_infotext_params(request: Any) -> dict[str, Any]:
    """The entries A1111 adds for variation seeds and "Resize seed from" (txt2img and img2img)."""
    params: dict[str, Any] = {}
    if request.subseed_strength > 0:
        params.update({"Variation seed": request.subseed, "Variation seed strength": request.subseed_strength})
    resize_from = getattr(request, "seed_resize_from", None)
    if resize_from:
        params["Seed resize from"] = f"{resize_from[0]}x{resize_from[1]}"
    return params


def img2img_infotext_params(request: Any) -> dict[str, Any]:
    """The entries A1111 adds for img2img (and inpainting, when there is a mask)."""
    params: dict[str, Any] = {**seed_infotext_params(request), "Denoising strength": request.denoising_strength}
    if getattr(request, "initial_noise_multiplier", 1.0) != 1.0:
        params["Noise multiplier"] = request.initial_noise_multiplier
    if request.mask:
        blur = request.mask_blur_x if request.mask_blur_x == request.mask_blur_y else None
        params.update({
            "Mask blur": blur,
            "Mask blur x": None if blur is not None else request.mask_blur_x,
            "Mask blur y": None if blur is not None else request.mask_blur_y,
            "Inpaint area": INPAINT_AREAS[bool(request.inpaint_full_res)],
            "Masked area padding": request.inpaint_full_res_padding,
            "Masked content": MASKED_CONTENT[request.inpainting_fill],
            "Mask mode": "Inpaint not masked" if request.inpainting_mask_invert else None,
        })
    return params


def hires_infotext_params(request: Any) -> dict[str, Any]:
    """The entries A1111 adds for txt2img's hires fix (and variation seeds); the second pass's own
    checkpoint, sampler, prompts and schedule type only where they differ from the first pass's."""
    params: dict[str, Any] = seed_infotext_params(request)
    if request.hires:
        first, second = resolve_sampler(request.sampler_name, request.scheduler), request.hires_sampler
        params.update({
            "Denoising strength": request.denoising_strength,
            "Hires resize": f"{request.hr_width}x{request.hr_height}",
            "Hires steps": request.hr_second_pass_steps or None,
            "Hires upscaler": request.hr_upscaler,
            "Hires checkpoint": request.hr_checkpoint_name,  # its short title, "name [hash10]"
            "Hires sampler": second.name if second.name != first.name else None,
            "Hires prompt": request.hr_prompt if request.hires_prompt != request.prompt else None,
            "Hires negative prompt": (
                request.hr_negative_prompt if request.hires_negative_prompt != request.negative_prompt else None
            ),
            "Hires schedule type": (
                second.effective_schedule_label if second.effective_schedule_label != first.effective_schedule_label else None
            ),
        })
    return params
