"""The GPU worker runtime: a cache of loaded pipelines and txt2img on diffusers (no Django).

One `WorkerRuntime` is owned by each worker process (see `inference/tasks.py`). It takes
plain data (`GenerationSpec`: txt2img, or img2img and inpainting when it carries init images;
`PostprocessSpec`: A1111's Extras on an existing image, with no pipeline) and returns PIL images, calling `on_step` after every denoising
step; `on_step` raising stops generation there (that is how cancel works).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import diffusers
import torch
from PIL import Image

from inference.worker import hypernetwork
from inference.worker.acceleration import Acceleration, apply_to_pipeline, configure_vae
from inference.worker.checkpoints import load_pipeline
from inference.worker.conditioning import (
    Embedding,
    encode_pair,
    encode_pair_xl,
    load_embedding_file,
)
from inference.worker.controlnet import (
    ControlNetCache,
    ControlUnit,
    controlnet_pipeline,
)
from inference.worker.extras import PostprocessSpec, RestoreStep, postprocess
from inference.worker.faces.detection import RetinaFace, load_face_detector
from inference.worker.faces.restoration import (
    FaceNet,
    FaceRestorationSpec,
    load_face_net,
    restore_faces,
)
from inference.worker.hypernetwork import Hypernetwork, load_hypernetwork
from inference.worker.img2img import InpaintSettings, PreparedImage, finish, prepare
from inference.worker.lora import LoraSet, LoraSpec
from inference.worker.previews import latent_preview
from inference.worker.safety import SafetyChecker, censor_image
from inference.worker.tiling import seamless
from inference.worker.upscalers import RRDBNet, load_upscaler, upscale
from inference.worker.vae import load_vae_file

T = TypeVar("T")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Img2ImgInputs:
    """What turns a batch into img2img: one init image (and mask) per image, and how to prepare them.

    Images and masks arrive as the client sent them; `inference/worker/img2img.py` resizes,
    crops and blurs them as A1111 does, and pastes the results back over the originals.
    """

    init_images: list[Image.Image]  # one per image of the batch
    masks: list[Image.Image | None]  # one per image; None: plain img2img for that image
    denoising_strength: float
    resize_mode: int = 0
    inpaint: InpaintSettings = field(default_factory=InpaintSettings)


@dataclass(frozen=True)
class HiresSpec:
    """txt2img's hires fix: upscale the first pass, then an img2img pass at the target size."""

    width: int
    height: int
    upscaler: str  # "Latent…" modes resize latents; "None"/"Lanczos"/"Nearest" resize the image; else a model
    steps: int  # the second pass's steps before `denoising_strength` (A1111's hr_second_pass_steps or steps)
    denoising_strength: float
    upscaler_path: str = ""  # an ESRGAN-family model file (inference/worker/upscalers.py)
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
    loras: list[LoraSpec] = field(default_factory=list)
    hypernetworks: list[tuple[str, str, float]] = field(default_factory=list)  # (path, sha256, strength), in order
    embeddings: list[tuple[str, str, str]] = field(default_factory=list)  # (name, path, sha256)
    clip_skip: int = 1  # A1111's numbering: 1 is the text encoder's last layer
    subseeds: list[int] = field(default_factory=list)  # one per image; used when subseed_strength > 0
    subseed_strength: float = 0.0
    tiling: bool = False  # A1111's "Tiling": seamlessly repeating images
    controlnet: list[ControlUnit] = field(default_factory=list)  # ControlNet units, shared by every image
    face_restoration: FaceRestorationSpec | None = None  # "Restore faces", after decoding
    # Positions (in `seeds` order) that get live previews; empty: each chunk's first image. A batch
    # of several jobs names each job's own first image, so no job is shown another job's picture.
    preview_images: tuple[int, ...] = ()
    # The control plane's key for loras + hypernetworks + embeddings (Job.network_key), carried
    # through only to be reported back (`WorkerRuntime.held_network_key`); never recomputed here.
    network_key: str = ""

    def chunks(self) -> list[range]:
        return [range(start, min(start + self.max_batch, len(self.seeds))) for start in range(0, len(self.seeds), self.max_batch)]


class SkipChunk(Exception):
    """Raised by a step callback: abandon the current chunk (all its images were cancelled)."""


# Called with (chunk index, steps done in that chunk): 0 before the chunk starts, then after each step.
StepCallback = Callable[[int, int], None]
# Called with (chunk index, the image's position in `seeds` order, a cheap preview of that very
# image) every `preview_every` steps, once for each of the chunk's images in `preview_images`.
PreviewCallback = Callable[[int, int, Image.Image], None]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto`: float16 on a GPU, float32 on a CPU; or one of DTYPES by name (bfloat16 avoids fp16's
    overflow in some SDXL VAEs, at the same speed on recent GPUs)."""
    if name == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype must be auto or one of {', '.join(DTYPES)}, not {name!r}")
    return DTYPES[name]


class PipelineCache:
    """Least-recently-used pipelines in two tiers, keyed by the checkpoint's content hash.

    Up to `capacity` pipelines live on the device, ready to run. On a GPU, one pushed out of
    the device moves to host RAM (up to `host_capacity` of them, PAI's `--sd-dynamic-cache`)
    instead of being dropped, because moving it back takes a fraction of a load from disk; the
    least recently used leave host RAM first, and any leave while less than `min_ram_reserved`
    bytes of the machine's memory would stay available (PAI's `--min-ram-reserved`). What each
    tier holds is reported to the scheduler (`loaded()`, `cached()`), which prefers a worker
    holding a job's checkpoint. On a CPU device RAM is the device: `WorkerRuntime` then asks
    for no host tier.
    """

    def __init__(
        self,
        *,
        capacity: int,
        device: torch.device,
        dtype: torch.dtype,
        config_cache_dir: Path,
        acceleration: Acceleration | None = None,
        host_capacity: int = 0,
        min_ram_reserved: int = 0,
    ) -> None:
        self.capacity = max(1, capacity)
        self.host_capacity = max(0, host_capacity)
        self.min_ram_reserved = min_ram_reserved
        self.device, self.dtype, self.config_cache_dir = device, dtype, config_cache_dir
        self.acceleration = acceleration or Acceleration()
        self._pipelines: OrderedDict[str, diffusers.StableDiffusionPipeline] = OrderedDict()  # on the device
        self._host: OrderedDict[str, diffusers.StableDiffusionPipeline] = OrderedDict()  # in host RAM
        self._loras: dict[str, LoraSet] = {}  # the LoRA adapters loaded into each cached pipeline
        self.loads = 0  # from disk
        self.restores = 0  # from host RAM

    def get(self, path: str, sha256: str) -> diffusers.StableDiffusionPipeline:
        pipeline = self._pipelines.get(sha256)
        if pipeline is not None:
            self._pipelines.move_to_end(sha256)
            return pipeline
        started = time.perf_counter()
        pipeline = self._host.pop(sha256, None)
        if pipeline is not None:
            pipeline.to(self.device)
            self.restores += 1
            logger.info("moved %s from host RAM to %s in %.2fs", path, self.device, time.perf_counter() - started)
        else:
            self._make_room_in_ram()
            pipeline = load_pipeline(Path(path), cache_dir=self.config_cache_dir, device=str(self.device), dtype=self.dtype)
            pipeline.set_progress_bar_config(disable=True)
            applied = apply_to_pipeline(pipeline, self.acceleration, self.device)
            self.loads += 1
            logger.info("loaded %s in %.2fs (%s)", path, time.perf_counter() - started, applied)
        self._pipelines[sha256] = pipeline
        while len(self._pipelines) > self.capacity:
            self._evict_from_device()
        return pipeline

    def _evict_from_device(self) -> None:
        evicted, pipeline = self._pipelines.popitem(last=False)
        if self.host_capacity:
            pipeline.to("cpu")
            self._host[evicted] = pipeline
            while len(self._host) > self.host_capacity:
                self._drop_from_host()
            logger.info("moved %s from %s to host RAM", evicted, self.device)
        else:
            self._loras.pop(evicted, None)
            logger.info("evicted %s from the pipeline cache", evicted)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _drop_from_host(self) -> None:
        dropped, _ = self._host.popitem(last=False)
        self._loras.pop(dropped, None)
        logger.info("dropped %s from host RAM", dropped)

    def _make_room_in_ram(self) -> None:
        """Before a load from disk: leave host RAM until `min_ram_reserved` bytes would stay available."""
        while self._host and self.min_ram_reserved and (available_ram_bytes() or 0) < self.min_ram_reserved:
            self._drop_from_host()

    def loaded(self) -> list[str]:
        """Checkpoints on the device, least recently used first."""
        return list(self._pipelines)

    def cached(self) -> list[str]:
        """Checkpoints in host RAM, least recently used first."""
        return list(self._host)

    def loras_for(self, sha256: str) -> LoraSet:
        return self._loras.setdefault(sha256, LoraSet())

    def holds_loras(self, sha256: str, lora_sha256s: Iterable[str]) -> bool:
        """Whether checkpoint `sha256`'s cached pipeline still has all these LoRA adapters loaded."""
        loras = self._loras.get(sha256)
        return loras is not None and all(lora in loras for lora in lora_sha256s)


def available_ram_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux); None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class VaeCache:
    """Standalone VAE files loaded for a checkpoint, least recently used first out (they are small)."""

    def __init__(self, *, capacity: int = 4) -> None:
        self.capacity = capacity
        self._vaes: OrderedDict[tuple[str, str], diffusers.AutoencoderKL] = OrderedDict()

    def get(self, path: str, sha256: str, *, checkpoint_sha256: str, like: diffusers.AutoencoderKL) -> diffusers.AutoencoderKL:
        key = (sha256, checkpoint_sha256)  # converted to the shape and dtype of that checkpoint's VAE
        vae = self._vaes.get(key)
        if vae is None:
            vae = self._vaes[key] = load_vae_file(Path(path), like=like)
            while len(self._vaes) > self.capacity:
                self._vaes.popitem(last=False)
        self._vaes.move_to_end(key)
        return vae


PIPELINE_CLASSES = {  # SD1.x and SD2.x
    "txt2img": diffusers.StableDiffusionPipeline,
    "img2img": diffusers.StableDiffusionImg2ImgPipeline,
    "inpaint": diffusers.StableDiffusionInpaintPipeline,
}
XL_PIPELINE_CLASSES = {
    "txt2img": diffusers.StableDiffusionXLPipeline,
    "img2img": diffusers.StableDiffusionXLImg2ImgPipeline,
    "inpaint": diffusers.StableDiffusionXLInpaintPipeline,
}


def is_xl(pipeline: diffusers.DiffusionPipeline) -> bool:
    return getattr(pipeline, "text_encoder_2", None) is not None


class LruCache(Generic[T]):
    """A few loaded models by key, the least recently used dropped first past `capacity`."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, T] = OrderedDict()

    def get(self, key: str, load: Callable[[], T]) -> T:
        if key not in self._items:
            self._items[key] = load()
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        self._items.move_to_end(key)
        return self._items[key]

    def __contains__(self, key: object) -> bool:
        return key in self._items


class WorkerRuntime:
    def __init__(
        self,
        *,
        device: str = "auto",
        dtype: str = "auto",
        cache_size: int = 2,
        config_cache_dir: Path,
        acceleration: Acceleration | None = None,
        host_cache_size: int = 0,
        min_ram_reserved: int = 0,
        safety_checker_dir: Path | None = None,
        preview_every: int = 0,
    ) -> None:
        self.device = resolve_device(device)
        self.preview_every = preview_every  # steps between live previews; 0: none
        self.dtype = resolve_dtype(dtype, self.device)
        self.acceleration = acceleration or Acceleration()
        self.pipelines = PipelineCache(
            capacity=cache_size, device=self.device, dtype=self.dtype, config_cache_dir=config_cache_dir,
            acceleration=self.acceleration, min_ram_reserved=min_ram_reserved,
            host_capacity=host_cache_size if self.device.type != "cpu" else 0,
        )
        self.vaes = VaeCache()
        self.safety_checker_dir = safety_checker_dir  # None: the NSFW censor is off
        self._safety_checker: SafetyChecker | None = None
        self.controlnets = ControlNetCache(device=self.device, dtype=self.dtype)
        # small models, by content hash, least recently used first out
        self._hypernetworks: LruCache[Hypernetwork] = LruCache(8)
        self._upscalers: LruCache[RRDBNet] = LruCache(2)
        self._embeddings: LruCache[Embedding] = LruCache(64)
        self._face_nets: LruCache[FaceNet] = LruCache(2)
        self._face_detectors: LruCache[RetinaFace] = LruCache(1)
        self._last_networks: GenerationSpec | None = None  # the spec whose networks were applied last

    def describe_device(self) -> tuple[str, int | None]:
        if self.device.type == "cuda":
            props = torch.cuda.get_device_properties(self.device)
            return f"{self.device} ({props.name})", props.total_memory
        return str(self.device), None

    def _pipeline_for(self, spec: GenerationSpec, task: str) -> diffusers.DiffusionPipeline:
        cached = self.pipelines.get(spec.checkpoint_path, spec.checkpoint_sha256)
        components = dict(cached.components)
        if spec.vae_path:
            components["vae"] = self.vaes.get(
                spec.vae_path, spec.vae_sha256, checkpoint_sha256=spec.checkpoint_sha256, like=cached.vae
            )
        scheduler_cls = getattr(diffusers, spec.scheduler_class)
        components["scheduler"] = scheduler_cls.from_config(cached.scheduler.config, **spec.scheduler_kwargs)
        # A new pipeline object over the cached modules: the cache is never mutated per job.
        if is_xl(cached):
            pipeline = XL_PIPELINE_CLASSES[task](**components)
        else:
            pipeline = PIPELINE_CLASSES[task](**components, requires_safety_checker=False)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline

    def _hypernetwork(self, path: str, sha256: str) -> Hypernetwork:
        return self._hypernetworks.get(sha256, lambda: load_hypernetwork(Path(path), device=self.device))

    def _upscaler(self, path: str, sha256: str) -> RRDBNet:
        return self._upscalers.get(sha256, lambda: load_upscaler(Path(path), device=self.device, dtype=self.dtype))

    def _embedding(self, name: str, path: str, sha256: str) -> Embedding:
        loaded = self._embeddings.get(sha256, lambda: load_embedding_file(Path(path)))
        return dataclasses.replace(loaded, name=name) if loaded.name != name else loaded

    def _face_detector(self, path: str, sha256: str) -> RetinaFace:
        return self._face_detectors.get(
            sha256, lambda: load_face_detector(Path(path), device=self.device, dtype=self.dtype)
        )

    def _face_net(self, restorer: str, path: str, sha256: str) -> FaceNet:
        return self._face_nets.get(
            sha256, lambda: load_face_net(restorer, Path(path), device=self.device, dtype=self.dtype)
        )

    def restore_faces(self, images: list[Image.Image | None], spec: FaceRestorationSpec) -> list[Image.Image | None]:
        """Each image with its faces restored (A1111's "Restore faces"); None stays None."""
        detector = self._face_detector(spec.detector_path, spec.detector_sha256)
        net = self._face_net(spec.restorer, spec.model_path, spec.model_sha256)
        return [
            image if image is None else restore_faces(image, detector=detector, net=net, fidelity=spec.fidelity)[0]
            for image in images
        ]

    def postprocess(self, image: Image.Image, spec: PostprocessSpec) -> Image.Image:
        """A1111's Extras on one image (`inference/worker/extras.py`): no pipeline is loaded; the
        upscaler, restorer and detector models come from this runtime's caches."""
        def restore(picture: Image.Image, step: RestoreStep) -> Image.Image:
            detector = self._face_detector(spec.detector_path, spec.detector_sha256)
            net = self._face_net(step.restorer, step.model_path, step.model_sha256)
            return restore_faces(picture, detector=detector, net=net, fidelity=step.fidelity)[0]

        return postprocess(
            image, spec, load_upscaler=lambda resizer: self._upscaler(resizer.path, resizer.sha256), restore_faces=restore
        )

    def _conditioning(self, pipeline: diffusers.DiffusionPipeline, spec: GenerationSpec, chunk: range) -> dict[str, Any]:
        """A1111's conditioning for a chunk: (word:1.2) weights, BREAK, 75-token chunks, clip skip,
        embeddings (inference/worker/conditioning.py), as the pipeline's prompt_embeds (and, for
        SDXL, both encoders side by side and the pooled embeddings; SDXL ignores clip skip, as A1111).
        """
        embeddings = {name: self._embedding(name, path, sha) for name, path, sha in spec.embeddings}
        if is_xl(pipeline):
            return encode_pair_xl(
                [pipeline.tokenizer, pipeline.tokenizer_2], [pipeline.text_encoder, pipeline.text_encoder_2],
                [spec.prompts[i] for i in chunk], [spec.negative_prompts[i] for i in chunk], embeddings=embeddings,
                zero_empty_negative=bool(pipeline.config.get("force_zeros_for_empty_prompt", True)),
                device=pipeline._execution_device, dtype=pipeline.text_encoder_2.dtype,
            ).as_kwargs()
        layers = pipeline.text_encoder.config.num_hidden_layers
        positive, negative = encode_pair(
            pipeline.tokenizer, pipeline.text_encoder,
            [spec.prompts[i] for i in chunk], [spec.negative_prompts[i] for i in chunk],
            clip_skip=min(max(spec.clip_skip, 1), layers), embeddings=embeddings,
            device=pipeline._execution_device, dtype=pipeline.text_encoder.dtype,
        )
        return {"prompt_embeds": positive, "negative_prompt_embeds": negative}

    def generate(
        self, spec: GenerationSpec, on_step: StepCallback | None = None, on_preview: PreviewCallback | None = None
    ) -> list[Image.Image | None]:
        """Images in the order of `spec.seeds`; None for the images of a skipped chunk.

        With `on_preview` (and `preview_every` set), a cheap preview of each image named by
        `spec.preview_images` (default: each chunk's first image), made from that image's own
        latent, is handed over every `preview_every` steps (inference/worker/previews.py).

        The batch's LoRAs and hypernetworks are applied to the cached modules for this call
        only (every job of a batch shares them: they are part of the batch key).
        """
        hypernets = [(self._hypernetwork(path, sha), strength) for path, sha, strength in spec.hypernetworks]
        pipeline = self._pipeline_for(spec, "txt2img")  # loads the checkpoint; the task's pipeline comes next
        loras = self.pipelines.loras_for(spec.checkpoint_sha256)
        with (
            loras.applied(pipeline, spec.loras),
            hypernetwork.applied(pipeline.unet, hypernets),
            seamless(pipeline.unet, pipeline.vae, enabled=spec.tiling),
        ):
            images = self._generate(spec, on_step, on_preview)
        self._last_networks = spec
        return self.restore_faces(images, spec.face_restoration) if spec.face_restoration else images

    def held_network_key(self) -> str:
        """The network key of the last batch that ran, while all its networks are still loaded.

        A batch's LoRAs are active only inside `generate` (inference/worker/lora.py deactivates
        them on exit), but their adapters stay loaded in the checkpoint's cached pipeline, as do
        its hypernetworks and embeddings in their caches, so the next batch with the same set
        skips every file read. This reports that set, the scheduler's `active_networks`; "" once
        any of them (or the checkpoint's pipeline) has been evicted, or before any batch.
        """
        spec = self._last_networks
        if spec is None:
            return ""
        held = (
            self.pipelines.holds_loras(spec.checkpoint_sha256, (lora.sha256 for lora in spec.loras))
            and all(sha in self._hypernetworks for _, sha, _ in spec.hypernetworks)
            and all(sha in self._embeddings for _, _, sha in spec.embeddings)
        )
        return spec.network_key if held else ""

    def censor(self, images: list[Image.Image | None]) -> tuple[list[Image.Image | None], list[bool]]:
        """With the NSFW censor on: the images with flagged ones blurred, and which were flagged.

        Raises `SafetyCheckerMissing` when the censor is on and no checker model is installed.
        """
        if self.safety_checker_dir is None:
            return images, [False] * len(images)
        if self._safety_checker is None:
            self._safety_checker = SafetyChecker(self.safety_checker_dir, device=self.device, dtype=self.dtype)
        present = [image for image in images if image is not None]
        verdicts = iter(self._safety_checker.flagged(present))
        flags = [next(verdicts) if image is not None else False for image in images]
        return [censor_image(image) if flag else image for image, flag in zip(images, flags, strict=True)], flags

    def _preview(
        self, pipeline: Any, on_preview: PreviewCallback | None, spec: GenerationSpec, chunk_index: int, chunk: range,
        step: int, kwargs: dict,
    ) -> None:
        if on_preview is None or not self.preview_every or step % self.preview_every or "latents" not in kwargs:
            return
        latents = kwargs["latents"]  # [len(chunk), 4, h, w], in the chunk's image order
        wanted = [p for p in spec.preview_images if p in chunk] if spec.preview_images else [chunk.start]
        for position in wanted:
            index = position - chunk.start
            if index < latents.shape[0]:
                on_preview(chunk_index, position, latent_preview(latents, index=index, xl=is_xl(pipeline)))

    def _generate(
        self, spec: GenerationSpec, on_step: StepCallback | None, on_preview: PreviewCallback | None = None
    ) -> list[Image.Image | None]:
        img2img = spec.img2img
        prepared: list[PreparedImage] = []
        if img2img is not None:
            prepared = [
                prepare(
                    img2img.init_images[i], img2img.masks[i], width=spec.width, height=spec.height,
                    resize_mode=img2img.resize_mode, settings=img2img.inpaint, seed=spec.seeds[i],
                )
                for i in range(len(spec.seeds))
            ]
        if img2img is None:
            task = "txt2img"
        else:
            task = "inpaint" if any(p.mask is not None for p in prepared) else "img2img"
        pipeline = self._pipeline_for(spec, task)
        control: dict[str, Any] = {}
        if spec.controlnet:  # the task's ControlNet pipeline over the same modules, and the control maps
            pipeline, control = controlnet_pipeline(
                pipeline, spec.controlnet, self.controlnets, task=task, width=spec.width, height=spec.height
            )
        images: list[Image.Image | None] = []
        for chunk_index, chunk in enumerate(spec.chunks()):

            def step_end(pipe, step_index, timestep, callback_kwargs, _chunk=chunk_index, _images=chunk):
                if on_step is not None:
                    on_step(_chunk, step_index + 1)
                self._preview(pipe, on_preview, spec, _chunk, _images, step_index + 1, callback_kwargs)
                return callback_kwargs

            # One generator per image, seeded with its own seed: an image does not depend on
            # its batch neighbours or its position (A1111's "seed + i" convention).
            generators = [torch.Generator(device="cpu").manual_seed(spec.seeds[i]) for i in chunk]
            kwargs: dict[str, Any] = {}
            if img2img is not None:
                kwargs = {"image": [prepared[i].image for i in chunk], "strength": img2img.denoising_strength}
                if task == "inpaint":  # an all-black mask comes back as None: nothing to repaint
                    kwargs["mask_image"] = [prepared[i].mask or Image.new("L", (spec.width, spec.height)) for i in chunk]
            kwargs.update(control)
            if spec.subseed_strength > 0 and img2img is None:
                kwargs["latents"] = variation_noise(pipeline, spec, chunk)
            if spec.hires is not None:
                kwargs["output_type"] = "latent" if spec.hires.upscaler.startswith("Latent") else "pil"
            try:
                if on_step is not None:
                    on_step(chunk_index, 0)
                if img2img is not None and int(spec.steps * img2img.denoising_strength) == 0:
                    # No denoising step to run (A1111: strength 0 returns the init image).
                    generated = [prepared[i].image for i in chunk]
                else:
                    configure_vae(pipeline.vae, self.acceleration, batch=len(chunk), width=spec.width, height=spec.height)
                    with torch.inference_mode():
                        generated = pipeline(
                            **self._conditioning(pipeline, spec, chunk),
                            num_inference_steps=spec.steps,
                            guidance_scale=spec.cfg_scale,
                            width=spec.width,
                            height=spec.height,
                            generator=generators,
                            callback_on_step_end=step_end,
                            **{"output_type": "pil", **kwargs},
                        ).images
                if spec.hires is not None:
                    generated = self._hires_pass(spec, chunk_index, chunk, generated, on_step, on_preview)
            except SkipChunk:
                images.extend([None] * len(chunk))
                continue
            if img2img is not None:  # paste back over the original, keep unmasked pixels
                generated = [finish(image, prepared[i]) for image, i in zip(generated, chunk, strict=True)]
            images.extend(generated)
        return images

    def _hires_pass(
        self, spec: GenerationSpec, chunk_index: int, chunk: range, first: Any, on_step: StepCallback | None,
        on_preview: PreviewCallback | None = None,
    ) -> list[Image.Image]:
        """A1111's hires fix: upscale the first pass (latents or pixels), then denoise it again as img2img."""
        hires = spec.hires
        assert hires is not None
        pipeline = self._pipeline_for(spec, "img2img")
        if hires.upscaler.startswith("Latent"):
            image: Any = upscale_latents(first, hires.upscaler, width=hires.width, height=hires.height)
        elif hires.upscaler_path:
            model = self._upscaler(hires.upscaler_path, hires.upscaler_sha256)
            image = [upscale(model, picture, width=hires.width, height=hires.height) for picture in first]
        else:
            resample = Image.Resampling.NEAREST if hires.upscaler == "Nearest" else Image.Resampling.LANCZOS
            image = [picture.resize((hires.width, hires.height), resample) for picture in first]
        if int(hires.steps * hires.denoising_strength) == 0:
            if isinstance(image, list):
                return image
            hires = dataclasses.replace(hires, denoising_strength=1.0 / hires.steps)  # decode at least one step

        def step_end(pipe, step_index, timestep, callback_kwargs):
            if on_step is not None:
                on_step(chunk_index, spec.steps + step_index + 1)
            self._preview(pipe, on_preview, spec, chunk_index, chunk, step_index + 1, callback_kwargs)
            return callback_kwargs

        generators = [torch.Generator(device="cpu").manual_seed(spec.seeds[i]) for i in chunk]
        configure_vae(pipeline.vae, self.acceleration, batch=len(chunk), width=hires.width, height=hires.height)
        with torch.inference_mode():
            return pipeline(
                **self._conditioning(pipeline, spec, chunk),
                image=image,
                strength=hires.denoising_strength,
                num_inference_steps=hires.steps,
                guidance_scale=spec.cfg_scale,
                generator=generators,
                callback_on_step_end=step_end,
                output_type="pil",
            ).images


LATENT_MODES = {  # A1111's latent upscale modes → torch interpolate (mode, antialias)
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}


def upscale_latents(latents: torch.Tensor, mode_name: str, *, width: int, height: int) -> torch.Tensor:
    mode, antialias = LATENT_MODES[mode_name]
    size = (height // 8, width // 8)
    if mode in ("nearest", "nearest-exact"):
        return torch.nn.functional.interpolate(latents, size=size, mode=mode)
    return torch.nn.functional.interpolate(latents, size=size, mode=mode, antialias=antialias)


def slerp(strength: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from `low` (strength 0) to `high` (strength 1), row by row."""
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * (1 - strength) + high * strength
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - strength) * omega) / so).unsqueeze(1) * low + (torch.sin(strength * omega) / so).unsqueeze(1) * high


def variation_noise(pipeline: diffusers.DiffusionPipeline, spec: GenerationSpec, chunk: range) -> torch.Tensor:
    """Each image's starting noise: its seed's noise moved towards its subseed's by `subseed_strength`.

    Drawn exactly as diffusers draws it from a per-image CPU generator, so strength 0 is the
    plain seed's image.
    """
    shape = (1, pipeline.unet.config.in_channels, spec.height // pipeline.vae_scale_factor, spec.width // pipeline.vae_scale_factor)
    noises = []
    for i in chunk:
        seed_noise = torch.randn(shape, generator=torch.Generator(device="cpu").manual_seed(spec.seeds[i]))
        sub_noise = torch.randn(shape, generator=torch.Generator(device="cpu").manual_seed(spec.subseeds[i]))
        # A1111: slerp(strength, noise, subnoise), i.e. strength 1 is the subseed's noise
        noises.append(slerp(spec.subseed_strength, seed_noise.flatten(1), sub_noise.flatten(1)).reshape(shape))
    return torch.cat(noises).to(device=pipeline.device, dtype=pipeline.unet.dtype)
