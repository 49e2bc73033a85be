"""Runs one dispatched batch inside a worker process: claim, generate, store PNGs, finish.

A batch is one or more jobs with the same batch key (possibly from different users) that
run as one pipeline call. Each job keeps its own progress, cancel and outcome: a cancelled
job is dropped from the batch (its images are discarded, the others carry on); only when
every job of a chunk is gone is the chunk abandoned. An Extras job (upscale, restore faces)
has a batch key of its own and runs without a pipeline (`inference/extras_execution.py`).

Output files are named by job and image index and written atomically, so a job run twice
(a redelivered message after a worker was wrongly declared dead) overwrites its own files
instead of adding a second set; only one run can record them (see `inference/services.py`).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import logging
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import connection as db_connection
from PIL import Image, PngImagePlugin

from inference.controlnet_requests import controlnet_infotext_entries
from inference.generation import GenerationRequest
from inference.infotext import (
    generation_infotext,
    hires_infotext_params,
    img2img_infotext_params,
)
from inference.models import Job
from inference.prompts import extract_extra_networks
from inference.samplers import SamplerChoice, resolve_sampler
from inference.storage import UnsafeOutputPath, member_file_open, member_file_save
from inference.transitions import (
    job_claim,
    job_fail,
    job_mark_cancelled,
    job_progress,
    job_succeed,
    worker_batch_done,
)
from inference.worker.controlnet import ControlUnit, prepare_control_image
from inference.worker.faces.restoration import FaceRestorationSpec
from inference.worker.img2img import InpaintSettings
from inference.worker.lora import LoraSpec
from inference.worker.runtime import (
    GenerationSpec,
    HiresSpec,
    Img2ImgInputs,
    SkipChunk,
    WorkerRuntime,
)
from tenants.workdirs import user_outputs_key, user_save_dir_key

logger = logging.getLogger(__name__)


def png_bytes(image: Image.Image, infotext: str, key: str = "parameters") -> bytes:
    """A PNG with the infotext in a text chunk: `parameters` for generations (A1111's key)."""
    info = PngImagePlugin.PngInfo()
    info.add_text(key, infotext)  # tEXt, or iTXt for non-Latin-1 prompts
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


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
    """

    def __init__(self, job: Job, attempt: int, interval: float) -> None:
        super().__init__(name=f"progress-{job.public_id}", daemon=True)
        self.job, self.attempt = job, attempt
        self.interval = interval
        self.stopped = threading.Event()
        self._latest = 0
        self._reported = 0
        self._preview: str | None = None  # the newest live preview not yet written (base64 JPEG)
        self._closing = False
        self._changed = threading.Condition()

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

    def close(self) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify()
        self.join()

    def run(self) -> None:
        try:
            while True:
                with self._changed:
                    self._changed.wait_for(
                        lambda: self._latest != self._reported or self._preview is not None or self._closing
                    )
                    step, closing, preview = self._latest, self._closing, self._preview
                    self._preview = None
                if (step != self._reported or preview is not None) and not self.stopped.is_set():
                    self._reported = step
                    if not job_progress(job=self.job, attempt=self.attempt, step=step, preview=preview):
                        self.stopped.set()
                if closing:
                    return
                with self._changed:
                    self._changed.wait_for(lambda: self._closing, timeout=self.interval)
        finally:
            db_connection.close()  # this thread's own connection


@dataclass
class BatchMember:
    job: Job
    attempt: int
    request: GenerationRequest
    images: range  # this job's positions in the batch's image list
    chunks: range  # the chunks those images fall in
    reporter: ProgressReporter

    def step_in_job(self, chunk: int, step: int) -> int:
        steps = self.request.sampling_steps
        return (chunk - self.chunks.start) * steps + min(step, steps)  # PNDM reports one extra step


def preview_positions(members: list[BatchMember], max_batch: int) -> tuple[int, ...]:
    """The images that get live previews: each job's first image in each chunk it spans, so
    every job of a shared batch is previewed from its own images and never from another's."""
    positions = set()
    for member in members:
        for chunk in member.chunks:
            positions.add(max(member.images.start, chunk * max_batch))
    return tuple(sorted(positions))


def _infotexts(job: Job, request: GenerationRequest, sampler: SamplerChoice) -> list[str]:
    model_name, _, hash_part = job.checkpoint_title.rpartition(" [")
    extra = img2img_infotext_params(request) if request.kind == "img2img" else hires_infotext_params(request)
    if job.vae_title:
        vae_name, _, vae_hash = job.vae_title.rpartition(" [")
        extra = {"VAE hash": vae_hash.rstrip("]"), "VAE": vae_name, **extra}
    extra = {**extra, **controlnet_infotext_entries(request.controlnet_units)}
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
                   "Face restoration": request.face_restorer["name"] if request.face_restorer else None,
                   "Tiling": True if request.tiling else None},
        )
        for seed in job.seeds
    ]


def _open_input(key: str) -> Image.Image:
    with member_file_open(key) as handle:
        image = Image.open(handle)
        image.load()
    return image


def _img2img_inputs(members: list[BatchMember]) -> Img2ImgInputs:
    """Each image's init image (A1111: image i of a job uses init image i, cycling) and mask."""
    lead = members[0].request
    init_images: list[Image.Image] = []
    masks: list[Image.Image | None] = []
    for member in members:
        sources = [_open_input(key) for key in member.request.init_images]
        mask = _open_input(member.request.mask) if member.request.mask else None
        for index in range(len(member.images)):
            init_images.append(sources[index % member.request.batch_size % len(sources)])
            masks.append(mask)
    return Img2ImgInputs(
        init_images=init_images,
        masks=masks,
        denoising_strength=lead.denoising_strength,
        resize_mode=lead.resize_mode,
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


def _control_units(request: GenerationRequest) -> list[ControlUnit]:
    return [
        ControlUnit.from_args(
            dataclasses.asdict(unit), model_path=unit.model_path, model_sha256=unit.model_sha256, image=_open_input(unit.image)
        )
        for unit in request.controlnet_units
    ]


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


def batch_execute(*, jobs: list[tuple[str, int]], worker_name: str, runtime: WorkerRuntime) -> None:
    """Run the (public id, attempt) pairs this worker was handed as one batch."""
    try:
        _run_batch(jobs, worker_name, runtime)
    finally:
        # Tell the scheduler what is loaded now, and take the next batch for this worker.
        worker_batch_done(
            name=worker_name, loaded_models=runtime.pipelines.loaded(), cached_models=runtime.pipelines.cached(),
            active_networks=runtime.held_network_key(),
        )


def _face_restoration(request: GenerationRequest) -> FaceRestorationSpec | None:
    restorer = request.face_restorer
    if not restorer:
        return None
    return FaceRestorationSpec(
        restorer=restorer["name"], model_path=restorer["path"], model_sha256=restorer["sha256"],
        detector_path=restorer["detector_path"], detector_sha256=restorer["detector_sha256"],
        fidelity=restorer["weight"],
    )


def _run_batch(jobs: list[tuple[str, int]], worker_name: str, runtime: WorkerRuntime) -> None:
    max_batch = settings.ATELIER_WORKER_MAX_BATCH
    interval = settings.ATELIER_PROGRESS_INTERVAL_SECONDS
    members: list[BatchMember] = []
    position = 0
    for public_id, attempt in jobs:
        job = Job.objects.filter(public_id=public_id).first()
        if job is None:
            continue
        if job.kind == Job.Kind.EXTRAS:  # no pipeline: its own path (and never batched with others)
            # imported here: that module imports this one's PNG helpers
            from inference.extras_execution import extras_execute

            extras_execute(job=job, attempt=attempt, worker_name=worker_name, runtime=runtime)
            continue
        request = GenerationRequest.from_json(job.params)
        images = range(position, position + len(job.seeds))
        chunks = range(images.start // max_batch, (images.stop - 1) // max_batch + 1)
        job = job_claim(
            public_id=public_id, attempt=attempt, worker_name=worker_name, total_steps=request.sampling_steps * len(chunks)
        )
        if job is None:  # not ours (any more): a stale or redelivered message
            continue
        members.append(BatchMember(job, attempt, request, images, chunks, ProgressReporter(job, attempt, interval)))
        position = images.stop
    if not members:
        return

    lead = members[0].request  # every member shares the batch key: size, steps, sampler, cfg, …
    sampler = resolve_sampler(lead.sampler_name, lead.scheduler)
    spec = GenerationSpec(
        checkpoint_path=members[0].job.checkpoint_path,
        checkpoint_sha256=members[0].job.checkpoint_sha256,
        vae_path=members[0].job.vae_path,
        vae_sha256=members[0].job.vae_sha256,
        # Extra-network tags (<lora:…>) are instructions, not words for the text encoder.
        prompts=[extract_extra_networks(m.request.prompt)[0] for m in members for _ in m.images],
        negative_prompts=[extract_extra_networks(m.request.negative_prompt)[0] for m in members for _ in m.images],
        seeds=[seed for m in members for seed in m.job.seeds],
        steps=lead.steps,
        cfg_scale=lead.cfg_scale,
        width=lead.width,
        height=lead.height,
        max_batch=max_batch,
        scheduler_class=sampler.scheduler_class,
        scheduler_kwargs=sampler.scheduler_kwargs,
        img2img=_img2img_inputs(members) if lead.kind == "img2img" else None,
        hires=HiresSpec(
            width=lead.hr_width, height=lead.hr_height, upscaler=lead.hr_upscaler,
            steps=lead.hr_second_pass_steps or lead.steps, denoising_strength=lead.denoising_strength,
            upscaler_path=lead.upscaler_model["path"] if lead.upscaler_model else "",
            upscaler_sha256=lead.upscaler_model["sha256"] if lead.upscaler_model else "",
        ) if lead.hires else None,
        loras=[
            LoraSpec(path=n["path"], sha256=n["sha256"], te_weight=n["te_weight"], unet_weight=n["unet_weight"])
            for n in lead.networks if n["kind"] == "lora"
        ],
        hypernetworks=[(n["path"], n["sha256"], n["unet_weight"]) for n in lead.networks if n["kind"] == "hypernet"],
        embeddings=[(n["name"], n["path"], n["sha256"]) for n in lead.networks if n["kind"] == "embedding"],
        clip_skip=lead.clip_skip,
        subseeds=[subseed for m in members for subseed in m.request.all_subseeds()],
        subseed_strength=lead.subseed_strength,
        tiling=lead.tiling,
        controlnet=_control_units(lead),  # part of the batch key: every member has the same units
        face_restoration=_face_restoration(lead),  # part of the batch key too
        preview_images=preview_positions(members, max_batch),
        network_key=members[0].job.network_key,  # every member shares it (part of the batch key)
    )

    def on_preview(chunk: int, position: int, image: Image.Image) -> None:
        # `image` is the preview of the image at `position` only: it goes to the job it belongs to.
        for member in members:
            if position in member.images and not member.reporter.stopped.is_set():
                member.reporter.preview(image)

    def on_step(chunk: int, step: int) -> None:
        in_chunk = [m for m in members if chunk in m.chunks]
        live = [m for m in in_chunk if not m.reporter.stopped.is_set()]
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
        error = None
    except Exception as exc:  # noqa: BLE001 - a batch's failure must never take the worker down
        logger.exception("batch of %s failed", [m.job.public_id for m in members])
        images, flagged, control_maps, error = [], [], [], f"generation failed: {exc}"
    elapsed = time.perf_counter() - started
    for member in members:
        member.reporter.close()

    total_images = len(spec.seeds)
    for member in members:
        job, attempt = member.job, member.attempt
        gpu_seconds = elapsed * len(member.images) / total_images  # the batch's time, shared by image
        if error is not None:
            job_fail(job=job, attempt=attempt, error=error, gpu_seconds=gpu_seconds)
            continue
        mine = [images[i] for i in member.images]
        if member.reporter.stopped.is_set() or any(image is None for image in mine):
            job_mark_cancelled(job=job, attempt=attempt, gpu_seconds=gpu_seconds)
            continue
        infotexts = _infotexts(job, member.request, sampler)
        folder = f"{_output_prefix(job, member.request)}/{job.created_at:%Y-%m-%d}"
        try:
            outputs = [
                store_png(f"{folder}/{job.public_id}-{index}.png", png_bytes(image, infotext))
                for index, (image, infotext) in enumerate(zip(mine, infotexts, strict=True))
            ]
            maps = _store_control_maps(folder, job, member.request, control_maps) if control_maps else []
        except UnsafeOutputPath as exc:  # nothing is written outside the member's directory
            job_fail(job=job, attempt=attempt, error=str(exc), gpu_seconds=gpu_seconds)
            continue
        censored = [index for index, position in enumerate(member.images) if flagged[position]]
        if not job_succeed(
            job=job, attempt=attempt, outputs=outputs, infotexts=infotexts, gpu_seconds=gpu_seconds,
            censored=censored, control_maps=maps,
        ):
            logger.warning("job %s finished here but was no longer ours: result discarded", job.public_id)
