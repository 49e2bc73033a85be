"""The frozen specs the worker runtime takes: plain data, filled by the batch runner (no Django).

Everything `WorkerRuntime` needs to run a batch arrives as one of these: `GenerationSpec`
(txt2img; img2img and inpainting with `Img2ImgInputs`; the hires fix with `HiresSpec`; SD upscale
with `SdUpscaleSpec`; its
LoRAs as `LoraSpec`s and "Restore faces" as `FaceRestorationSpec`), `PostprocessSpec`
(A1111's Extras on one image), `PromptgenSpec` (prompt expansions on a language model) or
`ClipInterrogateSpec` / `TaggerSpec` (A1111's interrogate of one image). Model files are named by path and identified by content hash,
so the runtime's caches can key on the hash. This module itself needs no torch (importing
`a1111.controlnet` still loads it through that package's `__init__`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from a1111.controlnet import ControlUnit
from a1111.deepcache import DeepCachePass
from a1111.samplers import SamplerParameters
from runtime.img2img import InpaintSettings

# ---------------------------------------------------------------------------------------------
# Networks and face restoration (parts of a generation batch's key)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA to apply to a batch: its file, its identity and its weights per component."""

    path: str
    sha256: str  # identity of the file's content; the adapter name is derived from it
    te_weight: float = 1.0
    unet_weight: float = 1.0

    def weight_for(self, component: str) -> float:
        """The weight for a pipeline component: "unet" or a text encoder (runtime/networks/lora.py)."""
        return self.unet_weight if component == "unet" else self.te_weight


@dataclass(frozen=True)
class FaceRestorationSpec:
    """One face restoration setting for a whole batch (part of the batch key)."""

    restorer: str  # "CodeFormer" or "GFPGAN"
    model_path: str
    model_sha256: str
    detector_path: str
    detector_sha256: str
    fidelity: float = 0.5  # CodeFormer's weight (A1111's code_former_weight); GFPGAN ignores it


# ---------------------------------------------------------------------------------------------
# Generation: txt2img, img2img/inpainting, the hires fix
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Img2ImgInputs:
    """What turns a batch into img2img: one init image (and mask) per image, and how to prepare them.

    Images and masks arrive as the client sent them; `runtime/img2img.py` resizes,
    crops and blurs them as A1111 does, and pastes the results back over the originals.
    """

    init_images: list[Image.Image]  # one per image of the batch
    masks: list[Image.Image | None]  # one per image; None: plain img2img for that image
    denoising_strength: float
    resize_mode: int = 0
    inpaint: InpaintSettings = field(default_factory=InpaintSettings)
    noise_multiplier: float = 1.0  # A1111's initial_noise_multiplier: the starting noise scaled by it
    # A1111's `latent_mask`, one per image (empty: none): with a mask, the latent blend's and the
    # latent fills' mask instead of it, used as sent (resized to the latent, not cropped or blurred)
    latent_masks: list[Image.Image | None] = field(default_factory=list)


@dataclass(frozen=True)
class RefinerSpec:
    """A1111's refiner: sampling switches to this checkpoint once `switch_at` of a pass's steps are
    done (the base denoises to `denoising_end`, the refiner from `denoising_start` on the same SDXL
    latents). It refines the only pass, or with the hires fix the passes `hires_passes` names (A1111's
    `hires_fix_refiner_pass`, by default the second)."""

    path: str
    sha256: str
    switch_at: float  # 0: the refiner runs every step; 1 never reaches here (no refiner pass)
    hires_passes: str = "second pass"  # with the hires fix: "first pass", "second pass" or "both passes"

    def refines(self, *, hires_pass: bool, hires: bool) -> bool:
        """Whether the refiner takes over this pass (the only one, or a hires fix's first or second)."""
        if not hires:
            return True
        return self.hires_passes == "both passes" or (self.hires_passes == "second pass") == hires_pass


@dataclass(frozen=True)
class HiresSpec:
    """txt2img's hires fix: upscale the first pass, then an img2img pass at the target size."""

    width: int
    height: int
    upscaler: str  # "Latent…" modes resize latents; "None"/"Lanczos"/"Nearest" resize the image; else a model
    steps: int  # the second pass's steps, all run (A1111's hr_second_pass_steps or steps; `img2img_steps`)
    denoising_strength: float
    upscaler_path: str = ""  # an ESRGAN-family model file (runtime/upscalers.py)
    upscaler_sha256: str = ""
    # A1111 1.10's second-pass overrides, each empty for the first pass's own: a prompt and negative
    # prompt per image (in the spec's `seeds` order, extra-network tags stripped), the sampler, and a
    # checkpoint of the same latent space (with the batch's LoRAs and hypernetworks applied to it too)
    prompts: list[str] = field(default_factory=list)
    negative_prompts: list[str] = field(default_factory=list)
    scheduler_class: str = ""
    scheduler_kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint_path: str = ""
    checkpoint_sha256: str = ""
    token_merging_ratio: float = 0.0  # this pass's (A1111's token_merging_ratio_hr, else token_merging_ratio); 0: off
    deepcache: DeepCachePass | None = None  # this pass's step caching (`runtime/deepcache.py`); None: off


@dataclass(frozen=True)
class SdUpscaleSpec:
    """img2img's "SD upscale" script (`a1111/sd_upscale.py`): each image of the spec is its init image
    upscaled by `scale_factor`, cut into tiles of the spec's width x height overlapping by `overlap`,
    each tile img2img'd (`batch_size` per pipeline call, A1111's tile seeds) and the tiles blended back."""

    scale_factor: float
    overlap: int
    upscaler: str  # "None" (no upscale, as A1111), "Lanczos", "Nearest", or a model's name
    batch_size: int = 1
    upscaler_path: str = ""  # an ESRGAN-family model file (runtime/upscalers.py)
    upscaler_sha256: str = ""


@dataclass(frozen=True)
class GenerationSpec:
    """One pipeline batch: shared settings, and one prompt, negative prompt and seed per image.

    The images may come from several jobs (cross-user batching): every image has its own
    generator (and, for img2img, its own init image), so an image depends on its own seed and
    prompt, not on its neighbours.
    """

    checkpoint_path: str
    checkpoint_sha256: str
    prompts: list[str]
    negative_prompts: list[str]
    seeds: list[int]
    steps: int
    cfg_scale: float
    width: int
    height: int
    max_batch: int  # images per pipeline call; more images run as successive chunks
    scheduler_class: str
    scheduler_kwargs: dict[str, Any] = field(default_factory=dict)
    vae_path: str = ""  # a VAE file instead of the checkpoint's own
    vae_sha256: str = ""
    img2img: Img2ImgInputs | None = None
    hires: HiresSpec | None = None
    sd_upscale: SdUpscaleSpec | None = None  # with `img2img`: each image is an SD upscale of its init image
    loras: list[LoraSpec] = field(default_factory=list)
    hypernetworks: list[tuple[str, str, float]] = field(default_factory=list)  # (path, sha256, strength), in order
    embeddings: list[tuple[str, str, str]] = field(default_factory=list)  # (name, path, sha256)
    clip_skip: int = 1  # A1111's numbering: 1 is the text encoder's last layer
    subseeds: list[int] = field(default_factory=list)  # one per image; used when subseed_strength > 0
    subseed_strength: float = 0.0
    seed_resize_from: tuple[int, int] | None = None  # A1111's "Resize seed from" (width, height); None: off
    tiling: bool = False  # A1111's "Tiling": seamlessly repeating images
    # A1111's token merging in the (first) pass, `runtime/token_merging.py`; 0: off. Shared by the
    # whole batch: one pipeline call merges every row's tokens alike (part of the batch key)
    token_merging_ratio: float = 0.0
    # DeepCache step caching in the (first) pass, `runtime/deepcache.py`; None: off. Shared by the
    # whole batch like token merging (part of the batch key)
    deepcache: DeepCachePass | None = None
    # A1111's eta_noise_seed_delta, one per image (empty: none): after the starting noise, the
    # sampler's own noise (ancestral and SDE samplers) comes from seed + delta
    noise_seed_deltas: list[int] = field(default_factory=list)
    # eta, sigma churn and noise, NGMS (`runtime/sampler_parameters.py`): shared by every image
    sampler_parameters: SamplerParameters = field(default_factory=SamplerParameters)
    controlnet: list[ControlUnit] = field(default_factory=list)  # ControlNet units, shared by every image
    face_restoration: FaceRestorationSpec | None = None  # "Restore faces", after decoding
    refiner: RefinerSpec | None = None  # shared by every image (its sha256 is part of the model key)
    # Positions (in `seeds` order) that get live previews; empty: each chunk's first image. A batch
    # of several jobs names each job's own first image, so no job is shown another job's picture.
    preview_images: tuple[int, ...] = ()
    # The control plane's key for loras + hypernetworks + embeddings (Job.network_key), carried
    # through only to be reported back (`WorkerRuntime.held_network_key`); never recomputed here.
    network_key: str = ""

    # Each chunk's first image, when the caller cut the batch itself (a job's batch-count iterations
    # run in calls of their own, `inference/runner/chunks.py`); empty: chunks of `max_batch`.
    chunk_starts: tuple[int, ...] = ()

    def chunks(self) -> list[range]:
        if self.chunk_starts:
            ends = (*self.chunk_starts[1:], len(self.seeds))
            return [range(start, end) for start, end in zip(self.chunk_starts, ends, strict=True)]
        return [range(start, min(start + self.max_batch, len(self.seeds))) for start in range(0, len(self.seeds), self.max_batch)]


# ---------------------------------------------------------------------------------------------
# Extras: postprocessing one existing image (runtime/extras.py)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resizer:
    """`Lanczos`, `Nearest`, or a model upscaler file (name as the request gave it, path, sha256)."""

    name: str
    path: str = ""
    sha256: str = ""


@dataclass(frozen=True)
class UpscaleStep:
    factor: float  # what a built-in resizer scales by first (A1111's `scale`)
    width: int  # the exact upscaled size
    height: int
    upscaler: Resizer
    second: Resizer | None = None  # blended over the first by `second_visibility`
    second_visibility: float = 0.0
    crop: tuple[int, int] | None = None  # center-crop to (width, height) afterwards


@dataclass(frozen=True)
class RestoreStep:
    restorer: str  # "GFPGAN" or "CodeFormer"
    model_path: str
    model_sha256: str
    visibility: float  # 0 < v ≤ 1: how much of the restored image is kept
    fidelity: float = 0.5  # CodeFormer's weight


@dataclass(frozen=True)
class PostprocessSpec:
    """What happens to one image (the sizes are that image's own)."""

    upscale: UpscaleStep | None = None
    restore: tuple[RestoreStep, ...] = ()
    detector_path: str = ""
    detector_sha256: str = ""


@dataclass(frozen=True)
class ExpansionRequest:
    """One prompt expansion (one job) in a promptgen batch: its own sampling settings and seed."""

    prompt: str  # the model's input, already formatted (`a1111.promptgen.model_input`)
    num_results: int = 4
    max_new_tokens: int = 150
    temperature: float = 1.0
    top_k: int = 12  # 0: off
    top_p: float = 1.0  # 1: off
    repetition_penalty: float = 1.0  # 1: off
    seed: int = 0  # result i samples with its own generator seeded `seed + i`


@dataclass(frozen=True)
class PromptgenSpec:
    """A batch of expansions on one causal language model folder (`runtime/promptgen.py`)."""

    model_path: str  # the transformers folder on this machine
    model_sha256: str  # its weights' hash: the cache key
    requests: tuple[ExpansionRequest, ...]
    allow_pickled: bool = False  # may read pytorch_model.bin (weights-only unpickling)


# ---------------------------------------------------------------------------------------------
# Interrogate (A1111's /sdapi/v1/interrogate: runtime/interrogate.py)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelFolder:
    """A transformers model folder on this machine and its weights' hash (the cache key)."""

    path: str
    sha256: str


@dataclass(frozen=True)
class PhraseCategory:
    """One CLIP category file's phrases (already cut to the dict limit) and how many to keep."""

    name: str
    sha256: str  # the file's hash: with the CLIP model's, the key of its cached text features
    phrases: tuple[str, ...]
    topn: int = 1


@dataclass(frozen=True)
class ClipInterrogateSpec:
    """A1111's clip interrogator on one image: a BLIP caption, then each category ranked by CLIP."""

    blip: ModelFolder
    clip: ModelFolder
    categories: tuple[PhraseCategory, ...]
    num_beams: int = 1
    min_length: int = 24
    max_length: int = 48


@dataclass(frozen=True)
class TaggerSpec:
    """A multi-label image tagger (deepdanbooru's role) on one image."""

    model: ModelFolder
