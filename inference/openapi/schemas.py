"""Request and response bodies of the JSON APIs, as pydantic models (documentation types).

The `/sdapi/v1` models carry AUTOMATIC1111 1.10's names (`StableDiffusionTxt2ImgProcessingAPI`,
`TextToImageResponse`, …) and field names, with A1111's convention that every request field
is optional and may be `null` (null means the default). Unknown keys are ignored, as A1111's
pydantic v1 models ignore them, so request models allow additional properties.

A bound that depends on this deployment's settings is written as `limit("max_steps")`: the
document builder (`document.py`) replaces it with the live value of `inference/limits.py`'s
`Limits`, so `/openapi.json` states the limits a request will really meet. Bounds that do not
depend on settings are the parsers' own constants (`a1111/generation.py`, `a1111/extras.py`);
`tests/inference/test_openapi.py` probes the parser at every bound stated here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from a1111 import options as a1111_options
from a1111 import promptgen as pg
from a1111 import xyz
from a1111.deepcache import MAX_FULL_RUN_STEP_RATE, MAX_RESNET_LEVEL
from a1111.generation import MAX_SEED, MAX_TOKEN_MERGING_RATIO, TOKEN_MERGING_OPTIONS
from a1111.styles import MAX_STYLE_NAME_CHARS, MAX_STYLES

LIMIT_KEY = "x-atelier-limit"  # replaced by document.py: {"maximum" | "maxLength": <Limits field>}


def limit(field: str, *, keyword: str = "maximum") -> dict[str, Any]:
    """A schema bound taken from this deployment's `Limits.<field>` when the document is built."""
    return {LIMIT_KEY: {keyword: field}}


class Request(BaseModel):
    """A request body: unknown keys are accepted and ignored (A1111's behaviour)."""

    model_config = ConfigDict(extra="allow")


class Response(BaseModel):
    """A response body: the fields listed are always present; more may be added later."""

    model_config = ConfigDict(extra="allow")


def _int(default: int, lo: int, hi: int | None = None, *, lim: str | None = None, doc: str = "") -> Any:
    extra = limit(lim) if lim else None
    return Field(default, ge=lo, le=hi, description=doc or None, json_schema_extra=extra)


def _float(default: float, lo: float, hi: float, doc: str = "") -> Any:
    return Field(default, ge=lo, le=hi, description=doc or None)


Prompt = Annotated[str | None, Field(json_schema_extra=limit("max_prompt_chars", keyword="maxLength"))]
ShortText = Annotated[str | None, Field(max_length=100)]
Seed = Annotated[int | None, Field(ge=-1, le=MAX_SEED, description="-1: a random seed")]
Size = Annotated[
    int | None,
    Field(ge=0, json_schema_extra={LIMIT_KEY: {"minimum": "min_size", "maximum": "max_size"}},
          description="Pixels; snapped down to a multiple of 8."),
]
Flag = Annotated[bool | Literal[0, 1] | None, Field(description="true or false (1 or 0 too, as A1111 clients send)")]
Ignored = Annotated[
    Any, Field(description="Accepted for A1111 compatibility and not applied (`info` says so where it matters).")
]


def _no_op(why: str) -> Any:
    """A field A1111 accepts that changes nothing here, and why (A1111 ignores it too, or it has no meaning)."""
    return Field(None, description=why)
TaskId = Annotated[str, Field(pattern=r"^[A-Za-z0-9()_.:-]{1,64}$", description="The force_task_id a job was submitted with.")]
Base64Image = Annotated[str, Field(description="Raw base64, a data: URI, or an http(s) URL (fetched by the server).")]


# --- /sdapi/v1: generation ---------------------------------------------------------------------


class ControlNetScript(Request):
    args: list[dict[str, Any]] | None = Field(
        None, description="sd-webui-controlnet API units: {enabled, module, model, weight, image, …}."
    )


class AlwaysonScripts(Request):
    controlnet: ControlNetScript | None = None
    save_dir: str | None = Field(None, description="PAI-EAS: a folder of your working directory for the outputs.")
    sd_model_checkpoint: str | None = Field(None, description="PAI-EAS: the checkpoint (as override_settings).")
    sd_vae: str | None = None


class OverrideSettings(Request):
    sd_model_checkpoint: str | None = Field(None, description="A checkpoint title, name or hash from sd-models.")
    sd_vae: str | None = None
    CLIP_stop_at_last_layers: int | None = Field(None, ge=1, le=12)
    face_restoration_model: Literal["CodeFormer", "GFPGAN"] | None = None
    code_former_weight: float | None = Field(None, ge=0.0, le=1.0)
    eta_noise_seed_delta: int | None = Field(None, ge=0, le=MAX_SEED, description="A1111's ENSD: the sampler's own noise (ancestral, SDE) is seeded with seed + this.")
    face_restoration: bool | None = Field(None, description="Restore faces when the request leaves restore_faces out.")
    tiling: bool | None = Field(None, description="Tile when the request leaves tiling out.")
    eta_ddim: float | None = Field(None, ge=0.0, le=1.0, description="DDIM's eta when the request leaves eta out (default 0).")
    eta_ancestral: float | None = Field(
        None, ge=0.0, le=1.0, description="Eta of Euler a, DPM2 a and DPM++ 2M SDE when the request leaves eta out (default 1).",
    )
    s_churn: float | None = Field(None, ge=0.0, le=100.0, description="Euler's sigma churn unless the request sets s_churn.")
    s_tmin: float | None = Field(None, ge=0.0, le=10.0)
    s_tmax: float | None = Field(None, ge=0.0, le=999.0, description="0: no upper limit.")
    s_noise: float | None = Field(None, ge=0.0, le=1.1)
    s_min_uncond: float | None = Field(None, ge=0.0, le=15.0, description="NGMS, unless the request sets s_min_uncond.")
    s_min_uncond_all: bool | None = Field(None, description="NGMS on every step instead of every other.")
    initial_noise_multiplier: float | None = Field(None, ge=0.0, le=1.5, description="img2img's noise multiplier.")
    img2img_fix_steps: bool | None = Field(
        None, description="img2img runs all its steps, over a schedule stretched by the denoising strength (A1111's option).",
    )
    token_merging_ratio: float | None = Field(
        None, ge=0.0, le=MAX_TOKEN_MERGING_RATIO, description="ToMe: the ratio of image tokens merged before self-attention (0: off)."
    )
    token_merging_ratio_img2img: float | None = Field(
        None, ge=0.0, le=MAX_TOKEN_MERGING_RATIO, description="img2img's token merging ratio (0: token_merging_ratio)."
    )
    token_merging_ratio_hr: float | None = Field(
        None, ge=0.0, le=MAX_TOKEN_MERGING_RATIO, description="The hires pass's token merging ratio (0: token_merging_ratio)."
    )
    deepcache_enable_pass: Literal["disable", "second pass", "both passes"] | None = Field(
        None, description="DeepCache step caching (the sd-webui-deepcache extension): which passes cache (default disable).",
    )
    deepcache_enable: bool | None = Field(
        None, description="The extension's earlier switch: true caches both passes when deepcache_enable_pass is disable.",
    )
    deepcache_cache_resnet_level: int | None = Field(
        None, ge=0, le=MAX_RESNET_LEVEL,
        description="The last LDM input block a cached step runs (default 0; SD 1.x/2.x up to 10, SDXL up to 8).",
    )
    deepcache_cache_enable_step_percentage: float | None = Field(
        None, ge=0.0, le=1.0, description="The share of the first pass's steps that run in full before caching (default 0.4).",
    )
    deepcache_full_run_step_rate: int | None = Field(
        None, ge=0, le=MAX_FULL_RUN_STEP_RATE,
        description="Every UNet call whose index is a multiple of this runs in full (default 5; 0 or 1: no caching).",
    )
    deepcache_cache_enable_step_percentage_hr: float | None = Field(
        None, ge=0.0, le=1.0, description="The share of the hires pass's steps that run in full before caching (default 0).",
    )


class _ProcessingAPI(Request):
    """The fields txt2img and img2img share (`StableDiffusionProcessing`)."""

    prompt: Prompt = ""
    negative_prompt: Prompt = ""
    styles: list[Annotated[str, Field(max_length=MAX_STYLE_NAME_CHARS)]] | None = Field(
        None, max_length=MAX_STYLES,
        description="Names from /sdapi/v1/prompt-styles (yours, your team's, the public ones), merged into the "
        "prompts in order: a style's {prompt} is replaced by the prompt, else the style is appended. "
        "An unknown name is a 422 naming it.",
    )
    seed: Seed = -1
    subseed: Seed = -1
    subseed_strength: float | None = _float(0.0, 0.0, 1.0, "Variation strength: the seed's noise moved towards the subseed's.")
    seed_resize_from_h: int | None = _int(-1, -1, lim="max_size", doc="With seed_resize_from_w (both > 0): the noise is drawn as for an image of that size.")
    seed_resize_from_w: int | None = _int(-1, -1, lim="max_size", doc="With seed_resize_from_h (both > 0): A1111's \"Resize seed from\".")
    sampler_name: ShortText = Field(None, description="A name or alias from /sdapi/v1/samplers.")
    sampler_index: ShortText = "Euler"
    scheduler: ShortText = Field(None, description="A name or label from /sdapi/v1/schedulers.")
    batch_size: int | None = _int(1, 1, lim="max_batch_size")
    n_iter: int | None = _int(1, 1, lim="max_n_iter")
    steps: int | None = _int(50, 1, lim="max_steps")
    cfg_scale: float | None = _float(7.0, 0.0, 30.0)
    width: Size = 512
    height: Size = 512
    restore_faces: Flag = None
    tiling: Flag = None
    do_not_save_samples: Any = _no_op("Images are always kept in your outputs folder (your working directory), where the API returns them from.")
    do_not_save_grid: Any = _no_op("Grids are kept with the job group that made them.")
    eta: float | None = _float(
        None, 0.0, 1.0, "Eta for DDIM, Euler a, DPM2 a and DPM++ 2M SDE (Heun); unset: the option eta_ddim (DDIM) or "
        "eta_ancestral (the others), by default 0 and 1. Other samplers take no eta.",
    )
    s_churn: float | None = _float(0.0, 0.0, 100.0, "Euler's sigma churn; 0 (default): the option s_churn.")
    s_tmin: float | None = _float(0.0, 0.0, 10.0, "The lowest sigma Euler churns at; 0 (default): the option s_tmin.")
    s_tmax: float | None = _float(0.0, 0.0, 999.0, "The highest sigma Euler churns at (0: no limit); 0: the option s_tmax.")
    s_noise: float | None = _float(
        1.0, 0.0, 1.1, "Scale of the noise Euler (churning), Euler a, DPM2 a and DPM++ 2M SDE add; 1 (default): the option s_noise.",
    )
    s_min_uncond: float | None = _float(
        0.0, 0.0, 15.0, "NGMS: below this sigma the negative prompt is skipped every other step (A1111's speed-up); "
        "0 (default): the option s_min_uncond.",
    )
    denoising_strength: float | None = _float(0.75, 0.0, 1.0)
    override_settings: OverrideSettings | None = None
    override_settings_restore_afterwards: Flag = Field(
        True, description="false: the override_settings stay your options afterwards (as POST /sdapi/v1/options), "
        "as A1111 keeps them set.",
    )
    refiner_checkpoint: str | None = Field(
        None,
        description="A1111's SDXL refiner: a checkpoint you may use, named as sd_model_checkpoint (\"None\" or empty: "
        "none). Sampling switches to it at refiner_switch_at of the steps (with the hires fix: of the second pass); "
        "the base must be SDXL and the refiner SDXL-family, else a 422. Not with inpainting, ControlNet or SD upscale.",
    )
    refiner_switch_at: float | None = _float(
        0.0, 0.0, 1.0, "The fraction of the steps (by timestep, as A1111 1.10) after which the refiner samples; "
        "1: it never runs. Unset with a refiner, as A1111's API: the refiner runs every step.",
    )
    disable_extra_networks: Flag = Field(
        False, description="true: <lora:…> and <hypernet:…> tags are stripped from the prompts but not applied (A1111)."
    )
    comments: Any = _no_op("A1111 prints comments to its console; nothing is printed here.")
    script_name: str | None = Field(
        None, max_length=100,
        description="A selectable script by its A1111 title, any case: \"x/y/z plot\", \"prompt matrix\", "
        "\"prompts from file or textbox\" (see /sdapi/v1/scripts); their cells run as one job group and the answer "
        "holds the grid (where the script makes one), then the images. img2img also takes \"sd upscale\" (one job: the "
        "init image upscaled, then img2img'd in width x height tiles). An unknown name is a 422.",
    )
    script_args: list[Any] | None = Field(
        None,
        description="The script's arguments in A1111 1.10's positional order (/sdapi/v1/script-info); missing trailing "
        "ones take A1111's defaults. X/Y/Z axis types are indices into A1111's axis list of the tab (txt2img and "
        "img2img differ) or labels. SD upscale: [info (ignored), overlap 0-256 (default 64), upscaler index into "
        "/sdapi/v1/upscalers (default 0, None: no upscale), scale factor 1-4 (default 2)]. An argument that does not "
        "fit is a 422 naming it (`script_args[i]`).",
    )
    send_images: Any = Field(True, description="Only `false` leaves the images out of the response.")
    save_images: Any = _no_op("Images are always saved to your outputs folder.")
    alwayson_scripts: AlwaysonScripts | None = None
    infotext: str | None = Field(
        None, max_length=65_536,
        description="An image's A1111 parameters text: the fields and settings it names (prompt, steps, sampler, seed, "
        "size, hires, Clip skip, ENSD, Eta, …) fill those this request leaves out (a field the request sends wins).",
    )


class StableDiffusionTxt2ImgProcessingAPI(_ProcessingAPI):
    enable_hr: Flag = False
    firstphase_width: Any = _no_op("Replaced by hr_scale / hr_resize_x in A1111 1.0; A1111 1.10 ignores it too.")
    firstphase_height: Any = _no_op("Replaced by hr_scale / hr_resize_y in A1111 1.0; A1111 1.10 ignores it too.")
    hr_scale: float | None = _float(2.0, 1.0, 8.0)
    hr_upscaler: str | None = Field(None, max_length=100, description="A latent mode or an upscaler name.")
    hr_second_pass_steps: int | None = _int(0, 0, lim="max_steps", doc="0: as many as steps.")
    hr_resize_x: int | None = _int(0, 0, lim="max_size", doc="0: width × hr_scale.")
    hr_resize_y: int | None = _int(0, 0, lim="max_size", doc="0: height × hr_scale.")
    hr_checkpoint_name: str | None = Field(
        None, max_length=300,
        description="The hires pass's own checkpoint, named as sd_model_checkpoint (None, \"\" or \"Use same checkpoint\": "
        "the first pass's). It must take the first pass's latents (SD 1.x/2.x or SDXL, not an SDXL refiner), else a "
        "422; not together with a refiner.",
    )
    hr_sampler_name: ShortText = Field(
        None, description="The hires pass's sampler, as sampler_name (None or \"Use same sampler\": the first pass's); "
        "an unknown one is a 422.",
    )
    hr_scheduler: ShortText = Field(
        None, description="The hires pass's schedule type, as scheduler (None or \"Use same scheduler\": the first "
        "pass's); an unknown one is a 422.",
    )
    hr_prompt: Prompt = Field(
        "", description="The hires pass's prompt (\"\": the prompt), styles merged in. Prompt editing counts into the "
        "hires steps as for the prompt. Its <lora:…>/<hypernet:…> tags must be the prompt's (same weights; none "
        "missing), else a 422.",
    )
    hr_negative_prompt: Prompt = Field("", description="The hires pass's negative prompt (\"\": the negative prompt).")
    force_task_id: TaskId | None = Field(None, description="Your own id for the job, which POST /internal/progress takes as id_task.")


class StableDiffusionImg2ImgProcessingAPI(_ProcessingAPI):
    init_images: list[Base64Image] | None = Field(
        None, description="Required (at least one image); one per image of the batch, or one for all."
    )
    resize_mode: int | None = _int(0, 0, 3, doc="0 just resize, 1 crop and resize, 2 resize and fill, 3 latent.")
    image_cfg_scale: Any = _no_op("Only for InstructPix2Pix edit models, which A1111 ignores it without and this platform does not load.")
    mask: Base64Image | None = None
    mask_blur: int | None = _int(4, 0, 64)
    mask_blur_x: int | None = _int(4, 0, 64)
    mask_blur_y: int | None = _int(4, 0, 64)
    mask_round: Flag = True
    inpainting_fill: int | None = _int(0, 0, 3, doc="0 fill, 1 original, 2 latent noise, 3 latent nothing.")
    inpaint_full_res: Flag = True
    inpaint_full_res_padding: int | None = _int(0, 0, 1024)
    inpainting_mask_invert: int | None = _int(0, 0, 1)
    initial_noise_multiplier: float | None = _float(
        1.0, 0.0, 1.5, "img2img's starting noise scaled by this; 1 (default): the option initial_noise_multiplier.",
    )
    latent_mask: Base64Image | None = Field(
        None, description="With a mask: the mask of the latent-space blend and latent fills instead of it, used as sent "
        "(resized to the latent; A1111's), while `mask` still decides what is pasted back. Without a mask: ignored.",
    )
    include_init_images: Any = Field(False, description="Truthy: `parameters` echoes init_images and mask.")
    force_task_id: TaskId | None = Field(None, description="Your own id for the job, which POST /internal/progress takes as id_task.")


class TextToImageResponse(Response):
    images: list[str] | None = Field(description="Base64 PNGs (no data: prefix), each with its infotext.")
    parameters: dict[str, Any] = Field(description="The request as understood.")
    info: str = Field(description="A JSON string: seeds, infotexts, job id, and notes.")


class ImageToImageResponse(TextToImageResponse):
    pass


# --- /sdapi/v1: extras, png-info --------------------------------------------------------------


class ExtrasBaseRequest(Request):
    resize_mode: int | None = _int(0, 0, 1, doc="0: scale by upscaling_resize, 1: to upscaling_resize_w × _h.")
    show_extras_results: Flag = True
    gfpgan_visibility: float | None = _float(0.0, 0.0, 1.0)
    codeformer_visibility: float | None = _float(0.0, 0.0, 1.0)
    codeformer_weight: float | None = _float(0.0, 0.0, 1.0)
    upscaling_resize: float | None = _float(2.0, 1.0, 8.0)
    upscaling_resize_w: int | None = _int(512, 1, 1_000_000)
    upscaling_resize_h: int | None = _int(512, 1, 1_000_000)
    upscaling_crop: Flag = True
    upscaler_1: str | None = Field("None", max_length=200)
    upscaler_2: str | None = Field("None", max_length=200)
    extras_upscaler_2_visibility: float | None = _float(0.0, 0.0, 1.0)
    upscale_first: Flag = False


class ExtrasSingleImageRequest(ExtrasBaseRequest):
    image: Base64Image = Field(description="The image to process.")


class FileData(Request):
    data: Base64Image
    name: str | None = None


class ExtrasBatchImagesRequest(ExtrasBaseRequest):
    imageList: list[FileData] = Field(min_length=1)


class ExtrasSingleImageResponse(Response):
    html_info: str
    image: str = Field(description="A base64 PNG; empty when the job was interrupted.")


class ExtrasBatchImagesResponse(Response):
    html_info: str
    images: list[str]


class InterrogateRequest(Request):
    image: Base64Image = Field(description="The image to caption or tag.")
    model: Literal["clip", "deepdanbooru"] | None = Field(
        "clip", description="clip: a BLIP caption with CLIP-ranked phrases; deepdanbooru: danbooru tags. Others: 404.",
    )


class InterrogateResponse(Response):
    caption: str = Field(description="The caption or the comma-separated tags; empty when the job was interrupted.")


class PNGInfoRequest(Request):
    image: Base64Image = Field(min_length=1)


class PNGInfoResponse(Response):
    info: str
    items: dict[str, Any]
    parameters: dict[str, Any]


# --- /sdapi/v1: state and lists ----------------------------------------------------------------


class ProgressState(Response):
    skipped: bool
    interrupted: bool
    stopping_generation: bool
    job: str
    job_count: int
    job_timestamp: str
    job_no: int
    sampling_step: int
    sampling_steps: int


class ProgressResponse(Response):
    progress: float = Field(ge=0, le=1)
    eta_relative: float
    state: ProgressState
    current_image: str | None
    textinfo: str | None


class InternalProgressRequest(Request):
    id_task: TaskId
    id_live_preview: int = Field(-1, description="The id_live_preview last received (-1: none); the preview is sent again only when it changed.")
    live_preview: bool = True


class InternalProgressResponse(Response):
    active: bool
    queued: bool
    completed: bool
    progress: float | None = Field(None, ge=0, le=1)
    eta: float | None
    live_preview: str | None = Field(None, description="A data: URI of the running job's latest preview.")
    id_live_preview: int
    textinfo: str | None


# Bounds and choices the platform checks on the options it applies (the rest only keep their type).
OPTION_FIELDS: dict[str, Any] = {
    "sd_model_checkpoint": Field(None, description="A checkpoint title, name or hash from sd-models."),
    "sd_vae": Field("Automatic", description="A VAE from sd-vae, or Automatic / None."),
    "CLIP_stop_at_last_layers": Field(1, ge=1, le=12),
    "samples_format": Field("png", max_length=10),
    "eta_noise_seed_delta": Field(0, ge=0, le=MAX_SEED),
    "sd_checkpoint_hash": Field(None, description="Read-only: the SHA-256 of sd_model_checkpoint (ignored on a write)."),
    "code_former_weight": Field(0.5, ge=0.0, le=1.0),
    **{key: Field(0.0, ge=0.0, le=MAX_TOKEN_MERGING_RATIO) for key in TOKEN_MERGING_OPTIONS},
    "deepcache_cache_resnet_level": Field(0, ge=0, le=MAX_RESNET_LEVEL),
    "deepcache_cache_enable_step_percentage": Field(0.4, ge=0.0, le=1.0),
    "deepcache_full_run_step_rate": Field(5, ge=0, le=MAX_FULL_RUN_STEP_RATE),
    "deepcache_cache_enable_step_percentage_hr": Field(0.0, ge=0.0, le=1.0),
}
OPTION_ANNOTATIONS: dict[str, Any] = {
    "face_restoration_model": Literal["CodeFormer", "GFPGAN"],
    "deepcache_enable_pass": Literal["disable", "second pass", "both passes"],
}
_OPTION_PYTHON_TYPES: dict[type, Any] = {bool: bool, int: int, float: float, str: str, list: list[Any], dict: dict[str, Any]}


def _option_field(key: str) -> tuple[Any, Any]:
    annotation = OPTION_ANNOTATIONS.get(key, _OPTION_PYTHON_TYPES[a1111_options.OPTION_TYPES[key]])
    if key in a1111_options.NULLABLE:
        annotation = annotation | None
    return annotation, OPTION_FIELDS.get(key, Field(a1111_options.A1111_OPTIONS[key]))


class OptionsBase(BaseModel):
    """The member's own options: every key of A1111 1.10's options object, with A1111's defaults
    under what they set (`a1111/options.py`). A write may send any of them, of its type; an
    unknown key is refused (422) by name."""

    model_config = ConfigDict(extra="forbid")


Options = create_model(  # one field per option, generated from the table
    "Options", __base__=OptionsBase, **{key: _option_field(key) for key in a1111_options.A1111_OPTIONS}
)


class SamplerItem(Response):
    name: str
    aliases: list[str]
    options: dict[str, str]


class SchedulerItem(Response):
    name: str
    label: str
    aliases: list[str] | None
    default_rho: float
    need_inner_model: bool | None


class UpscalerItem(Response):
    name: str
    model_name: str | None
    model_path: str | None
    model_url: str | None
    scale: float | None


class LatentUpscalerModeItem(Response):
    name: str


class SDModelItem(Response):
    title: str
    model_name: str
    hash: str | None
    sha256: str | None
    filename: str = Field(description="`<scope>/<file>`: user, tenant or public; never a server path.")
    config: str | None


class SDVaeItem(Response):
    model_name: str
    filename: str


class LoraItem(Response):
    name: str
    alias: str
    path: str
    metadata: dict[str, Any]


class HypernetworkItem(Response):
    name: str
    path: str | None


class EmbeddingItem(Response):
    step: int | None
    sd_checkpoint: str | None
    sd_checkpoint_name: str | None
    shape: int | None
    vectors: int | None


class EmbeddingsResponse(Response):
    loaded: dict[str, EmbeddingItem]
    skipped: dict[str, EmbeddingItem]


class FaceRestorerItem(Response):
    name: str
    cmd_dir: str | None


class RealesrganItem(Response):
    name: str
    path: str | None
    scale: int | None


class PromptStyleItem(Response):
    name: str
    prompt: str
    negative_prompt: str


class ScriptArg(Response):
    label: str | None = None
    value: Any = None
    minimum: Any = None
    maximum: Any = None
    step: Any = None
    choices: list[str] | None = None


class ScriptInfo(Response):
    name: str | None
    is_alwayson: bool | None
    is_img2img: bool | None
    args: list[ScriptArg]


class ExtensionItem(Response):
    name: str
    remote: str
    branch: str
    commit_hash: str
    version: str
    commit_date: int | str
    enabled: bool


class ScriptsList(Response):
    txt2img: list[str]
    img2img: list[str]


class Flags(Response):
    """The harmless subset of A1111's command-line flags (A1111 leaks every one, secrets included)."""


class MemoryResponse(Response):
    ram: dict[str, Any]
    cuda: dict[str, Any]


class Empty(Response):
    """`{}`."""


# --- /controlnet --------------------------------------------------------------------------------


class ControlNetModelList(Response):
    model_list: list[str]


class ControlNetModuleList(Response):
    module_list: list[str]
    module_detail: dict[str, Any] | None = None


class ControlNetVersion(Response):
    version: int


# --- errors -----------------------------------------------------------------------------------


class HTTPError(Response):
    """`/sdapi/v1` and `/controlnet` errors, in A1111's shape; `detail` says what to fix."""

    error: str = Field(description="The kind of error, e.g. RequestValidationError, NotFound.")
    detail: str
    body: str = Field(description="The request field at fault, when one is.")
    errors: str


class NativeError(Response):
    """`/api/v1` errors: `error` says what to fix; `field` names the request field at fault."""

    error: str
    field: str | None = None


# --- /api/v1 ----------------------------------------------------------------------------------


class UploadStart(Request):
    """`POST /api/v1/uploads`: what will be uploaded, and where (`frontend/uploads_api.py`)."""

    area: Literal["home", "team", "public"] = Field(description="home: your working directory; team: your team's "
                                                    "folder (its admins); public: the public model folders (operators).")
    path: str = Field(description="The file's path inside the area, e.g. models/Stable-diffusion/mine.safetensors; "
                                  "missing folders are created. A name that exists is refused (409).")
    size: int = Field(ge=0, description="The file's size in bytes (at most ATELIER_UPLOAD_MAX_BYTES).")
    sha256: str = Field(pattern="^[0-9a-fA-F]{64}$", description="The file's SHA-256: checked before it appears.")


class Upload(Response):
    """An upload session: send chunks from `offset` until it is `complete`."""

    id: str
    area: str
    path: str
    size: int
    sha256: str
    offset: int = Field(description="Bytes received and stored; the next chunk starts here.")
    chunk_size: int = Field(description="The largest chunk a PUT may send (ATELIER_UPLOAD_CHUNK_BYTES).")
    state: Literal["open", "verifying", "complete", "failed", "aborted"]
    message: str = Field(description="Why it failed or was aborted; empty otherwise.")



class NativeTxt2ImgJob(StableDiffusionTxt2ImgProcessingAPI):
    """A txt2img job: A1111's txt2img fields."""

    kind: Literal["txt2img"] | None = "txt2img"


class NativeImg2ImgJob(StableDiffusionImg2ImgProcessingAPI):
    """An img2img job: A1111's img2img fields (images as base64 or data URIs; no URLs here)."""

    kind: Literal["img2img"]


class NativeExtrasJob(ExtrasBaseRequest):
    """An Extras job (upscale, restore faces): `image`, or `imageList` for several."""

    kind: Literal["extras"]
    image: Base64Image | None = None
    imageList: list[FileData] | None = None


XyzAxisType = Literal[
    "nothing", "seed", "steps", "cfg_scale", "sampler", "checkpoint", "vae", "prompt_sr", "lora_weight", "subseed",
    "subseed_strength", "hr_steps", "denoising", "clip_skip", "scheduler", "token_merging_ratio", "token_merging_ratio_hr",
    "deepcache_enable_pass", "deepcache_cache_resnet_level", "deepcache_cache_enable_step_percentage",
    "deepcache_full_run_step_rate", "deepcache_cache_enable_step_percentage_hr",
]


class XyzAxis(Request):
    """One axis of an X/Y/Z plot (`a1111/xyz.py`); A1111's labels (`CFG Scale`, `Prompt S/R`) work too."""

    type: XyzAxisType | str = Field(description="The axis type: " + ", ".join(xyz.AXIS_TYPE_IDS) + ".")
    values: str | list[str | int | float] | None = Field(
        None, description="A1111's syntax: comma list (CSV quotes allowed), ranges 1-5, 1-5 (+2), 10-1 (-3), 1-10 [5] "
        "(floats too); Prompt S/R: the first value is searched for and each value replaces it. Or a JSON list.",
    )
    lora: str | None = Field(None, description="LoRA weight only: the LoRA whose tags change (default: every <lora:…>).")


class XyzAxes(Request):
    """The plot's axes: x, and optionally y and z (no other keys)."""

    model_config = ConfigDict(extra="forbid")

    x: XyzAxis | None = None
    y: XyzAxis | None = None
    z: XyzAxis | None = None


class NativeXyzPlot(NativeTxt2ImgJob):
    """An X/Y/Z plot: a txt2img request and its axes; one job per cell (at most ATELIER_MAX_XYZ_CELLS)."""

    xyz: XyzAxes


class JobGroupCreated(Response):
    id: str
    cells: int
    status: Literal["queued"]


class JobGroupCell(Response):
    type: Literal["job"]
    id: str
    index: int = Field(description="Its place in A1111's order: x fastest, then y, then z.")
    labels: list[str] = Field(description="The x, y and z labels of the cell.")
    kind: str
    status: Literal["queued", "dispatched", "running", "succeeded", "failed", "cancelled"]
    progress: float
    step: int
    total_steps: int
    error: str | None
    images: list[str]
    censored: list[int]
    seeds: list[int]
    texts: list[str] | None = None


class JobGroupCounts(Response):
    total: int
    done: int
    queued: int
    dispatched: int
    running: int
    succeeded: int
    failed: int
    cancelled: int


class JobGroupAxis(Response):
    type: str
    values: list[Any]
    labels: list[str]


class JobGroup(Response):
    type: Literal["job_group"]
    id: str
    kind: Literal["xyz"]
    status: Literal["queued", "running", "finished"]
    cells: JobGroupCounts
    axes: dict[str, JobGroupAxis]
    jobs: list[JobGroupCell]
    grid: str | None = Field(description="The grid PNG's URL once every cell has ended (null if no cell has an image).")
    created_at: str
    finished_at: str | None


class JobCreated(Response):
    id: str
    status: str


class Job(Response):
    type: Literal["job"]
    id: str
    kind: str
    status: Literal["queued", "dispatched", "running", "succeeded", "failed", "cancelled"]
    progress: float
    step: int
    total_steps: int
    error: str | None
    images: list[str] = Field(description="URLs of the images (/api/v1/jobs/<id>/images/<n>).")
    censored: list[int]
    attempts: int = Field(description="Attempts a worker started (a dispatch never started is not one).")
    checkpoint: str
    seeds: list[int]
    infotexts: list[str]
    params: dict[str, Any]
    control_maps: list[str]
    preview: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    gpu_seconds: float
    worker: str | None = Field(None, description="Operators only.")
    batch_id: str | None = Field(None, description="Operators only.")
    attempt: int | None = Field(None, description="Operators only: the number of the latest dispatch, unique per job.")
    texts: list[str] | None = Field(
        None, description="Prompt expansions (kind promptgen): the prompts, in order; interrogate jobs: the caption.")


class PromptgenJob(Job):
    """The expansion's job; `poll` while it is not finished (201 without waiting, 202 past the wait)."""

    poll: str | None = Field(None, description="Where to poll the job: /api/v1/jobs/<id>.")


class PromptgenModelEntry(Response):
    name: str
    title: str
    hash: str
    sha256: str
    scope: Literal["user", "tenant", "public"]
    model_type: str


class PromptgenModelList(Response):
    models: list[PromptgenModelEntry]


class PromptgenRequest(Request):
    """Expand a short prompt with a prompt-generation model (PAI's BeautifulPrompt); `a1111/promptgen.py`."""

    prompt: str = Field(min_length=1, max_length=pg.MAX_PROMPT_CHARS, description="The short prompt, e.g. 'a cat'.")
    model: str = Field(min_length=1, max_length=pg.MAX_MODEL_NAME_CHARS,
                       description="A name, title or hash from GET /api/v1/promptgen/models.")
    temperature: float | None = _float(1.0, pg.MIN_TEMPERATURE, pg.MAX_TEMPERATURE)
    top_k: int | None = _int(12, pg.MIN_TOP_K, pg.MAX_TOP_K, doc="0: off.")
    top_p: float | None = _float(1.0, pg.MIN_TOP_P, pg.MAX_TOP_P, doc="1: off.")
    repetition_penalty: float | None = _float(1.0, pg.MIN_REPETITION_PENALTY, pg.MAX_REPETITION_PENALTY, doc="1: off.")
    max_length: int | None = _int(150, pg.MIN_MAX_LENGTH, pg.MAX_MAX_LENGTH, doc="New tokens per prompt.")
    num_results: int | None = _int(4, pg.MIN_RESULTS, pg.MAX_RESULTS, doc="Prompts to generate.")
    seed: int | None = Field(-1, ge=-1, le=pg.MAX_SEED, description="-1: a random seed, drawn at submit and kept.")
    wait: bool | None = Field(True, description="Wait for the texts (up to ATELIER_PROMPTGEN_WAIT_SECONDS).")


class QueueInfo(Response):
    """Why a queued job waits (`inference/waiting.py`)."""

    reason: Literal["no_worker", "user_limit", "tenant_limit", "in_line"]
    position: int | None = Field(description="1: next in line; null when it waits for something else than its turn.")
    running: int
    limit: int
    message: str


class JobDetail(Job):
    queue: QueueInfo | None = Field(description="While queued: why it waits and its place in line; else null.")


class JobList(Response):
    jobs: list[Job]


class ModelEntry(Response):
    title: str
    model_name: str
    hash: str | None
    sha256: str | None
    scope: Literal["user", "tenant", "public"]
    format: Literal["safetensors", "diffusers-folder", "pickle"] = Field(description="How the weights are stored.")
    size: int = Field(description="Bytes on disk.")
    architecture: str = Field(
        description="What the file's tensor names and shapes say it is (its header only): sd1, sd2, sdxl, "
                    "sdxl-refiner for checkpoints; lora, vae, controlnet, upscaler, embedding or unknown otherwise."
    )
    architecture_title: str = Field(description="The family as shown to people: 'SD 1.x', 'SD 2.x', 'SDXL', …")


class ModelList(Response):
    models: list[ModelEntry]


class UsageRecord(Response):
    job: str | None = Field(description="The job's id; null for an adjustment.")
    kind: str = Field(description="The job's kind, or 'adjustment'.")
    gpu_seconds: float
    images: int
    texts: int = Field(description="Prompts a prompt expansion generated.")
    status: str
    created_at: str
    ended_at: str = Field(description="The month a record counts in is its end's, in the tenant's time zone.")


class Usage(Response):
    gpu_seconds: float
    images: int
    texts: int
    records: list[UsageRecord]


class WorkerItem(Response):
    name: str
    state: str
    host: str
    pid: int | None
    device: str
    last_heartbeat: str
    loaded_models: list[Any]
    cached_models: list[Any]
    jobs_done: int


class WorkerList(Response):
    workers: list[WorkerItem]


class UsageExportRecord(Response):
    """One usage record in an export (`tenants/exports.py` RECORD_COLUMNS); times in the tenant's zone."""

    record_id: int
    job_id: str = Field(description="Empty for an adjustment.")
    tenant: str
    user: str
    service: str
    kind: str
    checkpoint: str
    status: str
    images: int
    gpu_seconds: float
    pixel_steps: int
    queue_wait_seconds: float
    started_at: str
    ended_at: str
    amount: str = Field(description="At the record's own price, in the currency's minor unit; empty without a plan.")
    currency: str
    reason: str


class UsageExport(Response):
    month: str | None
    to: str | None
    tenant: str | None
    user: str | None
    records: list[UsageExportRecord]


class StatementMember(Response):
    user: str
    jobs: int
    images: int
    gpu_seconds: float
    amount: str


class StatementAdjustment(Response):
    id: int
    user: str
    gpu_seconds: float
    images: int
    reason: str
    created_by: str
    ended_at: str
    amount: str


class UsageStatement(Response):
    tenant: str
    month: str
    time_zone: str
    period_start: str
    period_end: str
    plan: str | None
    currency: str | None
    billing_mode: str | None
    members: list[StatementMember]
    adjustments: list[StatementAdjustment]
    monthly_fee: str
    allowance_credit: str
    total: str
    note: str


# --- /api/v1/files (the FileBrowser: frontend/files_api.py) -----------------------------------

class FileEntry(Response):
    name: str
    type: Literal["file", "folder"]
    size: int | None = Field(description="Bytes; null for a folder.")
    modified: str = Field(description="ISO 8601, UTC.")


class FileUsage(Response):
    used_bytes: int = Field(description="Bytes in your working directory and your open uploads.")
    limit_bytes: int | None = Field(description="Your storage limit (`user_storage_bytes`); null: none.")
    tenant_used_bytes: int | None = Field(description="Your team's, where the team has a limit; else null.")
    tenant_limit_bytes: int | None = Field(description="`tenant_storage_bytes` of the team's plan; null: none.")


class FileListing(Response):
    area: Literal["home", "team", "public"]
    path: str = Field(description="Inside the area; empty for its root (the public area: starts with the model folder).")
    writable: bool = Field(description="Whether you may create, rename, move and delete here.")
    entries: list[FileEntry] = Field(description="Folders first, then files; symbolic links are not listed.")
    usage: FileUsage | None = None


class FileAction(Request):
    action: Literal["mkdir", "move"] = Field(description="mkdir: create the folder the URL names; move: rename or "
                                                         "move what the URL names to `to`.")
    to: str | None = Field(None, max_length=1024, description="move: the new path, in the same area.")
    to_area: Literal["home", "team", "public"] | None = Field(
        None, description="Optional; anything but the URL's own area is refused (moves stay within one area).")


class FileActionResult(Response):
    area: str
    path: str = Field(description="The folder created, or where the moved file or folder is now.")
    entry: FileEntry | None = None
    moved_from: str | None = None


class FileDeleted(Response):
    area: str
    path: str
    deleted: bool
