"""A request's `infotext` field (A1111 1.8+): the parameters an infotext names, as request fields (pure).

A1111's `Api.apply_infotext` parses the infotext (`a1111.pnginfo.parse_generation_parameters`)
and, for every paste field of the tab, sets the request's field from it, "if the request does not
set that field already"; the settings an infotext names (`Clip skip`, `ENSD`, `Eta`, …) go into
`override_settings` unless it has them. `apply_infotext` does the same to a JSON body before it
is parsed, so every value still goes through the one parser and its checks. A field counts as set
when the body has its key (pydantic's `exclude_unset`), so clients that send every field, such
as webuiapi, take only the settings from an infotext, as they do on A1111.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from a1111.fields import RequestValidationError
from a1111.pnginfo import parse_generation_parameters

MAX_INFOTEXT_CHARS = 65_536

# (infotext label, request field, conversion) — A1111 1.10's txt2img/img2img paste fields that
# its API names (`infotext_utils.paste_fields`, `api` attribute).
_FIELDS: tuple[tuple[str, str, Callable[[str], Any]], ...] = (
    ("Prompt", "prompt", str),
    ("Negative prompt", "negative_prompt", str),
    ("Steps", "steps", int),
    ("Sampler", "sampler_name", str),
    ("Schedule type", "scheduler", str),
    ("CFG scale", "cfg_scale", float),
    ("Seed", "seed", int),
    ("Size-1", "width", int),
    ("Size-2", "height", int),
    ("Batch size", "batch_size", int),
    ("Variation seed", "subseed", int),
    ("Variation seed strength", "subseed_strength", float),
    ("Seed resize from-1", "seed_resize_from_w", int),
    ("Seed resize from-2", "seed_resize_from_h", int),
    ("Denoising strength", "denoising_strength", float),
    ("Face restoration", "restore_faces", lambda value: True),
    ("Tiling", "tiling", lambda value: value.strip().lower() == "true"),
    ("Hires upscale", "hr_scale", float),
    ("Hires upscaler", "hr_upscaler", str),
    ("Hires steps", "hr_second_pass_steps", int),
    ("Hires resize-1", "hr_resize_x", int),
    ("Hires resize-2", "hr_resize_y", int),
    ("Refiner", "refiner_checkpoint", str),
    ("Refiner switch at", "refiner_switch_at", float),
    ("Mask blur", "mask_blur", int),
    ("Noise multiplier", "initial_noise_multiplier", float),
)
# A1111 turns "Hires upscale" into enable_hr as well: a hires infotext is a hires request.
_HIRES_LABELS = ("Hires upscale", "Hires resize-1", "Hires resize-2", "Hires steps", "Hires upscaler")

# (infotext label, option) — A1111's `infotext_to_setting_name_mapping`, those this platform applies.
_SETTINGS: tuple[tuple[str, str, Callable[[str], Any]], ...] = (
    ("Clip skip", "CLIP_stop_at_last_layers", int),
    ("ENSD", "eta_noise_seed_delta", int),
    ("Eta", "eta_ancestral", float),
    ("Eta DDIM", "eta_ddim", float),
    ("Sigma churn", "s_churn", float),
    ("Sigma tmin", "s_tmin", float),
    ("Sigma tmax", "s_tmax", float),
    ("Sigma noise", "s_noise", float),
    ("NGMS", "s_min_uncond", float),
    ("Token merging ratio", "token_merging_ratio", float),
    ("Token merging ratio hr", "token_merging_ratio_hr", float),
    ("DeepCache pass", "deepcache_enable_pass", str),  # the DeepCache extension's one infotext key
    ("VAE", "sd_vae", str),
    ("Model hash", "sd_model_checkpoint", str),
)
# A1111 leaves a setting out when the infotext holds its default (Clip skip 1 is filled in by the parser).
_SETTING_DEFAULTS = {"Clip skip": "1"}


def _converted(label: str, value: str, convert: Callable[[str], Any]) -> Any:
    try:
        return convert(value)
    except ValueError:
        raise RequestValidationError("infotext", f"{label}: {value!r} is not a valid value") from None


def apply_infotext(body: Mapping[str, Any], *, kind: str) -> Mapping[str, Any]:
    """`body` with what its `infotext` names filled into the fields and `override_settings` it
    leaves out (no infotext: `body` itself). `kind` is "txt2img" or "img2img"."""
    text = body.get("infotext")
    if text is None or text == "":
        return body
    if not isinstance(text, str):
        raise RequestValidationError("infotext", "must be a string: an image's A1111 parameters text")
    if len(text) > MAX_INFOTEXT_CHARS:
        raise RequestValidationError("infotext", f"must be at most {MAX_INFOTEXT_CHARS} characters")
    params = parse_generation_parameters(text)
    filled: dict[str, Any] = dict(body)
    for label, name, convert in _FIELDS:
        if label in params and name not in body and params[label] != "":
            if kind == "txt2img" and name in ("initial_noise_multiplier", "mask_blur"):
                continue
            filled[name] = _converted(label, params[label], convert)
    if kind == "txt2img" and "enable_hr" not in body and any(label in params for label in _HIRES_LABELS):
        filled["enable_hr"] = True
    override = body.get("override_settings")
    if override is None or isinstance(override, Mapping):
        settings = dict(override or {})
        for label, option, convert in _SETTINGS:
            if label in params and option not in settings and params[label] != _SETTING_DEFAULTS.get(label):
                settings[option] = _converted(label, params[label], convert)
        if settings:
            filled["override_settings"] = settings
    return filled
