"""The GPU worker runtime: runs one batch of frozen specs on diffusers and returns PIL images (no Django).

One `WorkerRuntime` is owned by each worker process (see `inference/runner/tasks.py`). It takes
plain data (`runtime/specs.py`: a `GenerationSpec` for txt2img, or img2img and
inpainting when it carries init images; a `PostprocessSpec` for A1111's Extras on an existing
image, with no pipeline) and returns PIL images, calling `on_step` after every denoising step;
`on_step` raising stops generation there (that is how cancel works).

This module is the orchestration: which pipeline a batch runs on, in which chunks, with which
conditioning, then the hires fix, face restoration and the censor; A1111's token merging is put on
the base UNet around each pass's pipeline call (`token_merging.py`; the refiner's UNet runs without), and DeepCache's
step caching likewise (`deepcache.py`); img2img's SD upscale runs each
image as a tile loop through the same chunks (tiles and blending: `a1111/sd_upscale.py`), and
img2img's starting latents (variation seeds, latent fills) are hooked in by `init_latents.py`. What stays loaded between
batches lives in `caches.py`; seeds, variation noise and latent resizing in `noise.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import diffusers
import torch
from PIL import Image

from a1111.deepcache import DeepCachePass
from a1111.generation import img2img_steps
from runtime.networks import hypernetwork
from runtime.acceleration import Acceleration, configure_vae
from runtime.caches import LruCache, PipelineCache, VaeCache
from runtime.conditioning import Embedding, load_embedding_file
from runtime.controlnet import ControlNetCache, controlnet_pipeline, soft_injection
from runtime.deepcache import deep_cache
from runtime.extras import postprocess
from runtime.faces.detection import RetinaFace, load_face_detector
from runtime.faces.restoration import FaceNet, load_face_net, restore_faces
from runtime.networks.hypernetwork import Hypernetwork, load_hypernetwork
from runtime.img2img import PreparedImage, finish, prepare
from runtime.init_latents import StartingLatents, chunk_plan, starting_latents
from runtime.noise import image_generators, sampler_noise_seeds, upscale_latents, variation_noise
from runtime.previews import latent_preview
from runtime.interrogate import InterrogateRuntime
from runtime.promptgen import PromptgenRuntime
from runtime.refiner import steps_before_switch, switch_point, takes_aesthetic_score
from runtime.safety import SafetyChecker, censor_image
from runtime.sampler_parameters import configure_scheduler, negative_guidance_minimum_sigma
from runtime.scheduled_prompts import ScheduledConditioning, chunk_conditioning, denoising
from runtime.specs import (
    FaceRestorationSpec,
    GenerationSpec,
    HiresSpec,
    Img2ImgInputs,
    PostprocessSpec,
    RefinerSpec,
    RestoreStep,
)
from runtime.sd_upscale import sd_upscale_images
from runtime.tiling import seamless
from runtime.token_merging import token_merging
from runtime.upscalers import RRDBNet, load_upscaler, upscale

logger = logging.getLogger(__name__)


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
        # prompt-generation language models (BeautifulPrompt), by weights hash
        self.promptgen = PromptgenRuntime(device=self.device, dtype=self.dtype)
        # A1111's interrogators (BLIP + CLIP, a danbooru tagger), by weights hash
        self.interrogate = InterrogateRuntime(device=self.device, dtype=self.dtype)
        self._last_networks: GenerationSpec | None = None  # the spec whose networks were applied last

    def model_counts(self) -> dict[str, int]:
        """What the worker reports of its model loading since it started: checkpoint `hits`, `loads`
        and `restores` (`PipelineCache.counts`), and `promptgen_loads` (language models loaded)."""
        return {**self.pipelines.counts(), "promptgen_loads": self.promptgen.loads}

    def describe_device(self) -> tuple[str, int | None]:
        if self.device.type == "cuda":
            props = torch.cuda.get_device_properties(self.device)
            return f"{self.device} ({props.name})", props.total_memory
        return str(self.device), None

    def _pipeline_for(self, spec: GenerationSpec, task: str) -> diffusers.DiffusionPipeline:
        cached = self.pipelines.get(spec.checkpoint_path, spec.checkpoint_sha256)
        if is_xl(cached) and cached.text_encoder is None:
            raise ValueError(
                f"{Path(spec.checkpoint_path).name} is an SDXL refiner: it continues another model's latents, so name "
                "it in refiner_checkpoint with an SDXL base as the checkpoint"
            )
        components = dict(cached.components)
        if spec.vae_path:
            components["vae"] = self.vaes.get(
                spec.vae_path, spec.vae_sha256, checkpoint_sha256=spec.checkpoint_sha256, like=cached.vae
            )
        scheduler_cls = getattr(diffusers, spec.scheduler_class)
        components["scheduler"] = scheduler_cls.from_config(cached.scheduler.config, **spec.scheduler_kwargs)
        configure_scheduler(components["scheduler"], spec.sampler_parameters)  # this batch's own scheduler
        # A new pipeline object over the cached modules: the cache is never mutated per job.
        if is_xl(cached):
            pipeline = XL_PIPELINE_CLASSES[task](**components)
        else:
            pipeline = PIPELINE_CLASSES[task](**components, requires_safety_checker=False)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline

    def _refiner_pipeline(self, spec: GenerationSpec, refiner: RefinerSpec) -> diffusers.StableDiffusionXLImg2ImgPipeline:
        """The refiner's img2img pipeline over its cached modules (the batch's VAE file, if any, and
        sampler), picking up latents the base left at `denoising_end`."""
        if self.pipelines.capacity < 2:
            raise ValueError("a refiner needs a pipeline cache of at least 2 checkpoints (the base and the refiner)")
        cached = self.pipelines.get(refiner.path, refiner.sha256)
        if not is_xl(cached):
            raise ValueError(f"the refiner {Path(refiner.path).name} is not an SDXL model: it cannot take SDXL latents")
        self.pipelines.note_pair(spec.checkpoint_sha256, refiner.sha256)
        components = dict(cached.components)
        if spec.vae_path:
            components["vae"] = self.vaes.get(spec.vae_path, spec.vae_sha256, checkpoint_sha256=refiner.sha256, like=cached.vae)
        scheduler_cls = getattr(diffusers, spec.scheduler_class)
        components["scheduler"] = scheduler_cls.from_config(cached.scheduler.config, **spec.scheduler_kwargs)
        configure_scheduler(components["scheduler"], spec.sampler_parameters)  # this batch's own scheduler
        pipeline = diffusers.StableDiffusionXLImg2ImgPipeline(
            **components, requires_aesthetics_score=takes_aesthetic_score(cached)
        )
        pipeline.set_progress_bar_config(disable=True)
        return pipeline

    def _refine(
        self, spec: GenerationSpec, refiner: RefinerSpec, chunk_index: int, chunk: range, *, image: Any,
        strength: float, steps: int, base_steps: int, steps_before: int, width: int, height: int,
        hires_steps: int | None, on_step: StepCallback | None, on_preview: PreviewCallback | None,
        from_base: bool, output_type: str = "pil",
    ) -> Any:
        """The refiner's part of a pass: with `from_base`, from the latents the base left at
        `refiner.switch_at` after `base_steps` steps; otherwise the whole pass (img2img of `image` at
        `strength`, the switch being before its first step). Its
        conditioning comes from its own text encoder, at the pass's step where it takes over."""
        pipeline = self._refiner_pipeline(spec, refiner)
        configure_vae(pipeline.vae, self.acceleration, batch=len(chunk), width=width, height=height)
        with torch.inference_mode():
            conditioning, schedule = self._conditioning(pipeline, spec, chunk, hires_steps=hires_steps)
            if schedule is not None and base_steps:
                schedule = schedule.starting_at(base_steps)
                conditioning = schedule.pipeline_kwargs()
        handover = {"denoising_start": switch_point(refiner.switch_at)} if from_base else {"strength": strength}
        with self._denoising_call(pipeline, spec, schedule, chunk):  # the refiner's UNet: no token merging, no DeepCache
            return pipeline(
                **conditioning,
                image=image,
                **handover,
                num_inference_steps=steps,
                guidance_scale=spec.cfg_scale,
                generator=image_generators(spec.seeds, chunk),
                **self._step_callback(
                    spec, chunk_index, chunk, on_step, on_preview, steps_before=steps_before + base_steps, schedule=schedule
                ),
                output_type=output_type,
            ).images

    def _hires_pipeline(self, first_pass: GenerationSpec, spec: GenerationSpec) -> diffusers.DiffusionPipeline:
        """The hires pass's img2img pipeline: over the first pass's checkpoint, or over its own
        (`hr_checkpoint_name`), which must take the same latents; a job on two checkpoints is noted as
        a pair (`PipelineCache.note_pair`), so the worker reports holding both, as for a refiner."""
        if spec.checkpoint_sha256 == first_pass.checkpoint_sha256:
            return self._pipeline_for(spec, "img2img")
        if self.pipelines.capacity < 2:
            raise ValueError("a hires checkpoint needs a pipeline cache of at least 2 checkpoints (both passes' models)")
        if spec.refiner is not None:
            raise ValueError("a hires checkpoint and a refiner cannot run in one job")
        pipeline = self._pipeline_for(spec, "img2img")
        if is_xl(pipeline) != is_xl(self.pipelines.get(first_pass.checkpoint_path, first_pass.checkpoint_sha256)):
            raise ValueError(
                f"the hires checkpoint {Path(spec.checkpoint_path).name} takes other latents than the first pass's "
                "model (SDXL and SD 1.x/2.x do not mix): choose one of the same family"
            )
        self.pipelines.note_pair(first_pass.checkpoint_sha256, spec.checkpoint_sha256)
        return pipeline

    @contextlib.contextmanager
    def _networks(self, spec: GenerationSpec, pipeline: diffusers.DiffusionPipeline) -> Iterator[None]:
        """The batch's LoRAs, hypernetworks and tiling on the modules of `pipeline`'s checkpoint, for
        the block only (the first pass's, or a hires checkpoint's: A1111's networks patch whichever
        weights are loaded)."""
        hypernets = [(self._hypernetwork(path, sha), strength) for path, sha, strength in spec.hypernetworks]
        with (
            self.pipelines.loras_for(spec.checkpoint_sha256).applied(pipeline, spec.loras),
            hypernetwork.applied(pipeline.unet, hypernets),
            seamless(pipeline.unet, pipeline.vae, enabled=spec.tiling),
        ):
            yield

    @contextlib.contextmanager
    def _denoising_call(
        self, pipeline: diffusers.DiffusionPipeline, spec: GenerationSpec, schedule: ScheduledConditioning | None,
        chunk: range, *, token_merging_ratio: float = 0.0, deepcache: DeepCachePass | None = None,
    ) -> Iterator[None]:
        """What every denoising pipeline call of a chunk runs inside: inference mode, the prompt
        schedule's UNet hook (AND parts), A1111's negative-guidance minimum sigma
        (`runtime/sampler_parameters.py`), the ENSD-reseeded sampler noise, token merging and
        DeepCache (its hook after NGMS's, so it sees the rows the UNet is really called with)."""
        guided = spec.cfg_scale > 1.0 and getattr(pipeline.unet.config, "time_cond_proj_dim", None) is None
        composed = schedule is not None and schedule.schedules.is_composed
        with (
            torch.inference_mode(),
            denoising(schedule, pipeline.unet),
            negative_guidance_minimum_sigma(
                pipeline.unet, pipeline.scheduler, spec.sampler_parameters, guided=guided, composed=composed
            ),
            sampler_noise_seeds(pipeline, spec.seeds, spec.noise_seed_deltas, chunk),
            token_merging(pipeline.unet, token_merging_ratio),
            deep_cache(pipeline.unet, deepcache),
        ):
            yield

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
        """A1111's Extras on one image (`runtime/extras.py`): no pipeline is loaded; the
        upscaler, restorer and detector models come from this runtime's caches."""
        def restore(picture: Image.Image, step: RestoreStep) -> Image.Image:
            detector = self._face_detector(spec.detector_path, spec.detector_sha256)
            net = self._face_net(step.restorer, step.model_path, step.model_sha256)
            return restore_faces(picture, detector=detector, net=net, fidelity=step.fidelity)[0]

        return postprocess(
            image, spec, load_upscaler=lambda resizer: self._upscaler(resizer.path, resizer.sha256), restore_faces=restore
        )

    def _conditioning(
        self, pipeline: diffusers.DiffusionPipeline, spec: GenerationSpec, chunk: range, *, hires_steps: int | None = None
    ) -> tuple[dict[str, Any], ScheduledConditioning | None]:
        """A1111's conditioning for a chunk: (word:1.2) weights, BREAK, 75-token chunks, clip skip,
        embeddings (runtime/conditioning.py), as the pipeline's prompt_embeds (and, for SDXL, both
        encoders side by side and the pooled embeddings; SDXL ignores clip skip, as A1111), with each
        row's prompt editing, alternation and AND parts over the pass's steps (runtime/scheduled_prompts.py:
        None where no row's text changes during the pass and no row has AND parts or a weight).
        """
        embeddings = {name: self._embedding(name, path, sha) for name, path, sha in spec.embeddings}
        return chunk_conditioning(
            pipeline, [spec.prompts[i] for i in chunk], [spec.negative_prompts[i] for i in chunk],
            embeddings=embeddings, clip_skip=spec.clip_skip, steps=spec.steps, hires_steps=hires_steps,
        )

    def generate(
        self, spec: GenerationSpec, on_step: StepCallback | None = None, on_preview: PreviewCallback | None = None
    ) -> list[Image.Image | None]:
        """Images in the order of `spec.seeds`; None for the images of a skipped chunk.

        With `on_preview` (and `preview_every` set), a cheap preview of each image named by
        `spec.preview_images` (default: each chunk's first image), made from that image's own
        latent, is handed over every `preview_every` steps (runtime/previews.py).

        The batch's LoRAs and hypernetworks are applied to the cached modules for this call
        only (every job of a batch shares them: they are part of the batch key).
        """
        if spec.refiner is not None and spec.refiner.switch_at >= 1.0:
            spec = dataclasses.replace(spec, refiner=None)  # A1111: the switch is never reached, no refiner pass
        self.pipelines.acquire(spec.checkpoint_path, spec.checkpoint_sha256)  # a hit, a load or a restore, counted once
        pipeline = self._pipeline_for(spec, "txt2img")  # the task's pipeline comes next
        if spec.refiner is not None and (not is_xl(pipeline) or spec.controlnet or spec.sd_upscale):
            raise ValueError("a refiner runs after an SDXL base only, without ControlNet or SD upscale")
        with self._networks(spec, pipeline):
            images = self._generate(spec, on_step, on_preview)
        self._last_networks = spec
        return self.restore_faces(images, spec.face_restoration) if spec.face_restoration else images

    def held_network_key(self) -> str:
        """The network key of the last batch that ran, while all its networks are still loaded.

        A batch's LoRAs are active only inside `generate` (runtime/networks/lora.py deactivates
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

    def _step_callback(
        self, spec: GenerationSpec, chunk_index: int, chunk: range, on_step: StepCallback | None,
        on_preview: PreviewCallback | None, *, steps_before: int = 0, schedule: ScheduledConditioning | None = None,
    ) -> dict[str, Any]:
        """A pipeline's `callback_on_step_end` (as keyword arguments) for one chunk: progress to
        `on_step` (counting the `steps_before` of an earlier pass, as the hires fix's second pass
        does), previews to `on_preview`, and with a prompt `schedule` the next step's conditioning
        rows handed back to the pipeline where they change."""

        def step_end(pipe: Any, step_index: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            if on_step is not None:
                on_step(chunk_index, steps_before + step_index + 1)
            self._preview(pipe, on_preview, spec, chunk_index, chunk, step_index + 1, callback_kwargs)
            if schedule is not None:
                callback_kwargs.update(schedule.tensors_for_step(step_index + 1, callback_kwargs))
            return callback_kwargs

        if schedule is None:
            return {"callback_on_step_end": step_end}
        return {"callback_on_step_end": step_end, "callback_on_step_end_tensor_inputs": schedule.tensor_inputs}

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
        if spec.sd_upscale is not None and spec.img2img is not None:  # each image a loop over its tiles
            return sd_upscale_images(
                spec, spec.sd_upscale, spec.img2img, generate=self._generate, load_upscaler=self._upscaler,
                on_step=on_step, on_preview=on_preview,
            )
        # 1. img2img: each init image (and mask) resized, cropped and blurred as A1111 does.
        prepared = _prepare_init_images(spec, spec.img2img) if spec.img2img is not None else []
        # 2. The task, and its pipeline over the cached modules (ControlNet's, with the control maps).
        if spec.img2img is None:
            task = "txt2img"
        else:
            task = "inpaint" if any(p.mask is not None for p in prepared) else "img2img"
        pipeline = self._pipeline_for(spec, task)
        control: dict[str, Any] = {}
        if spec.controlnet:
            pipeline, control = controlnet_pipeline(
                pipeline, spec.controlnet, self.controlnets, task=task, width=spec.width, height=spec.height
            )
        # 3. Each chunk through the pipeline; a chunk whose images were all cancelled comes back as Nones.
        images: list[Image.Image | None] = []
        with soft_injection(pipeline.controlnet, spec.controlnet) if spec.controlnet else contextlib.nullcontext():
            for chunk_index, chunk in enumerate(spec.chunks()):
                try:
                    images.extend(self._run_chunk(pipeline, task, spec, chunk_index, chunk, prepared, control, on_step, on_preview))
                except SkipChunk:
                    images.extend([None] * len(chunk))
        return images

    def _run_chunk(
        self, pipeline: diffusers.DiffusionPipeline, task: str, spec: GenerationSpec, chunk_index: int, chunk: range,
        prepared: list[PreparedImage], control: dict[str, Any], on_step: StepCallback | None,
        on_preview: PreviewCallback | None,
    ) -> list[Image.Image]:
        """One pipeline call for the images of `chunk` (then the hires fix); raises `SkipChunk` from `on_step`."""
        img2img = spec.img2img
        # 1. The task's inputs: init images and masks, the control maps, txt2img's variation noise
        # (img2img's, and its latent fills, hook the pipeline's own noising: `init_latents.py`).
        kwargs: dict[str, Any] = {}
        if img2img is not None:
            kwargs = {"image": [prepared[i].image for i in chunk], "strength": img2img.denoising_strength}
            if task == "inpaint":  # an all-black mask comes back as None: nothing to repaint
                kwargs["mask_image"] = [prepared[i].mask or Image.new("L", (spec.width, spec.height)) for i in chunk]
        kwargs.update(control)
        if (spec.subseed_strength > 0 or spec.seed_resize_from) and img2img is None:
            scale = pipeline.vae_scale_factor
            shape = (1, pipeline.unet.config.in_channels, spec.height // scale, spec.width // scale)
            noise = variation_noise(
                shape, spec.seeds, spec.subseeds, spec.subseed_strength, chunk, resize_from=spec.seed_resize_from, scale=scale
            )
            kwargs["latents"] = noise.to(device=pipeline.device, dtype=pipeline.unet.dtype)
        if spec.hires is not None:
            kwargs["output_type"] = "latent" if spec.hires.upscaler.startswith("Latent") else "pil"
        # The refiner takes this pass over at its switch point (with the hires fix: if it refines the first).
        refiner = spec.refiner if spec.refiner and spec.refiner.refines(hires_pass=False, hires=spec.hires is not None) else None
        output_type = kwargs.get("output_type", "pil")  # the pass's own output (latents for a latent hires fix)
        strength = img2img.denoising_strength if img2img is not None else 1.0
        base_steps = steps_before_switch(pipeline, spec.steps, strength, refiner.switch_at) if refiner else 0
        if refiner is not None:
            kwargs.update(denoising_end=switch_point(refiner.switch_at), output_type="latent")
        if on_step is not None:
            on_step(chunk_index, 0)
        # 2. Denoise: each image from its own generator (it does not depend on its batch neighbours).
        if img2img is not None and int(spec.steps * img2img.denoising_strength) == 0:
            # No denoising step to run (A1111: strength 0 returns the init image).
            generated = [prepared[i].image for i in chunk]
        elif refiner is not None and img2img is not None and not base_steps:
            # The switch comes before the pass's first step: the refiner runs all of it, as img2img.
            generated = self._refine(
                spec, refiner, chunk_index, chunk, image=[prepared[i].image for i in chunk], strength=strength,
                steps=spec.steps, base_steps=0, steps_before=0, width=spec.width, height=spec.height,
                hires_steps=None, on_step=on_step, on_preview=on_preview, from_base=False, output_type=output_type,
            )
        else:
            configure_vae(pipeline.vae, self.acceleration, batch=len(chunk), width=spec.width, height=spec.height)
            with torch.inference_mode():
                conditioning, schedule = self._conditioning(pipeline, spec, chunk)
            generators = image_generators(spec.seeds, chunk)
            plan = chunk_plan(pipeline, spec, chunk, prepared, generators, inpaint=task == "inpaint") if img2img else StartingLatents()
            with (
                self._denoising_call(
                    pipeline, spec, schedule, chunk, token_merging_ratio=spec.token_merging_ratio, deepcache=spec.deepcache
                ),
                starting_latents(pipeline, plan),
            ):
                generated = pipeline(
                    **conditioning,
                    num_inference_steps=spec.steps,
                    guidance_scale=spec.cfg_scale,
                    width=spec.width,
                    height=spec.height,
                    generator=generators,
                    **self._step_callback(spec, chunk_index, chunk, on_step, on_preview, schedule=schedule),
                    **{"output_type": "pil", **kwargs},
                ).images
            if refiner is not None:
                generated = self._refine(
                    spec, refiner, chunk_index, chunk, image=generated, strength=strength, steps=spec.steps,
                    base_steps=base_steps, steps_before=0, width=spec.width, height=spec.height, hires_steps=None,
                    on_step=on_step, on_preview=on_preview, from_base=True,  # txt2img: its start noise at worst
                    output_type=output_type,
                )
        # 3. The hires fix: upscale, then a second, img2img pass.
        if spec.hires is not None:
            generated = self._hires_pass(spec, spec.hires, chunk_index, chunk, generated, on_step, on_preview)
        # 4. img2img: pasted back over the original, unmasked pixels kept.
        if img2img is not None:
            generated = [finish(image, prepared[i]) for image, i in zip(generated, chunk, strict=True)]
        return generated

    def _hires_pass(
        self, spec: GenerationSpec, hires: HiresSpec, chunk_index: int, chunk: range, first: Any,
        on_step: StepCallback | None, on_preview: PreviewCallback | None,
    ) -> list[Image.Image]:
        """A1111's hires fix: upscale the first pass (latents or pixels), then denoise it again as img2img
        (with the pass's own prompts, sampler and checkpoint where `hires` names them)."""
        first_pass, spec = spec, _hires_pass_spec(spec, hires)
        base_sha256 = first_pass.checkpoint_sha256
        pipeline = self._hires_pipeline(first_pass, spec)
        # 1. Upscale: latents, with a model (ESRGAN family), or a plain resize.
        if hires.upscaler.startswith("Latent"):
            image: Any = upscale_latents(first, hires.upscaler, width=hires.width, height=hires.height)
        elif hires.upscaler_path:
            model = self._upscaler(hires.upscaler_path, hires.upscaler_sha256)
            image = [upscale(model, picture, width=hires.width, height=hires.height) for picture in first]
        else:
            resample = Image.Resampling.NEAREST if hires.upscaler == "Nearest" else Image.Resampling.LANCZOS
            image = [picture.resize((hires.width, hires.height), resample) for picture in first]
        # A1111 runs all of the pass's steps, over a schedule stretched by the strength (`img2img_steps`).
        steps, strength = img2img_steps(hires.steps, hires.denoising_strength)
        if hires.denoising_strength <= 0:
            if isinstance(image, list):
                return image
            steps, strength = hires.steps, 1.0 / hires.steps  # latents: decode after the schedule's last step
        # A1111's `hires_fix_refiner_pass` (by default "second pass"): the refiner takes this pass over.
        refiner = spec.refiner if spec.refiner and spec.refiner.refines(hires_pass=True, hires=True) else None
        base_steps = steps_before_switch(pipeline, steps, strength, refiner.switch_at) if refiner else 0
        refine = {} if refiner is None else {"denoising_end": switch_point(refiner.switch_at), "output_type": "latent"}
        if refiner is not None and not base_steps:  # the switch comes before the pass's first step
            return self._refine(
                spec, refiner, chunk_index, chunk, image=image, strength=strength, steps=steps,
                base_steps=0, steps_before=spec.steps, width=hires.width, height=hires.height,
                hires_steps=hires.steps, on_step=on_step, on_preview=on_preview, from_base=False,
            )
        # 2. Denoise again at the target size, the steps counted after the first pass's; ControlNet
        # guides it too, its maps made at the target size (the extension's default, "Both" passes).
        configure_vae(pipeline.vae, self.acceleration, batch=len(chunk), width=hires.width, height=hires.height)
        control: dict[str, Any] = {}
        if spec.controlnet:
            pipeline, control = controlnet_pipeline(
                pipeline, spec.controlnet, self.controlnets, task="img2img", width=hires.width, height=hires.height
            )
        with (
            self._networks(spec, pipeline) if spec.checkpoint_sha256 != base_sha256 else contextlib.nullcontext(),
            soft_injection(pipeline.controlnet, spec.controlnet) if spec.controlnet else contextlib.nullcontext(),
        ):
            with torch.inference_mode():
                # A1111 schedules the hires pass's prompts over its own steps, after the first pass's.
                conditioning, schedule = self._conditioning(pipeline, spec, chunk, hires_steps=hires.steps)
            with self._denoising_call(
                pipeline, spec, schedule, chunk, token_merging_ratio=hires.token_merging_ratio, deepcache=hires.deepcache
            ):
                denoised = pipeline(
                    **conditioning,
                    image=image,
                    **control,
                    strength=strength,
                    num_inference_steps=steps,
                    guidance_scale=spec.cfg_scale,
                    generator=image_generators(spec.seeds, chunk),
                    **self._step_callback(
                        spec, chunk_index, chunk, on_step, on_preview, steps_before=spec.steps, schedule=schedule
                    ),
                    **{"output_type": "pil", **refine},
                ).images
        if refiner is None:
            return denoised
        return self._refine(
            spec, refiner, chunk_index, chunk, image=denoised, strength=strength, steps=steps,
            base_steps=base_steps, steps_before=spec.steps, width=hires.width, height=hires.height,
            hires_steps=hires.steps, on_step=on_step, on_preview=on_preview, from_base=True,
        )


def _hires_pass_spec(spec: GenerationSpec, hires: HiresSpec) -> GenerationSpec:
    """The spec the hires pass runs as: the first pass's, with the pass's own prompts, sampler and
    checkpoint where `hires` names them (A1111 1.10's hr_prompt, hr_sampler_name, hr_checkpoint_name)."""
    if not (hires.prompts or hires.negative_prompts or hires.scheduler_class or hires.checkpoint_path):
        return spec
    return dataclasses.replace(
        spec,
        prompts=hires.prompts or spec.prompts,
        negative_prompts=hires.negative_prompts or spec.negative_prompts,
        scheduler_class=hires.scheduler_class or spec.scheduler_class,
        scheduler_kwargs=hires.scheduler_kwargs if hires.scheduler_class else spec.scheduler_kwargs,
        checkpoint_path=hires.checkpoint_path or spec.checkpoint_path,
        checkpoint_sha256=hires.checkpoint_sha256 or spec.checkpoint_sha256,
    )


def _prepare_init_images(spec: GenerationSpec, img2img: Img2ImgInputs) -> list[PreparedImage]:
    """Each image's init image and mask as the pipeline takes them (runtime/img2img.py)."""
    return [
        prepare(
            img2img.init_images[i], img2img.masks[i], width=spec.width, height=spec.height,
            resize_mode=img2img.resize_mode, settings=img2img.inpaint,
        )
        for i in range(len(spec.seeds))
    ]
