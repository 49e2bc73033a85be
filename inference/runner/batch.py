"""Runs one dispatched batch inside a worker process, in numbered stages (`_run_batch`):
1. claim the jobs, 2. build the runtime's spec from their typed `JobSpec`s (a pure mapping, model
keys resolved on this machine), 3. generate with progress and previews routed per job,
4. store each job's PNGs and finish it.

A batch is one or more jobs with the same batch key (possibly from different users) that
run as one pipeline call. Each job keeps its own progress, cancel and outcome: a cancelled
job is dropped from the batch (its images are discarded, the others carry on); only when
every job of a chunk is gone is the chunk abandoned. A skip (A1111's Skip, `job_skip`) drops only
the job's current chunk, the images being made then: each batch-count iteration of a job runs in
chunks of its own (`inference/runner/chunks.py`), so the job goes on with its next iteration and
succeeds with the images it kept. An Extras job (upscale, restore faces)
has a batch key of its own and runs without a pipeline (`inference/runner/extras.py`), as does an
interrogate job (`inference/runner/interrogate.py`); a batch
of prompt expansions runs on a language model (`inference/runner/promptgen.py`).

Output files are named by job and image index and written atomically, so a job run twice
(a redelivered message after a worker was wrongly declared dead) overwrites its own files
instead of adding a second set; only one run can record them (see `inference/services.py`).
"""

from __future__ import annotations

import base64
import contextvars
import dataclasses
import io
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection as db_connection
from PIL import Image

from config.logcontext import log_context
from inference.inputs.controlnet import controlnet_infotext_entries
from a1111.deepcache import INFOTEXT_LABEL as DEEPCACHE_INFOTEXT
from a1111.generation import GenerationRequest, img2img_steps
from a1111.infotext import (
    generation_infotext,
    hires_infotext_params,
    img2img_infotext_params,
)
from inference.jobspec import JobSpec, JobSpecError, ModelRef
from inference.metering import request_pixel_steps
from inference.model_cache import ModelFiles
from inference.models import Job
from inference.runner.chunks import ChunkLayout, layout_of
from inference.scheduler.keys import model_key, promptgen_model_key
from a1111.pnginfo import PLATFORM_ZLIB_STRATEGY, png_bytes
from a1111.prompts import extract_extra_networks
from a1111.samplers import ENSD_SAMPLERS, resolve_sampler
from inference.selectors import job_skips_requested
from inference.transitions import (
    job_claim,
    job_fail,
    job_mark_cancelled,
    job_progress,
    job_succeed,
    worker_batch_done,
)
from inference.storage import (
    UnsafeModelKey,
    UnsafeOutputPath,
    member_file_discard,
    member_file_save,
    member_image_open,
    model_file_key,
    storage_error,
)
from a1111.controlnet import ControlUnit
from runtime.controlnet import prepare_control_image
from runtime.img2img import InpaintSettings
from runtime.engine import SkipChunk, WorkerRuntime
from runtime.specs import (
    FaceRestorationSpec,
    GenerationSpec,
    HiresSpec,
    Img2ImgInputs,
    LoraSpec,
    RefinerSpec,
    SdUpscaleSpec,
)
from tenants.workdirs import user_outputs_key, user_save_dir_key

logger = logging.getLogger(__name__)


def store_png(key: str, data: bytes) -> str:
    """Write a PNG into the member's working directory (`UnsafeOutputPath` if a link leads out)."""
    return member_file_save(key, data)


class ProgressReporter(threading.Thread):
    """Records one job's progress and publishes its events off the denoising loop.

    The loop only hands over a step number (no I/O between steps); this thread writes the
    latest one at most every `interval` seconds (a progress bar needs no more, and on a small
    machine each write costs CPU the model could use), and raises the `stopped` flag when
    the write finds the job cancelled or no longer ours. The loop checks that flag at every
    step, so a cancel takes effect within one interval plus one step.

    Every interval (steps or not: a held step too) it also reads the job's skip count; a new
    skip raises `skip`, which the loop takes at its next step of this job (`generate`).
    """

    def __init__(self, job: Job, attempt: int, interval: float) -> None:
        super().__init__(name=f"progress-{job.public_id}", daemon=True)
        self.job, self.attempt = job, attempt
        self.interval = interval
        self.stopped = threading.Event()
        self.skip = threading.Event()  # a skip the loop has not taken yet
        self._skips_seen = job.skip_requested
        self._latest = 0
        self._reported = 0
        self._preview: str | None = None  # the newest live preview not yet written (base64 JPEG)
        self._closing = False
        self._changed = threading.Condition()
        self._log_context = contextvars.copy_context()  # its log lines name the batch's job and worker too

    def report(self, step: int) -> None:
        with self._changed:
            self._latest = step
            self._changed.notify()

    def preview(self, image: Image.Image) -> None:
        """A live preview of the job's image, written with the next progress write."""
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=80)
        with self._changed:
            self._preview = base64.b64encode(buffer.getvalue()).decode()
            self._changed.notify()

    def _read_skips(self) -> None:
        skips = job_skips_requested(self.job)
        if skips is not None and skips > self._skips_seen:
            self._skips_seen = skips  # several clicks before the loop takes one: one skip, as in A1111
            self.skip.set()

    def close(self) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify()
        self.join()

    def run(self) -> None:
        self._log_context.run(self._write_until_closed)

    def _write_until_closed(self) -> None:
        try:
            while True:
                with self._changed:
                    self._changed.wait_for(
                        lambda: self._latest != self._reported or self._preview is not None or self._closing,
                        timeout=max(self.interval, 0.05),  # no step for a while: still read the skip count
                    )
                    step, closing, preview = self._latest, self._closing, self._preview
                    self._preview = None
                if (step != self._reported or preview is not None) and not self.stopped.is_set():
                    self._reported = step
                    if not job_progress(job=self.job, attempt=self.attempt, step=step, preview=preview):
                        self.stopped.set()
                if not closing and not self.stopped.is_set():
                    self._read_skips()
                if closing:
                    return
                with self._changed:
                    self._changed.wait_for(lambda: self._closing, timeout=self.interval)
        finally:
            db_connection.close()  # this thread's own connection


def held_models(runtime: WorkerRuntime) -> list[str]:
    """The model keys on this worker's device (`inference/scheduler/keys.py`): its checkpoints, the
    base + refiner pairs it ran while it holds both, then its prompt-generation language models."""
    return (
        runtime.pipelines.loaded()
        + [model_key(base, refiner) for base, refiner in runtime.pipelines.loaded_pairs()]
        + [promptgen_model_key(sha256) for sha256 in runtime.promptgen.loaded()]
    )


def model_counters(runtime: WorkerRuntime, model_files: ModelFiles) -> dict[str, int]:
    """This worker process's model counters so far (`Worker.model_counters`): the runtime's checkpoint
    hits, loads and restores and promptgen loads, and its blob cache's hits, fetches and bytes."""
    return {**runtime.model_counts(), **model_files.counts()}


def batch_execute(
    *, jobs: list[tuple[str, int]], worker_name: str, runtime: WorkerRuntime, model_files: ModelFiles | None = None
) -> None:
    """Run the (public id, attempt) pairs this worker was handed as one batch. `model_files` is the
    worker process's (its model cache); none given: one from the settings (its state is on disk)."""
    model_files = model_files or ModelFiles.from_settings()
    rows = Job.objects.filter(public_id__in=[public_id for public_id, _ in jobs]).values_list("public_id", "kind", "batch_id")
    kinds = {public_id: kind for public_id, kind, _ in rows}
    batch_ids = sorted({batch_id for _, _, batch_id in rows if batch_id})
    # Every log line of the batch says which worker, batch and jobs it is about (config/logcontext.py).
    with log_context(worker=worker_name, batch=batch_ids, job=[public_id for public_id, _ in jobs]):
        _execute(jobs, kinds, worker_name=worker_name, runtime=runtime, model_files=model_files)


def _execute(
    jobs: list[tuple[str, int]], kinds: dict[str, str], *, worker_name: str, runtime: WorkerRuntime, model_files: ModelFiles
) -> None:
    try:
        expansions = [pair for pair in jobs if kinds.get(pair[0]) == Job.Kind.PROMPTGEN]
        if expansions:  # a language model's batch: its own runner (imported here: it imports this module)
            from inference.runner.promptgen import promptgen_execute

            promptgen_execute(jobs=expansions, worker_name=worker_name, runtime=runtime, model_files=model_files)
        others = [pair for pair in jobs if kinds.get(pair[0]) != Job.Kind.PROMPTGEN]
        if others:
            with model_files.batch():  # the batch's models are never evicted while it runs
                _run_batch(others, worker_name, runtime, model_files)
    finally:
        # Tell the scheduler what is loaded now, and take the next batch for this worker.
        worker_batch_done(
            name=worker_name, loaded_models=held_models(runtime), cached_models=runtime.pipelines.cached(),
            active_networks=runtime.held_network_key(), model_counters=model_counters(runtime, model_files),
        )


def _run_batch(jobs: list[tuple[str, int]], worker_name: str, runtime: WorkerRuntime, model_files: ModelFiles) -> None:
    """The stages of one batch, in order (each below, under its number)."""
    max_batch = settings.ATELIER_WORKER_MAX_BATCH
    # 1. Claim the jobs that are still ours, each with its typed spec and its images' positions.
    members = claim_members(
        jobs, worker_name=worker_name, runtime=runtime, max_batch=max_batch, model_files=model_files
    )
    if not members:
        return
    # 2. Build the runtime's spec: the members' inputs read from storage, then a pure mapping.
    try:
        spec = build_generation_spec(
            [member.part for member in members], max_batch=max_batch,
            inputs=[load_member_inputs(member.spec) for member in members], local_path=model_files.path,
        )
    except Exception as exc:  # noqa: BLE001 - a missing input or model key fails the batch, not the worker
        logger.exception("batch of %s could not be prepared", [m.job.public_id for m in members])
        finish_members(members, GenerationOutcome.failed(f"generation failed: {exc}"))
        return
    # 3. Generate, routing each step and preview to the job it belongs to.
    outcome = generate(spec, members, runtime)
    # 4. Store each job's images and finish it (succeeded, cancelled or failed), one by one.
    finish_members(members, outcome, spec.chunks())


# --- 1. claim ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberPart:
    """One job's share of a batch, as the pure spec builder sees it."""

    spec: JobSpec
    seeds: tuple[int, ...]
    images: range  # this job's positions in the batch's image list
    chunks: range  # the chunks those images fall in
    network_key: str = ""  # the Job row's: reported back as what the worker holds, never recomputed


@dataclass
class BatchMember:
    job: Job
    attempt: int
    part: MemberPart
    reporter: ProgressReporter
    skipped_chunks: set[int] = dataclasses.field(default_factory=set)  # chunks whose images it dropped

    @property
    def spec(self) -> JobSpec:
        return self.part.spec

    @property
    def request(self) -> GenerationRequest:
        return self.part.spec.request

    @property
    def images(self) -> range:
        return self.part.images

    @property
    def chunks(self) -> range:
        return self.part.chunks

    def step_in_job(self, chunk: int, step: int) -> int:
        steps = self.request.image_steps
        return (chunk - self.chunks.start) * steps + min(step, steps)  # PNDM reports one extra step


def job_spec_of(job: Job) -> JobSpec:
    """The job's spec as this worker runs it: version 1 as stored; version 0 (queued before specs
    were versioned: absolute paths) mapped to keys on this machine. `JobSpecError` otherwise."""
    params = job.params
    if isinstance(params, dict) and "version" not in params:
        try:
            return JobSpec.from_legacy(
                params,
                checkpoint=ModelRef(model_file_key(job.checkpoint_path), job.checkpoint_sha256),
                vae=ModelRef(model_file_key(job.vae_path), job.vae_sha256) if job.vae_path else None,
                key_of=model_file_key,
            )
        except (UnsafeModelKey, JobSpecError, KeyError, TypeError) as exc:
            raise JobSpecError(
                f"this job was queued before job specs were versioned and names a model this worker cannot find "
                f"({exc}): submit it again"
            ) from None
    return JobSpec.from_json(params)


def claim_members(
    jobs: list[tuple[str, int]], *, worker_name: str, runtime: WorkerRuntime, max_batch: int,
    model_files: ModelFiles | None = None,
) -> list[BatchMember]:
    """Claim each (public id, attempt) still ours, in order; an extras or interrogate job runs here
    on its own path, a job whose spec this worker cannot read is failed with the reason."""
    interval = settings.ATELIER_PROGRESS_INTERVAL_SECONDS
    model_files = model_files or ModelFiles.from_settings()
    members: list[BatchMember] = []
    layout = ChunkLayout(max_batch)
    for public_id, attempt in jobs:
        job = Job.objects.filter(public_id=public_id).first()
        if job is None:
            continue
        if job.kind == Job.Kind.EXTRAS:  # no pipeline: its own path (and never batched with others)
            # imported here: that module imports this one's PNG helpers
            from inference.runner.extras import extras_execute

            extras_execute(job=job, attempt=attempt, worker_name=worker_name, runtime=runtime, model_files=model_files)
            continue
        if job.kind == Job.Kind.INTERROGATE:  # no pipeline either: a caption or tags of one image
            from inference.runner.interrogate import interrogate_execute

            interrogate_execute(
                job=job, attempt=attempt, worker_name=worker_name, runtime=runtime, model_files=model_files
            )
            continue
        try:
            spec = job_spec_of(job)
        except JobSpecError as exc:
            claimed = job_claim(public_id=public_id, attempt=attempt, worker_name=worker_name, total_steps=0)
            if claimed is not None:
                job_fail(job=claimed, attempt=attempt, error=str(exc))
            continue
        with_job, images, chunks = layout.with_job(len(job.seeds), spec.request.images_per_iteration)
        claimed = job_claim(
            public_id=public_id, attempt=attempt, worker_name=worker_name,
            total_steps=spec.request.image_steps * len(chunks),
        )
        if claimed is None:  # not ours (any more): a stale or redelivered message
            continue
        part = MemberPart(
            spec=spec, seeds=tuple(claimed.seeds), images=images, chunks=chunks, network_key=claimed.network_key
        )
        members.append(BatchMember(claimed, attempt, part, ProgressReporter(claimed, attempt, interval)))
        layout = with_job
    return members


# --- 2. the runtime's spec -----------------------------------------------------------------------


@dataclass(frozen=True)
class MemberInputs:
    """A member's pictures, read from its owner's storage: init images and mask (img2img), and
    the ControlNet units' images."""

    init_images: tuple[Image.Image, ...] = ()
    mask: Image.Image | None = None
    latent_mask: Image.Image | None = None
    control_images: tuple[Image.Image, ...] = ()


def load_member_inputs(spec: JobSpec) -> MemberInputs:
    request = spec.request
    return MemberInputs(
        init_images=tuple(member_image_open(key) for key in request.init_images),
        mask=member_image_open(request.mask) if request.mask else None,
        latent_mask=member_image_open(request.latent_mask) if request.latent_mask else None,
        control_images=tuple(member_image_open(unit.image) for unit in request.controlnet_units),
    )


def chunk_layout(parts: list[MemberPart], max_batch: int) -> ChunkLayout:
    """The batch's chunks, as `claim_members` laid them out."""
    return layout_of([(len(part.images), part.spec.request.images_per_iteration) for part in parts], max_batch)


def preview_positions(parts: list[MemberPart], max_batch: int) -> tuple[int, ...]:
    """The images that get live previews: each job's first image in each chunk it spans, so
    every job of a shared batch is previewed from its own images and never from another's."""
    starts = chunk_layout(parts, max_batch).starts
    positions = set()
    for part in parts:
        for chunk in part.chunks:
            positions.add(max(part.images.start, starts[chunk]))
    return tuple(sorted(positions))


def build_generation_spec(
    parts: list[MemberPart], *, max_batch: int, inputs: list[MemberInputs], local_path: Callable[[ModelRef], str]
) -> GenerationSpec:
    """The runtime's `GenerationSpec` for a batch of job specs (pure: `inputs` are already read,
    `local_path` maps a model reference to this machine's file).

    Every member shares the batch key (size, steps, sampler, guidance, models, ControlNet units,
    face restoration), so those come from the first; prompts, seeds and init images are per image.
    """
    lead = parts[0].spec
    request = lead.request
    sampler = resolve_sampler(request.sampler_name, request.scheduler)
    return GenerationSpec(
        checkpoint_path=local_path(lead.checkpoint),
        checkpoint_sha256=lead.checkpoint.sha256,
        vae_path=local_path(lead.vae) if lead.vae else "",
        vae_sha256=lead.vae.sha256 if lead.vae else "",
        # Extra-network tags (<lora:…>) are instructions, not words for the text encoder.
        prompts=[extract_extra_networks(p.spec.request.prompt)[0] for p in parts for _ in p.images],
        negative_prompts=[extract_extra_networks(p.spec.request.negative_prompt)[0] for p in parts for _ in p.images],
        seeds=[seed for p in parts for seed in p.seeds],
        steps=_img2img_steps(request)[0],
        cfg_scale=request.cfg_scale,
        width=request.width,
        height=request.height,
        max_batch=max_batch,
        scheduler_class=sampler.scheduler_class,
        scheduler_kwargs=sampler.scheduler_kwargs,
        img2img=_img2img_inputs(parts, inputs) if request.kind == "img2img" else None,
        sd_upscale=_sd_upscale(lead, local_path),
        hires=_hires(parts, local_path) if request.hires else None,
        loras=[
            LoraSpec(path=local_path(n.model), sha256=n.model.sha256, te_weight=n.te_weight, unet_weight=n.unet_weight)
            for n in lead.networks if n.kind == "lora"
        ],
        hypernetworks=[(local_path(n.model), n.model.sha256, n.unet_weight) for n in lead.networks if n.kind == "hypernet"],
        embeddings=[(n.name, local_path(n.model), n.model.sha256) for n in lead.networks if n.kind == "embedding"],
        clip_skip=request.clip_skip,
        subseeds=[subseed for p in parts for subseed in p.spec.request.all_subseeds()],
        subseed_strength=request.subseed_strength,
        seed_resize_from=request.seed_resize_from,
        tiling=request.tiling,
        token_merging_ratio=request.token_merging_first_pass,  # in the batch key: every job's is the same
        deepcache=request.deepcache_first_pass,  # likewise
        noise_seed_deltas=[p.spec.request.eta_noise_seed_delta for p in parts for _ in p.images],
        sampler_parameters=request.sampler_parameters,
        controlnet=_control_units(lead, inputs[0].control_images, local_path),
        face_restoration=_face_restoration(lead, local_path),
        refiner=RefinerSpec(
            path=local_path(lead.refiner), sha256=lead.refiner.sha256, switch_at=request.refiner_switch_at,
            hires_passes=request.hires_refiner_pass,
        ) if lead.refiner is not None and request.refiner_runs else None,
        preview_images=preview_positions(parts, max_batch),
        chunk_starts=chunk_layout(parts, max_batch).starts,
        network_key=parts[0].network_key,  # every member shares it (part of the batch key)
    )


def _img2img_steps(request: GenerationRequest) -> tuple[int, float]:
    """The pipeline's (steps, denoising strength): as asked, or under A1111's `img2img_fix_steps`
    the stretched schedule that runs exactly `steps` (`a1111.generation.img2img_steps`)."""
    if request.kind == "img2img" and request.img2img_fix_steps:
        return img2img_steps(request.steps, request.denoising_strength)
    return request.steps, request.denoising_strength


def _hires(parts: list[MemberPart], local_path: Callable[[ModelRef], str]) -> HiresSpec:
    """The hires fix of a batch: the lead's settings (shared: the batch key), each image's own
    second-pass prompts (A1111's hr_prompt / hr_negative_prompt, "" for the first pass's), tags stripped."""
    lead = parts[0].spec
    request = lead.request
    upscaler = lead.upscaler
    hires_sampler = request.hires_sampler
    own_sampler = (hires_sampler.name, hires_sampler.schedule_label) != (request.sampler_name, request.scheduler)
    own_prompts = any(p.spec.request.hr_prompt or p.spec.request.hr_negative_prompt for p in parts)
    checkpoint = lead.hires_checkpoint
    return HiresSpec(
        width=request.hr_width, height=request.hr_height, upscaler=request.hr_upscaler,
        steps=request.hr_second_pass_steps or request.steps, denoising_strength=request.denoising_strength,
        upscaler_path=local_path(upscaler.model) if upscaler else "",
        upscaler_sha256=upscaler.model.sha256 if upscaler else "",
        prompts=[
            extract_extra_networks(p.spec.request.hires_prompt)[0] for p in parts for _ in p.images
        ] if own_prompts else [],
        negative_prompts=[
            extract_extra_networks(p.spec.request.hires_negative_prompt)[0] for p in parts for _ in p.images
        ] if own_prompts else [],
        scheduler_class=hires_sampler.scheduler_class if own_sampler else "",
        scheduler_kwargs=hires_sampler.scheduler_kwargs if own_sampler else {},
        checkpoint_path=local_path(checkpoint) if checkpoint else "",
        checkpoint_sha256=checkpoint.sha256 if checkpoint else "",
        token_merging_ratio=request.token_merging_hires_pass,
        deepcache=request.deepcache_hires_pass,
    )


def _img2img_inputs(parts: list[MemberPart], inputs: list[MemberInputs]) -> Img2ImgInputs:
    """Each image's init image (A1111: image i of a job uses init image i, cycling) and mask."""
    lead = parts[0].spec.request
    init_images: list[Image.Image] = []
    masks: list[Image.Image | None] = []
    latent_masks: list[Image.Image | None] = []
    for part, member_inputs in zip(parts, inputs, strict=True):
        sources = member_inputs.init_images
        for index in range(len(part.images)):  # SD upscale: every upscale of the first image, as A1111
            init_images.append(sources[0 if part.spec.request.sd_upscale else index % part.spec.request.batch_size % len(sources)])
            masks.append(member_inputs.mask)
            latent_masks.append(member_inputs.latent_mask)
    return Img2ImgInputs(
        init_images=init_images,
        masks=masks,
        latent_masks=latent_masks if any(mask is not None for mask in latent_masks) else [],
        denoising_strength=_img2img_steps(lead)[1],
        resize_mode=lead.resize_mode,
        noise_multiplier=lead.initial_noise_multiplier,
        inpaint=InpaintSettings(
            mask_blur_x=lead.mask_blur_x,
            mask_blur_y=lead.mask_blur_y,
            mask_round=lead.mask_round,
            inpainting_fill=lead.inpainting_fill,
            inpaint_full_res=lead.inpaint_full_res,
            inpaint_full_res_padding=lead.inpaint_full_res_padding,
            inpainting_mask_invert=lead.inpainting_mask_invert,
        ),
    )


def _sd_upscale(spec: JobSpec, local_path: Callable[[ModelRef], str]) -> SdUpscaleSpec | None:
    """The SD upscale script's settings (its model upscaler resolved at submit into `spec.upscaler`)."""
    run = spec.request.sd_upscale
    if run is None:
        return None
    return SdUpscaleSpec(
        scale_factor=run.scale_factor, overlap=run.overlap, upscaler=run.upscaler, batch_size=spec.request.batch_size,
        upscaler_path=local_path(spec.upscaler.model) if spec.upscaler else "",
        upscaler_sha256=spec.upscaler.model.sha256 if spec.upscaler else "",
    )


def _control_units(
    spec: JobSpec, images: tuple[Image.Image, ...], local_path: Callable[[ModelRef], str]
) -> list[ControlUnit]:
    """The ControlNet units (part of the batch key: every member has the same ones)."""
    return [
        ControlUnit.from_args(
            dataclasses.asdict(unit), model_path=local_path(model), model_sha256=model.sha256, image=image
        )
        for unit, model, image in zip(spec.request.controlnet_units, spec.controlnet_models, images, strict=True)
    ]


def _face_restoration(spec: JobSpec, local_path: Callable[[ModelRef], str]) -> FaceRestorationSpec | None:
    restorer = spec.face_restorer  # part of the batch key too
    if restorer is None:
        return None
    return FaceRestorationSpec(
        restorer=restorer.name, model_path=local_path(restorer.model), model_sha256=restorer.model.sha256,
        detector_path=local_path(restorer.detector), detector_sha256=restorer.detector.sha256,
        fidelity=restorer.weight,
    )


# --- 3. generate ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationOutcome:
    """What the pipeline produced for the whole batch (None where an image was dropped), or why it failed."""

    images: list[Image.Image | None]
    flagged: list[bool]
    control_maps: list[Image.Image]
    elapsed: float
    error: str | None = None

    @classmethod
    def failed(cls, error: str, elapsed: float = 0.0) -> GenerationOutcome:
        return cls(images=[], flagged=[], control_maps=[], elapsed=elapsed, error=error)


def generate(spec: GenerationSpec, members: list[BatchMember], runtime: WorkerRuntime) -> GenerationOutcome:
    """Run the batch; each step and preview goes to the jobs whose images it concerns, and a chunk
    whose jobs were all cancelled or skipped it is abandoned. A skip a job's reporter read is taken
    at the job's next step: that chunk's images of the job are dropped (`skipped_chunks`).
    A failure is the batch's outcome, never an exception."""

    def on_preview(chunk: int, position: int, image: Image.Image) -> None:
        # `image` is the preview of the image at `position` only: it goes to the job it belongs to.
        for member in members:
            if position in member.images and not member.reporter.stopped.is_set() and chunk not in member.skipped_chunks:
                member.reporter.preview(image)

    def on_step(chunk: int, step: int) -> None:
        in_chunk = [m for m in members if chunk in m.chunks]
        for member in in_chunk:
            if member.reporter.skip.is_set():
                member.reporter.skip.clear()
                member.skipped_chunks.add(chunk)
                member.reporter.report(member.step_in_job(chunk + 1, 0))  # its bar moves past the dropped images
        live = [m for m in in_chunk if not m.reporter.stopped.is_set() and chunk not in m.skipped_chunks]
        if not live:
            raise SkipChunk
        for member in live:
            member.reporter.report(member.step_in_job(chunk, step))

    for member in members:
        member.reporter.start()
    started = time.perf_counter()
    try:
        images, flagged = runtime.censor(runtime.generate(spec, on_step=on_step, on_preview=on_preview))
        control_maps = [prepare_control_image(unit, width=spec.width, height=spec.height) for unit in spec.controlnet]
        outcome = GenerationOutcome(images, flagged, control_maps, elapsed=time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001 - a batch's failure must never take the worker down
        logger.exception("batch of %s failed", [m.job.public_id for m in members])
        outcome = GenerationOutcome.failed(f"generation failed: {exc}", elapsed=time.perf_counter() - started)
    finally:
        for member in members:
            member.reporter.close()
    return outcome


# --- 4. store and finish -------------------------------------------------------------------------


def gpu_seconds_shares(elapsed: float, requests: list[GenerationRequest]) -> list[float]:
    """A batch's measured time split among its jobs pro rata by pixel-steps (a 1024² job of 30
    steps costs what its pixels × steps cost, not one image's share), the last job taking what the
    others leave, so the shares add up to `elapsed` exactly. By image count if none has any."""
    if not requests:
        return []
    weights = [request_pixel_steps(request) for request in requests]
    if sum(weights) <= 0:
        weights = [max(request.image_count, 1) for request in requests]
    total = sum(weights)
    shares = [elapsed * weight / total for weight in weights[:-1]]
    return [*shares, elapsed - sum(shares)]


def finish_members(members: list[BatchMember], outcome: GenerationOutcome, chunks: list[range] | None = None) -> None:
    """Each job's own images stored and the job finished; `job_fail` scrubs server paths from errors.
    `chunks`: the batch's chunks, for the images a skipped chunk drops (a job that skipped every
    chunk it had ends cancelled: nothing is left of it)."""
    shares = gpu_seconds_shares(outcome.elapsed, [member.request for member in members])
    for member, gpu_seconds in zip(members, shares, strict=True):
        job, attempt = member.job, member.attempt
        if outcome.error is not None:
            job_fail(job=job, attempt=attempt, error=outcome.error, gpu_seconds=gpu_seconds)
            continue
        dropped = {i for chunk in member.skipped_chunks for i in (chunks or [])[chunk]} if chunks else set()
        kept = [i for i in member.images if i not in dropped]
        mine = [outcome.images[i] for i in kept]
        if member.reporter.stopped.is_set() or not kept or any(image is None for image in mine):
            job_mark_cancelled(job=job, attempt=attempt, gpu_seconds=gpu_seconds)
            continue
        seeds = [job.seeds[i - member.images.start] for i in kept]
        infotexts = _infotexts(job, member.spec, seeds)
        folder = f"{_output_prefix(job, member.request)}/{job.created_at:%Y-%m-%d}"
        try:
            outputs = [
                store_png(f"{folder}/{job.public_id}-{index}.png", png_bytes(
                    image, infotext, compress_level=settings.ATELIER_PNG_COMPRESS_LEVEL, zlib_strategy=PLATFORM_ZLIB_STRATEGY,
                ))
                for index, (image, infotext) in enumerate(zip(mine, infotexts, strict=True))
            ]
            maps = _store_control_maps(folder, job, member.request, outcome.control_maps)
        except UnsafeOutputPath as exc:  # nothing is written outside the member's directory
            job_fail(job=job, attempt=attempt, error=str(exc), gpu_seconds=gpu_seconds)
            continue
        except Exception as exc:  # noqa: BLE001 - storage unreachable: the job ends failed, never stuck running
            logger.exception("job %s: its images could not be stored", job.public_id)
            job_fail(job=job, attempt=attempt, gpu_seconds=gpu_seconds,
                     error=f"the worker could not store the images: {storage_error(exc)}")
            continue
        censored = [index for index, position in enumerate(kept) if outcome.flagged[position]]
        if not job_succeed(
            job=job, attempt=attempt, outputs=outputs, infotexts=infotexts, gpu_seconds=gpu_seconds,
            censored=censored, control_maps=maps, seeds=seeds if dropped else None,
        ):
            logger.warning("job %s finished here but was no longer ours: result discarded", job.public_id)
            member_file_discard([*outputs, *maps])


def _infotexts(job: Job, spec: JobSpec, seeds: list[int]) -> list[str]:
    request = spec.request
    sampler = resolve_sampler(request.sampler_name, request.scheduler)
    model_name, _, hash_part = job.checkpoint_title.rpartition(" [")
    extra = img2img_infotext_params(request) if request.kind == "img2img" else hires_infotext_params(request)
    if job.vae_title:
        vae_name, _, vae_hash = job.vae_title.rpartition(" [")
        extra = {"VAE hash": vae_hash.rstrip("]"), "VAE": vae_name, **extra}
    extra = {**extra, **controlnet_infotext_entries(request.controlnet_units)}
    if request.sd_upscale:
        extra = {**extra, "SD upscale overlap": request.sd_upscale.overlap, "SD upscale upscaler": request.sd_upscale.upscaler}
    return [
        generation_infotext(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            steps=request.steps,
            sampler_name=sampler.name,
            schedule_label=sampler.effective_schedule_label,  # A1111 1.9+ writes the effective one
            cfg_scale=request.cfg_scale,
            seed=seed,
            width=request.width,
            height=request.height,
            model_hash=hash_part.rstrip("]") or None,
            model_name=model_name.rsplit(".", 1)[0] or None,
            extra={**extra, "Clip skip": request.clip_skip if request.clip_skip > 1 else None,
                   "ENSD": (request.eta_noise_seed_delta or None) if sampler.name in ENSD_SAMPLERS else None,
                   # A1111 names each pass's ratio only when it merges (the hires one with the hires fix only)
                   "Token merging ratio": request.token_merging_first_pass or None,
                   "Token merging ratio hr": request.token_merging_hires_pass or None,
                   "Face restoration": spec.face_restorer.name if spec.face_restorer else None,
                   "Tiling": True if request.tiling else None,
                   **request.sampler_parameters.infotext(sampler.name),
                   **_refiner_infotext(spec),
                   # the extension's one infotext key (its `deepcache_enable_pass`), when a pass cached
                   DEEPCACHE_INFOTEXT: request.deepcache_passes
                   if request.deepcache_first_pass or request.deepcache_hires_pass else None},
        )
        for seed in seeds
    ]


def _refiner_infotext(spec: JobSpec) -> dict[str, Any]:
    """A1111's `Refiner: <name [hash]>, Refiner switch at: 0.8`, when the refiner ran."""
    request = spec.request
    if spec.refiner is None or not request.refiner_runs:
        return {}
    # `job_submit` stored the refiner's A1111 short title ("name [hash10]") in the request
    return {
        "Refiner": request.refiner_checkpoint, "Refiner switch at": request.refiner_switch_at,
        # A1111 names the hires pass the refiner ran in only when it is not the default
        "Hires refiner": request.hires_refiner_pass if request.hires and request.hires_refiner_pass != "second pass" else None,
    }


def _store_control_maps(folder: str, job: Job, request: GenerationRequest, maps: list[Image.Image]) -> list[str]:
    """The detect maps the request asked for (the extension's `save_detected_map`), beside its images."""
    keys = []
    for index, (unit, control_map) in enumerate(zip(request.controlnet_units, maps, strict=True)):
        if unit.save_detected_map:
            buffer = io.BytesIO()
            control_map.save(buffer, format="PNG")
            keys.append(store_png(f"{folder}/{job.public_id}-controlnet-{index}.png", buffer.getvalue()))
    return keys


def _output_prefix(job: Job, request: GenerationRequest) -> str:
    """outputs/, or the PAI `save_dir` the request named (validated at submit: inside the member's directory)."""
    username = job.owner.get_username()
    return user_save_dir_key(username, request.save_dir) if request.save_dir else user_outputs_key(username)
