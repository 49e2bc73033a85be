"""The one typed request every API validates into: `GenerationRequest` (pure, no Django).

Field names and defaults are AUTOMATIC1111's API ones (`StableDiffusionProcessingTxt2Img`),
so the native API, `/sdapi/v1`, the EAS queue and the workspace share one schema. Unknown
keys are ignored, as A1111 (pydantic's `extra=ignore`) does. A bad value raises
`RequestValidationError` naming the field, which adapters turn into a 400.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from inference.samplers import SAMPLERS, SamplerError, resolve_sampler

MAX_SEED = 4294967294  # A1111 draws random seeds from range(4294967294)


class RequestValidationError(ValueError):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class Limits:
    max_steps: int = 150
    min_size: int = 64
    max_size: int = 2048
    max_batch_size: int = 8
    max_n_iter: int = 16
    max_prompt_chars: int = 10_000


@dataclass(frozen=True)
class GenerationRequest:
    kind: str = "txt2img"
    prompt: str = ""
    negative_prompt: str = ""
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    sampler_name: str = "Euler"
    scheduler: str = "Automatic"
    batch_size: int = 1
    n_iter: int = 1
    checkpoint: str | None = None  # override_settings.sd_model_checkpoint: any A1111 id form
    override_settings: dict[str, Any] = field(default_factory=dict)

    @property
    def image_count(self) -> int:
        return self.batch_size * self.n_iter

    def all_seeds(self) -> list[int]:
        """One seed per image: seed, seed+1, … as A1111 does without variation strength."""
        return [self.seed + i for i in range(self.image_count)]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GenerationRequest:
        """Rebuild a request stored by `to_json` (already validated: no checks)."""
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in data.items() if k in names})


SUPPORTED_KINDS = ("txt2img",)


def _number(data: Mapping[str, Any], name: str, default: float, what: str) -> float:
    """A finite number from JSON (numbers, or numeric strings as pydantic coerces them)."""
    value = data.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RequestValidationError(name, f"must be {what}, got {type(value).__name__}")
    try:
        number = float(value)
    except ValueError:
        raise RequestValidationError(name, f"must be {what}, got {value!r}") from None
    if not math.isfinite(number):
        raise RequestValidationError(name, f"must be {what}, got {value!r}")
    return number


def _int(data: Mapping[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    number = _number(data, name, default, "an integer")
    if number != int(number):
        raise RequestValidationError(name, f"must be an integer, got {data.get(name)!r}")
    result = int(number)
    if result < lo:
        raise RequestValidationError(name, f"must be at least {lo}, got {result}")
    if result > hi:
        raise RequestValidationError(name, f"must be at most {hi}, got {result}")
    return result


def _float(data: Mapping[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    number = _number(data, name, default, "a number")
    if not lo <= number <= hi:
        raise RequestValidationError(name, f"must be between {lo} and {hi}, got {data.get(name)!r}")
    return number


def _str(data: Mapping[str, Any], name: str, default: str, max_chars: int) -> str:
    value = data.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise RequestValidationError(name, f"must be a string, got {type(value).__name__}")
    if len(value) > max_chars:
        raise RequestValidationError(name, f"must be at most {max_chars} characters, got {len(value)}")
    if "\x00" in value:
        raise RequestValidationError(name, "must not contain NUL characters")
    return value


def _size(data: Mapping[str, Any], name: str, limits: Limits) -> int:
    # A1111 works on an 8× smaller latent, so sizes effectively snap down to a multiple of 8.
    return _int(data, name, 512, limits.min_size, limits.max_size) // 8 * 8


def parse_generation_request(
    data: Any, *, limits: Limits = Limits(), rng: random.Random | None = None, lenient_sampler: bool = False
) -> GenerationRequest:
    """Validate an API body into a GenerationRequest; a random seed (-1) is drawn here.

    `lenient_sampler`: an unknown sampler falls back to A1111's first sampler, as A1111's own
    API does (the /sdapi/v1 adapter); otherwise it is a 400 naming the valid ones.
    """
    if not isinstance(data, Mapping):
        raise RequestValidationError("body", "must be a JSON object")
    kind = _str(data, "kind", "txt2img", 32)
    if kind not in SUPPORTED_KINDS:
        raise RequestValidationError("kind", f"must be one of {', '.join(SUPPORTED_KINDS)}, got {kind!r}")

    override_settings = data.get("override_settings")
    if override_settings is None:
        override_settings = {}
    if not isinstance(override_settings, Mapping):
        raise RequestValidationError("override_settings", "must be an object")
    checkpoint = override_settings.get("sd_model_checkpoint")
    if checkpoint is not None and not isinstance(checkpoint, str):
        raise RequestValidationError("override_settings.sd_model_checkpoint", "must be a string")

    sampler_name = _str(data, "sampler_name", "", 100) or _str(data, "sampler_index", "Euler", 100)
    scheduler = _str(data, "scheduler", "Automatic", 100)
    try:
        sampler = resolve_sampler(sampler_name, scheduler)
    except SamplerError as exc:
        if not (lenient_sampler and exc.field == "sampler_name"):
            raise RequestValidationError(exc.field, str(exc)) from None
        sampler = resolve_sampler(SAMPLERS[0].name, scheduler)

    seed = _int(data, "seed", -1, -1, MAX_SEED)
    subseed = _int(data, "subseed", -1, -1, MAX_SEED)
    rng = rng or random.SystemRandom()
    if seed == -1:
        seed = rng.randrange(MAX_SEED)
    if subseed == -1:
        subseed = rng.randrange(MAX_SEED)

    return GenerationRequest(
        kind=kind,
        prompt=_str(data, "prompt", "", limits.max_prompt_chars),
        negative_prompt=_str(data, "negative_prompt", "", limits.max_prompt_chars),
        steps=_int(data, "steps", 50, 1, limits.max_steps),
        cfg_scale=_float(data, "cfg_scale", 7.0, 0.0, 30.0),
        width=_size(data, "width", limits),
        height=_size(data, "height", limits),
        seed=seed,
        subseed=subseed,
        subseed_strength=_float(data, "subseed_strength", 0.0, 0.0, 1.0),
        sampler_name=sampler.name,
        scheduler=sampler.schedule_label,
        batch_size=_int(data, "batch_size", 1, 1, limits.max_batch_size),
        n_iter=_int(data, "n_iter", 1, 1, limits.max_n_iter),
        checkpoint=checkpoint or None,
        override_settings=dict(override_settings),
    )


def batch_key(request: GenerationRequest, *, model_key: str, lora_key: str) -> str:
    """Jobs with equal keys can share one pipeline call: everything the UNet batch shares.

    Prompts, seeds and image counts may differ (each image has its own generator); the model,
    LoRA set, size, steps, sampler and guidance may not.
    """
    shared = (
        request.kind, model_key, lora_key, request.width, request.height, request.steps,
        request.sampler_name, request.scheduler, request.cfg_scale, request.subseed_strength,
    )
    return hashlib.sha256(repr(shared).encode()).hexdigest()[:32]
