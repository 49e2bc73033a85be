"""The one typed request every API validates into: `GenerationRequest` (pure, no Django).

Field names and defaults are AUTOMATIC1111's API ones (`StableDiffusionProcessingTxt2Img`),
so the native API, `/sdapi/v1`, the EAS queue and the workspace share one schema. Unknown
keys are ignored, as A1111 (pydantic's `extra=ignore`) does. A bad value raises
`RequestValidationError` naming the field, which adapters turn into a 400.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from a1111.deepcache import DeepCachePass, deepcache_mode, deepcache_pass, parse_deepcache_options
from a1111.fields import (
    RequestValidationError,
    fields_of,
    read_bool,
    read_float,
    read_int,
    read_optional_str,
    read_str,
)
from a1111.prompts import PromptError, extract_extra_networks, prompt_chunk_count
from a1111.samplers import SAMPLERS, SamplerChoice, SamplerError, SamplerParameters, resolve_sampler, sampler_parameters
from a1111.sd_upscale import SdUpscale

MAX_SEED = 4294967294  # A1111 draws random seeds from range(4294967294)
# A1111's token merging options (override_settings keys) and its slider's maximum
TOKEN_MERGING_OPTIONS = ("token_merging_ratio", "token_merging_ratio_img2img", "token_merging_ratio_hr")
MAX_TOKEN_MERGING_RATIO = 0.9


@dataclass(frozen=True)
class Limits:
    max_steps: int = 150
    min_size: int = 64
    max_size: int = 2048
    max_batch_size: int = 8
    max_n_iter: int = 16
    max_prompt_chars: int = 10_000
    # 75-token chunks per prompt (BREAK starts one): each costs a text-encoder pass per image and
    # lengthens every cross-attention; A1111 prompts rarely need more than 8 (600 tokens).
    max_prompt_chunks: int = 16


@dataclass(frozen=True)
class ControlNetUnitRequest:
    """One enabled ControlNet unit (sd-webui-controlnet's API unit, validated).

    Adapters fill the settings (`inference/inputs/controlnet.py`); `job_submit` resolves the
    model to a file the member may use and stores the image like an init image (storage key).
    """

    model: str  # the model's name (resolved by `job_submit` to the file's model name)
    module: str = "none"
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    control_mode: int = 0  # 0 Balanced, 1 My prompt is more important, 2 ControlNet is more important
    resize_mode: int = 1  # 0 Just Resize, 1 Crop and Resize, 2 Resize and Fill
    processor_res: int = 512
    threshold_a: float = 100.0
    threshold_b: float = 200.0
    pixel_perfect: bool = False
    save_detected_map: bool = True
    field: str = ""  # where the unit came from, e.g. "alwayson_scripts.controlnet.args[0]"
    model_hash: str = ""  # as the client named it (A1111 "name [hash]"), then the file's sha256[:8]
    image: str | None = None  # storage key (set by `job_submit`)
    model_path: str = ""  # set by `job_submit`, never by clients
    model_sha256: str = ""


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
    # A1111's "Resize seed from": the noise drawn as for an image of this size (off unless both > 0)
    seed_resize_from_w: int = -1
    seed_resize_from_h: int = -1
    sampler_name: str = "Euler"
    scheduler: str = "Automatic"
    batch_size: int = 1
    n_iter: int = 1
    checkpoint: str | None = None  # override_settings.sd_model_checkpoint: any A1111 id form
    vae: str | None = None  # override_settings.sd_vae; None: the checkpoint's own VAE
    clip_skip: int = 1  # A1111's CLIP_stop_at_last_layers (override_settings or the member's option)
    override_settings: dict[str, Any] = field(default_factory=dict)
    # the prompts' <lora:…>/<hypernet:…> resolved to files (set by `job_submit`, never by clients):
    # {"kind", "name", "path", "sha256", "te_weight", "unet_weight"} in order of appearance
    networks: list[dict[str, Any]] = field(default_factory=list)
    # img2img: storage keys of the stored input images (set by `job_submit`, never by clients)
    init_images: list[str] = field(default_factory=list)
    mask: str | None = None
    # A1111's `latent_mask` (with a mask only): the latent blend's and fills' mask (storage key, as `mask`)
    latent_mask: str | None = None
    denoising_strength: float = 0.75
    resize_mode: int = 0  # 0 just resize, 1 crop and resize, 2 resize and fill, 3 latent upscale
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_round: bool = True
    inpainting_fill: int = 0  # 0 fill, 1 original, 2 latent noise, 3 latent nothing
    inpaint_full_res: bool = True  # "Only masked"
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: bool = False
    initial_noise_multiplier: float = 1.0  # img2img: the starting noise scaled by it (request, else the option)
    # A1111's `img2img_fix_steps` option: img2img runs all `steps` over a stretched schedule (`img2img_steps`)
    img2img_fix_steps: bool = False
    # PAI-EAS: a folder inside the member's working directory for the PNGs (instead of outputs/)
    save_dir: str | None = None
    # txt2img hires fix: a second, img2img pass at hr_width × hr_height (0 × 0: off)
    hr_width: int = 0
    hr_height: int = 0
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = 0  # 0: as many as `steps`
    tiling: bool = False  # seamlessly repeating images (circular padding)
    # a model upscaler named by hr_upscaler, resolved to its file by `job_submit` (never by clients):
    # {"name", "path", "sha256"}; None for the built-in latent and pixel resizers
    upscaler_model: dict[str, str] | None = None
    controlnet_units: list[ControlNetUnitRequest] = field(default_factory=list)
    # "Restore faces": the restorer A1111's `face_restoration_model` names (None: the member's
    # option, else whichever is installed) and CodeFormer's weight (None: the member's option)
    restore_faces: bool = False
    face_restoration_model: str | None = None
    code_former_weight: float | None = None
    # resolved by `job_submit` (never by clients): {"name", "path", "sha256", "detector_path",
    # "detector_sha256", "weight"}
    face_restorer: dict[str, Any] | None = None
    # img2img's "SD upscale" script (`a1111/sd_upscale.py`): one upscaled image per batch-count
    # iteration, made of tiles img2img'd `batch_size` at a time
    sd_upscale: SdUpscale | None = None
    # eta, sigma churn/tmin/tmax/noise and NGMS (`parse_sampler_parameters`), those the sampler uses
    sampler_parameters: SamplerParameters = field(default_factory=SamplerParameters)
    # A1111's eta_noise_seed_delta (ENSD; override_settings, or the member's option): the sampler's
    # own noise comes from seed + delta (per image: jobs with different deltas still share a batch)
    eta_noise_seed_delta: int = 0
    # set by `job_submit` (never by clients): what could not run for want of a model and what to
    # install (A1111 degrades: faces unrestored, a Lanczos upscale), shown in `info.notes`
    missing_models: list[str] = field(default_factory=list)
    # A1111's refiner: the checkpoint (any id form, as `checkpoint`; None: no refiner) sampling
    # switches to once `refiner_switch_at` of a pass's steps are done (1.0: it never runs). With the
    # hires fix it refines the passes `hires_refiner_pass` names (A1111's default: the second).
    refiner_checkpoint: str | None = None
    refiner_switch_at: float = 0.0
    # A1111's `hires_fix_refiner_pass` option: which pass of a hires-fix job the refiner refines
    hires_refiner_pass: str = "second pass"
    # A1111's `force_task_id`: the client's own id for the job, which `/internal/progress` takes
    force_task_id: str | None = None
    # A1111 1.10's hires-fix second-pass overrides (txt2img with the hires fix only; each empty or
    # None: as the first pass). The prompts as sent, styles merged ("" = the first pass's); the
    # sampler and schedule by their canonical names (`hires_sampler`); the checkpoint in any id
    # form, as `checkpoint` (`job_submit` stores its short title "name [hash10]").
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_checkpoint_name: str | None = None
    # A1111's `disable_extra_networks` (both kinds): <lora:…>/<hypernet:…> tags are stripped from the
    # text but not applied (`job_submit` resolves none of them)
    disable_extra_networks: bool = False

    @property
    def hires_prompt(self) -> str:
        """The hires pass's prompt: `hr_prompt`, or the first pass's when empty (A1111)."""
        return self.hr_prompt or self.prompt

    @property
    def hires_negative_prompt(self) -> str:
        return self.hr_negative_prompt or self.negative_prompt

    @property
    def hires_sampler(self) -> SamplerChoice:
        """The hires pass's sampler and schedule (`hr_sampler_name`/`hr_scheduler`, else the first pass's)."""
        return resolve_sampler(self.hr_sampler_name or self.sampler_name, self.hr_scheduler or self.scheduler)
    # A1111's token merging options (override_settings, or the member's): the ratio of image tokens
    # merged before self-attention (0: off); which one a pass uses: `token_merging_first_pass`, `…_hires_pass`
    token_merging_ratio: float = 0.0
    token_merging_ratio_img2img: float = 0.0  # img2img's, when not 0
    token_merging_ratio_hr: float = 0.0  # the hires pass's, when not 0
    # A1111's "sd-webui-deepcache" extension's options (override_settings, or the member's;
    # `a1111/deepcache.py`): which passes reuse the UNet's deep features between steps, at which
    # cache level, after which share of the steps, and how often a call runs in full. What a pass
    # runs: `deepcache_first_pass`, `deepcache_hires_pass`
    deepcache_enable: bool = False
    deepcache_enable_pass: str = "disable"
    deepcache_cache_resnet_level: int = 0
    deepcache_cache_enable_step_percentage: float = 0.4
    deepcache_full_run_step_rate: int = 5
    deepcache_cache_enable_step_percentage_hr: float = 0.0

    @property
    def refiner_runs(self) -> bool:
        """Whether sampling switches to the refiner at all (A1111: not when the switch is at 1)."""
        return self.refiner_checkpoint is not None and self.refiner_switch_at < 1.0

    @property
    def token_merging_first_pass(self) -> float:
        """The ratio of the (first) pass: img2img's own option when set, as A1111's `get_token_merging_ratio`."""
        if self.kind == "img2img":
            return self.token_merging_ratio_img2img or self.token_merging_ratio
        return self.token_merging_ratio

    @property
    def token_merging_hires_pass(self) -> float:
        """The hires pass's ratio (A1111's `token_merging_ratio_hr`, else the first pass's); 0 without hires fix."""
        return (self.token_merging_ratio_hr or self.token_merging_ratio) if self.hires else 0.0

    @property
    def deepcache_passes(self) -> str:
        """Which passes cache: "disable", "second pass" or "both passes" (`deepcache_mode`)."""
        return deepcache_mode(self.deepcache_enable, self.deepcache_enable_pass)

    @property
    def deepcache_first_pass(self) -> DeepCachePass | None:
        """How the (first) pass caches, None when it does not: the extension hooks it with "both passes" only."""
        if self.deepcache_passes != "both passes":
            return None
        return deepcache_pass(
            level=self.deepcache_cache_resnet_level, share=self.deepcache_cache_enable_step_percentage,
            steps=self.steps, full_run_step_rate=self.deepcache_full_run_step_rate,
        )

    @property
    def deepcache_hires_pass(self) -> DeepCachePass | None:
        """How the hires pass caches (either setting but "disable"; its own share of its own steps), None
        when it does not or there is no hires pass."""
        if not self.hires or self.deepcache_passes == "disable":
            return None
        return deepcache_pass(
            level=self.deepcache_cache_resnet_level, share=self.deepcache_cache_enable_step_percentage_hr,
            steps=self.hr_second_pass_steps or self.steps, full_run_step_rate=self.deepcache_full_run_step_rate,
        )

    @property
    def hires(self) -> bool:
        return self.kind == "txt2img" and self.hr_width > 0

    @property
    def hr_steps(self) -> int:
        """Denoising steps the hires pass runs: A1111 runs all of `hr_second_pass_steps` (or `steps`)
        over a schedule stretched by the denoising strength (`img2img_steps`); none at strength 0."""
        if not self.hires or self.denoising_strength <= 0:
            return 0
        return self.hr_second_pass_steps or self.steps

    @property
    def seed_resize_from(self) -> tuple[int, int] | None:
        """(width, height) the seeds' noise is drawn at, or None (A1111: off unless both are positive)."""
        if self.seed_resize_from_w > 0 and self.seed_resize_from_h > 0:
            return self.seed_resize_from_w, self.seed_resize_from_h
        return None

    @property
    def image_count(self) -> int:
        """Images the job makes: SD upscale makes one per batch-count iteration."""
        return self.n_iter if self.sd_upscale else self.batch_size * self.n_iter

    @property
    def images_per_iteration(self) -> int:
        """Images of one batch-count iteration (each iteration runs in pipeline calls of its own)."""
        return 1 if self.sd_upscale else self.batch_size

    @property
    def image_steps(self) -> int:
        """Denoising steps behind one iteration's images: SD upscale runs every batch of tiles."""
        if self.sd_upscale:
            return self.sampling_steps * math.ceil(self.sd_upscale.tiles / self.batch_size)
        return self.sampling_steps

    @property
    def sampling_steps(self) -> int:
        """Denoising steps actually run: img2img runs `steps × denoising_strength`, as A1111 does."""
        if self.kind == "img2img":
            if self.img2img_fix_steps and self.denoising_strength > 0:
                return self.steps
            return int(self.steps * self.denoising_strength)
        return self.steps + self.hr_steps

    def all_seeds(self) -> list[int]:
        """One seed per image: seed, seed+1, …; with a variation strength all images share the
        seed and vary by subseed instead (A1111's rule)."""
        if self.sd_upscale:  # each upscale starts one seed on; its tiles count on from there
            return [self.seed + i for i in range(self.image_count)]
        step = 0 if self.subseed_strength > 0 else 1
        return [self.seed + i * step for i in range(self.image_count)]

    def all_subseeds(self) -> list[int]:
        if self.sd_upscale:  # each upscale's tiles count from the request's subseed
            return [self.subseed] * self.image_count
        return [self.subseed + i for i in range(self.image_count)]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GenerationRequest:
        """Rebuild a request stored by `to_json` (already validated: no checks)."""
        names = cls.__dataclass_fields__.keys()
        values = {k: v for k, v in data.items() if k in names}
        if values.get("controlnet_units"):
            values["controlnet_units"] = [ControlNetUnitRequest(**unit) for unit in values["controlnet_units"]]
        if values.get("sd_upscale"):
            values["sd_upscale"] = SdUpscale.from_json(values["sd_upscale"])
        if isinstance(values.get("sampler_parameters"), Mapping):
            values["sampler_parameters"] = SamplerParameters(**values["sampler_parameters"])
        return cls(**values)


SUPPORTED_KINDS = ("txt2img", "img2img")
NO_VAE = ("", "Automatic", "None")  # A1111's names for "the checkpoint's own VAE"
_SAVE_DIR_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.@+-]{0,99}")
RESERVED_WORKDIR_FOLDERS = ("models",)  # the platform reads models from there: no PNGs in it


def parse_save_dir(value: Any) -> str | None:
    """A PAI-EAS `save_dir`: a relative folder inside the member's working directory, normalised.

    Absolute paths, `..`, backslashes and hidden segments are refused: the PNGs must land in
    the caller's own directory and nowhere else.
    """
    if value is None or value == "":
        return None
    where = "alwayson_scripts.save_dir"
    if not isinstance(value, str):
        raise RequestValidationError(where, "must be a string")
    if value.startswith(("/", "~")) or "\\" in value or ":" in value:
        raise RequestValidationError(
            where, f"{value!r} is not allowed: give a folder relative to your working directory, e.g. tmp/outputs"
        )
    parts = [part for part in value.split("/") if part not in ("", ".")]
    for part in parts:
        # fullmatch: `$` would accept a trailing newline ("tmp\n" is another folder than "tmp")
        if part == ".." or not _SAVE_DIR_PART.fullmatch(part):
            raise RequestValidationError(
                where, f"{value!r} is not allowed: use plain folder names (letters, digits, _ . - @ +), no '..'"
            )
        if part != part.rstrip(" ."):  # "models " and "models." look like "models" on some systems
            raise RequestValidationError(where, f"{value!r} is not allowed: a folder name must not end in a space or a dot")
    if not parts:
        raise RequestValidationError(where, "must name a folder, e.g. tmp/outputs")
    if parts[0].lower() in RESERVED_WORKDIR_FOLDERS:  # case-insensitive file systems (macOS, SMB mounts)
        raise RequestValidationError(where, f"must not point into your {parts[0]!r} folder: it holds your models")
    return "/".join(parts)


def _read_prompt(data: Mapping[str, Any], name: str, limits: Limits) -> str:
    """A prompt within the character limit and `limits.max_prompt_chunks` chunks (a lower bound
    counted without the tokenizer: `a1111/prompts.py` `prompt_chunk_count`)."""
    text = read_str(data, name, "", limits.max_prompt_chars)
    try:
        chunks = prompt_chunk_count(extract_extra_networks(text)[0])  # tags are not encoded
    except PromptError:
        return text  # reported with its own message when the job is submitted
    if chunks > limits.max_prompt_chunks:
        raise RequestValidationError(
            name,
            f"makes at least {chunks} chunks of 75 tokens (BREAK starts a new one); at most "
            f"{limits.max_prompt_chunks} are allowed: shorten it or use fewer BREAKs",
        )
    return text


def _within(default: int, lo: int, hi: int) -> int:
    """A1111's default, or the nearest value this deployment allows (a request that leaves the
    field out is never refused for it: A1111's 50 steps become 30 under a 30-step limit)."""
    return min(max(default, lo), hi)


def _size(data: Mapping[str, Any], name: str, limits: Limits) -> int:
    # A1111 works on an 8× smaller latent, so sizes effectively snap down to a multiple of 8.
    default = _within(512, limits.min_size, limits.max_size)
    return read_int(data, name, default, limits.min_size, limits.max_size) // 8 * 8


def parse_generation_request(
    data: Any, *, limits: Limits = Limits(), rng: random.Random | None = None, lenient_sampler: bool = False
) -> GenerationRequest:
    """Validate an API body into a GenerationRequest; a random seed (-1) is drawn here.

    `lenient_sampler`: an unknown sampler falls back to A1111's first sampler, as A1111's own
    API does (the /sdapi/v1 adapter); otherwise it is a 400 naming the valid ones.
    """
    if not isinstance(data, Mapping):
        raise RequestValidationError("body", "must be a JSON object")
    kind = read_str(data, "kind", "txt2img", 32)
    if kind not in SUPPORTED_KINDS:
        raise RequestValidationError("kind", f"must be one of {', '.join(SUPPORTED_KINDS)}, got {kind!r}")

    override_settings = data.get("override_settings")
    if override_settings is None:
        override_settings = {}
    if not isinstance(override_settings, Mapping):
        raise RequestValidationError("override_settings", "must be an object")
    # PAI-EAS puts its extras straight into alwayson_scripts (next to the A1111 script entries).
    alwayson = data.get("alwayson_scripts")
    if alwayson is None:
        alwayson = {}
    if not isinstance(alwayson, Mapping):
        raise RequestValidationError("alwayson_scripts", "must be an object")
    checkpoint = read_optional_str(override_settings, "sd_model_checkpoint", "override_settings") or read_optional_str(
        alwayson, "sd_model_checkpoint", "alwayson_scripts"
    )
    vae = read_optional_str(override_settings, "sd_vae", "override_settings") or read_optional_str(
        alwayson, "sd_vae", "alwayson_scripts"
    )

    sampler_name = read_str(data, "sampler_name", "", 100) or read_str(data, "sampler_index", "Euler", 100)
    scheduler = read_str(data, "scheduler", "Automatic", 100)
    try:
        sampler = resolve_sampler(sampler_name, scheduler)
    except SamplerError as exc:
        if not (lenient_sampler and exc.field == "sampler_name"):
            raise RequestValidationError(exc.field, str(exc)) from None
        sampler = resolve_sampler(SAMPLERS[0].name, scheduler)

    seed = read_int(data, "seed", -1, -1, MAX_SEED)
    subseed = read_int(data, "subseed", -1, -1, MAX_SEED)
    rng = rng or random.SystemRandom()
    if seed == -1:
        seed = rng.randrange(MAX_SEED)
    if subseed == -1:
        subseed = rng.randrange(MAX_SEED)

    with fields_of("override_settings"):
        clip_skip = read_int(override_settings, "CLIP_stop_at_last_layers", 1, 1, 12)
        eta_noise_seed_delta = read_int(override_settings, "eta_noise_seed_delta", 0, 0, MAX_SEED)
        # A1111: a request without `tiling` tiles as the `tiling` option says
        tiling_option = read_bool(override_settings, "tiling", False)
        noise_multiplier = read_float(override_settings, "initial_noise_multiplier", 1.0, 0.0, 1.5)  # img2img's
        fix_steps = read_bool(override_settings, "img2img_fix_steps", False)  # img2img's
        token_merging = {
            key: read_float(override_settings, key, 0.0, 0.0, MAX_TOKEN_MERGING_RATIO) for key in TOKEN_MERGING_OPTIONS
        }
        deepcache = parse_deepcache_options(override_settings)
    return GenerationRequest(
        kind=kind,
        prompt=_read_prompt(data, "prompt", limits),
        negative_prompt=_read_prompt(data, "negative_prompt", limits),
        steps=read_int(data, "steps", _within(50, 1, limits.max_steps), 1, limits.max_steps),
        cfg_scale=read_float(data, "cfg_scale", 7.0, 0.0, 30.0),
        width=_size(data, "width", limits),
        height=_size(data, "height", limits),
        seed=seed,
        subseed=subseed,
        subseed_strength=read_float(data, "subseed_strength", 0.0, 0.0, 1.0),
        seed_resize_from_w=read_int(data, "seed_resize_from_w", -1, -1, limits.max_size),
        seed_resize_from_h=read_int(data, "seed_resize_from_h", -1, -1, limits.max_size),
        sampler_name=sampler.name,
        scheduler=sampler.schedule_label,
        batch_size=read_int(data, "batch_size", 1, 1, limits.max_batch_size),
        n_iter=read_int(data, "n_iter", 1, 1, limits.max_n_iter),
        checkpoint=checkpoint,
        vae=vae,
        clip_skip=clip_skip,
        eta_noise_seed_delta=eta_noise_seed_delta,
        sampler_parameters=parse_sampler_parameters(data, override_settings, sampler.name),
        force_task_id=parse_task_id(data.get("force_task_id"), "force_task_id"),
        **token_merging,
        **deepcache,
        override_settings=dict(override_settings),
        save_dir=parse_save_dir(alwayson.get("save_dir")),
        tiling=read_bool(data, "tiling", tiling_option),
        disable_extra_networks=read_bool(data, "disable_extra_networks", False),
        **parse_face_restoration(data, override_settings),
        **parse_refiner(data, override_settings),
        **(_img2img_fields(data, noise_multiplier, fix_steps) if kind == "img2img" else _hires_fields(data, limits)),
        **(_hires_pass_fields(data, limits, sampler) if kind == "txt2img" else {}),
    )


_TASK_ID = re.compile(r"[A-Za-z0-9()_.:-]{1,64}")


def parse_task_id(value: Any, field_name: str) -> str | None:
    """A client's task id (A1111's UI sends `task(k3j5…)`): up to 64 letters, digits and `()_.:-`; None if unset."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _TASK_ID.fullmatch(value):
        raise RequestValidationError(field_name, "must be up to 64 letters, digits or ()_.:- characters, e.g. task(abc123)")
    return value


# A1111's sampler parameters: (default, lowest, highest), the ranges of A1111's settings sliders
SIGMA_PARAMETERS: dict[str, tuple[float, float, float]] = {
    "s_churn": (0.0, 0.0, 100.0), "s_tmin": (0.0, 0.0, 10.0), "s_tmax": (0.0, 0.0, 999.0),
    "s_noise": (1.0, 0.0, 1.1), "s_min_uncond": (0.0, 0.0, 15.0),
}


def parse_sampler_parameters(data: Mapping[str, Any], override_settings: Mapping[str, Any], sampler_name: str) -> SamplerParameters:
    """eta, `s_churn`, `s_tmin`, `s_tmax`, `s_noise` and `s_min_uncond` (NGMS), for `sampler_name`.

    `eta`, as A1111: the request's, else the option its sampler reads (`eta_ddim` for DDIM,
    `eta_ancestral` otherwise; `override_settings`, which the member's options fill). The sigma
    parameters: the request's value where it differs from A1111's default, else the option's. A1111
    1.10 reads only the options for them (its request fields are overwritten), and clients such
    as webuiapi send the defaults in every request; so a member's stored `s_noise` holds unless a
    request asks for another value, and a request's own value is honoured either way.
    """
    with fields_of("override_settings"):  # both etas checked, whichever the sampler reads
        etas = {option: read_float(override_settings, option, default, 0.0, 1.0) for option, default in (("eta_ddim", 0.0), ("eta_ancestral", 1.0))}
        option_eta = etas["eta_ddim" if sampler_name == "DDIM" else "eta_ancestral"]
        options = {name: read_float(override_settings, name, default, lo, hi) for name, (default, lo, hi) in SIGMA_PARAMETERS.items()}
        all_steps = read_bool(override_settings, "s_min_uncond_all", False)
    values = {}
    for name, (default, lo, hi) in SIGMA_PARAMETERS.items():
        asked = read_float(data, name, default, lo, hi)
        values[name] = asked if asked != default else options[name]
    return sampler_parameters(
        sampler_name, eta=read_float(data, "eta", option_eta, 0.0, 1.0), s_min_uncond_all=all_steps, **values,
    )


NO_REFINER = ("", "none")  # A1111's names for "no refiner" (any case)


HIRES_REFINER_PASSES = ("first pass", "second pass", "both passes")  # A1111's hires_fix_refiner_pass


def parse_refiner(data: Mapping[str, Any], override_settings: Mapping[str, Any]) -> dict[str, Any]:
    """`refiner_checkpoint` and `refiner_switch_at` (a fraction of the steps, 0..1), and the
    `hires_fix_refiner_pass` option. As A1111's API, a refiner named without a switch point takes
    over from the first step."""
    name = data.get("refiner_checkpoint")
    if name is not None and not isinstance(name, str):
        raise RequestValidationError("refiner_checkpoint", "must be a checkpoint's name, or \"None\" for no refiner")
    switch_at = 0.0
    if data.get("refiner_switch_at") is not None:
        switch_at = read_float(data, "refiner_switch_at", 0.0, 0.0, 1.0)
    if name is None or name.strip().lower() in NO_REFINER:
        return {}  # the option matters only with a refiner (a member's stored value is not checked then)
    with fields_of("override_settings"):
        hires_pass = read_str(override_settings, "hires_fix_refiner_pass", "second pass", 20)
    if hires_pass not in HIRES_REFINER_PASSES:
        raise RequestValidationError(
            "override_settings.hires_fix_refiner_pass", f"must be one of {', '.join(HIRES_REFINER_PASSES)}, got {hires_pass!r}"
        )
    return {"refiner_checkpoint": name.strip(), "refiner_switch_at": switch_at, "hires_refiner_pass": hires_pass}


FACE_RESTORERS = ("CodeFormer", "GFPGAN")  # A1111's face_restoration_model values


def parse_face_restoration(data: Mapping[str, Any], override_settings: Mapping[str, Any]) -> dict[str, Any]:
    """`restore_faces`, and the restorer and CodeFormer weight `override_settings` may choose
    (checked whether or not faces are restored: a bad value is refused either way)."""
    # A1111: a request without `restore_faces` restores as the `face_restoration` option says
    with fields_of("override_settings"):
        option = read_bool(override_settings, "face_restoration", False)
    enabled = read_bool(data, "restore_faces", option)
    name = read_optional_str(override_settings, "face_restoration_model", "override_settings")
    if name is not None:
        match = next((known for known in FACE_RESTORERS if known.lower() == name.strip().lower()), None)
        if match is None:
            raise RequestValidationError(
                "override_settings.face_restoration_model", f"unknown face restorer {name!r}: use CodeFormer or GFPGAN"
            )
        name = match
    weight = None
    if override_settings.get("code_former_weight") is not None:
        with fields_of("override_settings"):
            weight = read_float(override_settings, "code_former_weight", 0.5, 0.0, 1.0)
    if not enabled:
        return {}
    return {"restore_faces": True, "face_restoration_model": name, "code_former_weight": weight}


HIRES_UPSCALERS = (
    "Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)", "Latent (nearest)",
    "Latent (nearest-exact)", "None", "Lanczos", "Nearest",
)


def _hires_fields(data: Mapping[str, Any], limits: Limits) -> dict[str, Any]:
    """A1111's hires fix: target from hr_resize_x/y, else the first pass × hr_scale."""
    # Read (and so checked) whether or not hires fix is on: a bad value is refused either way.
    enabled = read_bool(data, "enable_hr", False)
    width, height = _size(data, "width", limits), _size(data, "height", limits)
    scale = read_float(data, "hr_scale", 2.0, 1.0, 8.0)
    resize_x = read_int(data, "hr_resize_x", 0, 0, limits.max_size)
    resize_y = read_int(data, "hr_resize_y", 0, 0, limits.max_size)
    upscaler = read_str(data, "hr_upscaler", "Latent", 100) or "Latent"
    second_pass_steps = read_int(data, "hr_second_pass_steps", 0, 0, limits.max_steps)
    denoising_strength = read_float(data, "denoising_strength", 0.75, 0.0, 1.0)
    if not enabled:
        return {}
    if resize_x == 0 and resize_y == 0:
        target_w, target_h = int(width * scale), int(height * scale)
    elif resize_y == 0:  # one side given: keep the aspect ratio, as A1111 does
        target_w, target_h = resize_x, resize_x * height // width
    elif resize_x == 0:
        target_w, target_h = resize_y * width // height, resize_y
    else:
        target_w, target_h = resize_x, resize_y
    target_w, target_h = target_w // 8 * 8, target_h // 8 * 8
    if max(target_w, target_h) > limits.max_size:
        raise RequestValidationError(
            "hr_scale", f"the hires-fix target {target_w}x{target_h} is over the {limits.max_size} px limit: lower hr_scale or hr_resize_x/y"
        )
    # Any other name is a model upscaler (ESRGAN family), resolved against the member's folders at submit.
    match = next((name for name in HIRES_UPSCALERS if name.lower() == upscaler.lower()), upscaler.strip())
    return {
        "hr_width": max(target_w, width),
        "hr_height": max(target_h, height),
        "hr_upscaler": match,
        "hr_second_pass_steps": second_pass_steps,
        "denoising_strength": denoising_strength,
    }


SAME_SAMPLER = ("", "use same sampler")  # A1111's UI choices meaning "as the first pass" (any case)
SAME_SCHEDULER = ("", "use same scheduler")
SAME_CHECKPOINT = ("", "use same checkpoint")


def _same_or_name(data: Mapping[str, Any], name: str, same: tuple[str, ...], max_chars: int = 100) -> str | None:
    """A name field where None, "" or A1111's "Use same …" mean the first pass's (None)."""
    value = read_str(data, name, "", max_chars)
    return None if value.strip().lower() in same else value.strip()


def _hires_pass_fields(data: Mapping[str, Any], limits: Limits, sampler: SamplerChoice) -> dict[str, Any]:
    """A1111 1.10's second-pass overrides of the hires fix: `hr_prompt`, `hr_negative_prompt`,
    `hr_sampler_name`, `hr_scheduler` (resolved as `sampler_name`/`scheduler`, but an unknown one is
    a 422 naming it) and `hr_checkpoint_name` (resolved by `job_submit`). Checked whether or not the
    hires fix is on; kept only when it is."""
    hr_prompt = _read_prompt(data, "hr_prompt", limits)
    hr_negative_prompt = _read_prompt(data, "hr_negative_prompt", limits)
    sampler_name = _same_or_name(data, "hr_sampler_name", SAME_SAMPLER)
    scheduler = _same_or_name(data, "hr_scheduler", SAME_SCHEDULER)
    checkpoint = _same_or_name(data, "hr_checkpoint_name", SAME_CHECKPOINT, max_chars=300)
    hires_sampler = None
    if sampler_name is not None or scheduler is not None:
        try:
            hires_sampler = resolve_sampler(sampler_name or sampler.name, scheduler or sampler.schedule_label)
        except SamplerError as exc:
            raise RequestValidationError(f"hr_{exc.field}", str(exc)) from None
    if not read_bool(data, "enable_hr", False):
        return {}
    return {
        "hr_prompt": hr_prompt,
        "hr_negative_prompt": hr_negative_prompt,
        # both stored once either is named: a legacy "DPM++ 2M Karras" names the schedule too
        "hr_sampler_name": hires_sampler.name if hires_sampler else None,
        "hr_scheduler": hires_sampler.schedule_label if hires_sampler else None,
        "hr_checkpoint_name": checkpoint,
    }


def _img2img_fields(data: Mapping[str, Any], option_multiplier: float, fix_steps: bool) -> dict[str, Any]:
    """img2img's own fields, with A1111's API defaults (`mask_blur` sets both directions).
    `initial_noise_multiplier` as the sampler parameters: the request's where it is not A1111's 1,
    else the option (webuiapi sends 1 in every img2img)."""
    blur = read_int(data, "mask_blur", 4, 0, 64)
    multiplier = read_float(data, "initial_noise_multiplier", 1.0, 0.0, 1.5)
    denoising_strength = read_float(data, "denoising_strength", 0.75, 0.0, 1.0)
    return {
        "denoising_strength": denoising_strength,
        "resize_mode": read_int(data, "resize_mode", 0, 0, 3),
        "mask_blur_x": read_int(data, "mask_blur_x", blur, 0, 64),
        "mask_blur_y": read_int(data, "mask_blur_y", blur, 0, 64),
        "mask_round": read_bool(data, "mask_round", True),
        "inpainting_fill": read_int(data, "inpainting_fill", 0, 0, 3),
        "inpaint_full_res": read_bool(data, "inpaint_full_res", True),
        "inpaint_full_res_padding": read_int(data, "inpaint_full_res_padding", 0, 0, 1024),
        "inpainting_mask_invert": read_bool(data, "inpainting_mask_invert", False),
        "initial_noise_multiplier": multiplier if multiplier != 1.0 else option_multiplier,
        "img2img_fix_steps": fix_steps,
    }


def img2img_steps(steps: int, denoising_strength: float) -> tuple[int, float]:
    """A1111's `setup_img2img_steps` for a pass that runs exactly `steps` steps (the hires fix's second
    pass always; img2img under the `img2img_fix_steps` option): the schedule is stretched to
    int(steps / min(strength, 0.999)) steps and its last `steps` run. Returned as diffusers' img2img
    arguments (num_inference_steps, strength): diffusers runs int(num_inference_steps × strength)
    steps from the end, so the strength is nudged to land on `steps` exactly."""
    if denoising_strength <= 0:
        return steps, 0.0
    total = int(steps / min(denoising_strength, 0.999))
    return total, min(1.0, (steps + 0.5) / total)


def batch_key(request: GenerationRequest, *, model_key: str, lora_key: str, vae_key: str = "") -> str:
    """Jobs with equal keys can share one pipeline call: everything the UNet batch shares.

    Prompts, seeds, image counts and init images may differ (each image has its own generator
    and its own init image); the model, VAE, LoRA set, size, steps, sampler, guidance, token
    merging and DeepCache may not, nor, for img2img, the strength and how images and masks are prepared.
    """
    shared: tuple[Any, ...] = (
        request.kind, model_key, vae_key, lora_key, request.clip_skip, request.width, request.height, request.steps,
        request.sampler_name, request.scheduler, request.cfg_scale, request.subseed_strength, request.tiling,
    )
    if request.token_merging_first_pass or request.token_merging_hires_pass:  # one call merges every row alike
        shared += (("token merging", request.token_merging_first_pass, request.token_merging_hires_pass),)
    if request.deepcache_first_pass or request.deepcache_hires_pass:  # one call caches every row alike
        shared += (("deepcache", request.deepcache_first_pass, request.deepcache_hires_pass),)
    if request.seed_resize_from:
        shared += (request.seed_resize_from,)
    if request.sampler_parameters != SamplerParameters():  # one scheduler, one UNet call per step
        shared += (dataclasses.astuple(request.sampler_parameters),)
    if request.refiner_runs:  # the refiner's sha256 is in `model_key`; the switch point is shared too
        shared += (request.refiner_switch_at,)
    if request.hires:
        shared += (request.hr_width, request.hr_height, request.hr_upscaler, request.hr_steps, request.denoising_strength)
        if request.refiner_runs:
            shared += (request.hires_refiner_pass,)
        if request.upscaler_model:
            shared += (request.upscaler_model["sha256"],)
        # the hires pass's own sampler (its checkpoint's sha256 is in `model_key`; its prompts are per row)
        hires_sampler = (request.hires_sampler.name, request.hires_sampler.schedule_label)
        if hires_sampler != (request.sampler_name, request.scheduler):
            shared += hires_sampler
    if request.kind == "img2img":
        shared += (
            request.denoising_strength, request.mask is not None, request.resize_mode, request.mask_blur_x,
            request.mask_blur_y, request.mask_round, request.inpainting_fill, request.inpaint_full_res,
            request.inpaint_full_res_padding, request.inpainting_mask_invert, request.initial_noise_multiplier,
            request.img2img_fix_steps,
        )
    if request.controlnet_units:  # the control images too: one set of maps per pipeline call
        shared += tuple(dataclasses.astuple(unit) for unit in request.controlnet_units)
    if request.face_restorer:
        restorer = request.face_restorer
        shared += (restorer["sha256"], restorer["detector_sha256"], restorer["weight"])
    if request.sd_upscale:  # `job_submit` gives such a job a key of its own: it is never batched
        shared += (dataclasses.astuple(request.sd_upscale), request.batch_size)
    return hashlib.sha256(repr(shared).encode()).hexdigest()[:32]
