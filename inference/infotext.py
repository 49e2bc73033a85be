"""A1111 "parameters" infotext: the text written into each PNG (pure).

    <prompt>
    Negative prompt: <negative>           (omitted when empty)
    Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.0, Seed: 1, Size: 512x512, ...
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

VERSION = "atelier-0.1"


def _quote(value: Any) -> str:
    text = str(value)
    if "," in text or ":" in text or "\n" in text:
        return json.dumps(text, ensure_ascii=False)
    return text


def format_infotext(prompt: str, negative_prompt: str, params: Mapping[str, Any]) -> str:
    """`params` in A1111's key order; keys whose value is None are dropped."""
    lines = [prompt]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in params.items() if value is not None))
    return "\n".join(lines)


def txt2img_infotext(
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
) -> str:
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
            "Version": VERSION,
        },
    )
