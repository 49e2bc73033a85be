"""Writes for jobs on the control plane: submit (generations, extras, promptgen, interrogate) and cancel (and a member's options).

The worker's side of a job's life (claim, progress, succeed, fail, cancelled) lives in
`inference/transitions.py`. Every transition is a compare-and-set UPDATE on (status, attempts):
a stale or redelivered Celery message, a worker declared dead that comes back, or a cancel
racing a completion can never move a job twice or record two sets of images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from inference.endings import job_ended
from inference.events import job_event_publish
from a1111.extras import (
    BUILTIN_RESIZERS,
    EXTRAS_KIND,
    ExtrasRequest,
    check_output_sizes,
    with_inputs,
)
from a1111.deepcache import DEEPCACHE_OPTIONS, parse_deepcache_options
from a1111.deepcache import input_block_count as deepcache_input_blocks
from a1111.generation import (
    HIRES_UPSCALERS,
    MAX_SEED,
    MAX_TOKEN_MERGING_RATIO,
    TOKEN_MERGING_OPTIONS,
    GenerationRequest,
    RequestValidationError,
    batch_key,
    parse_face_restoration,
)
from a1111.interrogate import INTERROGATE_KIND, InterrogateRequest, InterrogateSettings
from a1111.promptgen import PROMPTGEN_KIND, PromptgenRequest
from a1111.sd_upscale import BUILTIN_UPSCALERS, tile_count, upscaled_size
from a1111.upscalers import A1111_MODEL_UPSCALERS
from inference.inputs.images import ExtrasInputs, InputImages
from inference.interrogate_models import interrogate_models_resolve
from inference.jobspec import JobSpec, ModelRef, request_to_spec
from inference.model_blobs import model_params_publish
from inference.model_registry import (
    FAMILY_TITLES,
    SDXL_LATENT_FAMILIES,
    ModelEntry,
    ModelNotFound,
    checkpoint_family,
    checkpoint_resolve_for_user,
    controlnet_resolve_for_user,
    face_detector_for_user,
    face_restorer_resolve_for_user,
    model_access_for_user,
    model_list_for_user,
    promptgen_resolve_for_user,
    upscaler_resolve_for_user,
    upscalers_for_user,
    vae_resolve_for_user,
)
from inference.models import Job, JobGroup, new_job_id
from a1111.prompts import ExtraNetwork, PromptError, find_embeddings, lora_key, parse_prompt
from inference.scheduler.keys import model_key, network_key, promptgen_batch_key, promptgen_model_key
from inference.storage import UnsafeOutputPath, member_file_save, model_file_key
from a1111.errors import Forbidden, TooMany
from tenants.access import ModelAccess, model_access_with
from tenants.models import Membership, Tenant
from tenants.quotas import (
    QuotaExceeded,
    Terms,
    check_request_limits,
    demand_of,
    quota_check,
    quota_needs_lock,
    terms_for_membership,
)
from tenants.selectors import membership_for_user
from tenants.workdirs import user_inputs_key

logger = logging.getLogger(__name__)


class NotAMember(Forbidden):
    """Only members of a tenant submit jobs: their tenant is billed for them."""


class TooManyQueuedJobs(TooMany):
    """The member already has `ATELIER_MAX_QUEUED_JOBS_PER_USER` jobs waiting (adapters: a 429)."""


def _check_queue_room(user: AbstractUser) -> None:
    """Refuse a new job while the member has the most jobs allowed waiting (queued or dispatched).

    Running jobs are capped by the scheduler; this caps what waits, so one member cannot fill
    the queue (and the database) with thousands of jobs. Checked before the job is stored: a
    burst of simultaneous submissions may pass it by the number submitted at the same instant.
    """
    limit = settings.ATELIER_MAX_QUEUED_JOBS_PER_USER
    waiting = Job.objects.filter(owner=user, status__in=[Job.Status.QUEUED, Job.Status.DISPATCHED]).count()
    if waiting >= limit:
        raise TooManyQueuedJobs(
            f"you already have {waiting} jobs waiting, the most allowed (ATELIER_MAX_QUEUED_JOBS_PER_USER={limit}): "
            "wait for some to finish or cancel them"
        )


class QueuedJobsQuotaFull(TooManyQueuedJobs):
    """The member's or team's `user_queued_jobs` / `tenant_queued_jobs` is full (429; an EAS item waits)."""


def _member_terms(user: AbstractUser, doing: str) -> tuple[Membership, Terms]:
    """The member's membership (`NotAMember` outside any tenant) and the terms in force for them."""
    membership = membership_for_user(user)
    if membership is None:
        raise NotAMember(f"{user.get_username()} is not a member of any tenant, so cannot {doing}")
    return membership, terms_for_membership(membership)


def _quota_transaction(terms: Terms) -> AbstractContextManager:
    """The transaction a quota check and its job's INSERT share: only where the check locks the
    tenant's row (a rate or queued limit in force); otherwise the INSERT commits alone, as before."""
    return transaction.atomic() if quota_needs_lock(terms.limits) else nullcontext()


def _quota_checked(user: AbstractUser, membership: Membership, request: Any, terms: Terms) -> None:
    """`quota_check` in the caller's transaction (the one that inserts the job: it locks the
    tenant's row when a rate or queue limit is in force); a full queued cap as `TooManyQueuedJobs`."""
    try:
        quota_check(user=user, tenant=membership.tenant, request=request, membership=membership, terms=terms)
    except QuotaExceeded as exc:
        if not exc.waits:
            raise
        full = QueuedJobsQuotaFull(exc.message, field=exc.field)
        full.key, full.used, full.limit, full.resets_at, full.retry_after = (
            exc.key, exc.used, exc.limit, exc.resets_at, exc.retry_after)
        raise full from None


def job_submit(
    *, user: AbstractUser, request: GenerationRequest, inputs: InputImages | None = None, priority: int = 0,
    group: JobGroup | None = None, group_index: int | None = None, dispatch: bool = True,
    degrade_missing_models: bool = False,
) -> Job:
    """Store a validated request as a queued job and ask the scheduler to place it.

    img2img needs `inputs` (decoded by the adapter, see `inference/inputs/images.py`); they are stored
    in the member's own `inputs/` folder and the job refers to them by storage key. So are the
    ControlNet units' images (`inputs.controlnet_images`), whose models are resolved here too.

    Raises `ModelNotFound` for a checkpoint or VAE the user may not use, `NotAMember` for a
    user outside any tenant, `RequestValidationError` for anything else wrong with it.
    `priority` orders only this member's own jobs (higher first; the scheduler never lets it
    pass another member's fair share): the EAS queue's `_priority_=1`. `group`, `group_index`: the
    job is that cell of a job group (`inference/job_groups.py`), otherwise an ordinary job;
    `dispatch=False`: the caller wakes the dispatcher itself (once for all a group's cells).
    `degrade_missing_models` (the APIs, as A1111): `restore_faces` without a restorer installed
    runs unrestored, one of A1111's upscalers that is not installed upscales with Lanczos, each
    with a note in the request's `missing_models`; otherwise (the workspace, or with the operator's
    `ATELIER_STRICT_MISSING_MODELS`) they are `ModelNotFound` saying what to install.
    """
    from inference.dispatch_wake import dispatch_wake

    membership, terms = _member_terms(user, "generate")
    tenant = membership.tenant
    _check_queue_room(user)
    check_request_limits(terms.limits, demand_of(request))  # before anything is resolved or stored
    # The tenant, resolved once above, is handed to each model lookup (each folder scan would look it up again).
    # the team admin's model rules (read only when some apply) and the plan's checkpoints, once
    access = model_access_with(user, tenant, allowed_checkpoints=terms.allowed_checkpoints, has_rules=terms.has_model_rules)
    checkpoint = checkpoint_resolve_for_user(user, request.checkpoint, tenant=tenant, access=access)
    vae = vae_resolve_for_user(user, request.vae, tenant=tenant)
    refiner = _refiner_for_user(user, request, checkpoint, inputs)
    if refiner is not None:  # named as A1111's infotext names it: its short title
        request = dataclasses.replace(request, refiner_checkpoint=f"{refiner.model_name} [{refiner.hash10}]")
        if not request.refiner_runs:
            refiner = None  # switching at 1.0: the refiner never runs (A1111 loads nothing either)
    hires_checkpoint = _hires_checkpoint_for_user(user, request, checkpoint, refiner)
    if request.hr_checkpoint_name is not None:  # as A1111's infotext names it, or None when not a hires job
        hr_title = f"{hires_checkpoint.model_name} [{hires_checkpoint.hash10}]" if hires_checkpoint else None
        request = dataclasses.replace(request, hr_checkpoint_name=hr_title)
        if hires_checkpoint is not None and hires_checkpoint.sha256 == checkpoint.sha256:
            hires_checkpoint = None  # the first pass's own: no second model to load
    _check_deepcache_level(request, checkpoint, hires_checkpoint)
    request = dataclasses.replace(request, networks=_extra_networks_for_user(user, request, tenant=tenant, access=access))
    degrade = degrade_missing_models and not settings.ATELIER_STRICT_MISSING_MODELS
    if request.hires and request.hr_upscaler not in HIRES_UPSCALERS:
        request = _with_hires_upscaler(user, request, degrade=degrade)
    if request.sd_upscale:
        request = _with_sd_upscale_resolved(user, request, inputs)
    if request.restore_faces:
        request = _with_face_restorer(user, request, degrade=degrade)
    controlnets = _controlnet_models_for_user(user, request)  # before any file is stored
    if request.kind == "img2img":
        request = _with_stored_inputs(user, request, inputs)
    if controlnets:
        request = _with_controlnet_units(user, request, controlnets, inputs.controlnet_images if inputs else [])
    # what a worker must have loaded (not the VAE: see scheduler/keys.py), with the refiner: both
    # (or with the hires pass's own checkpoint: never both, see `_hires_checkpoint_for_user`)
    second = refiner or hires_checkpoint
    model = model_key(checkpoint.sha256, second.sha256 if second else "")
    networks = network_key(request.networks)
    vae_key = vae.sha256 if vae else ""
    # What the worker gets: model files by storage key, not by this machine's paths.
    spec = request_to_spec(
        request,
        checkpoint=ModelRef(model_file_key(checkpoint.path), checkpoint.sha256),
        vae=ModelRef(model_file_key(vae.path), vae.sha256) if vae else None,
        key_of=model_file_key,
        refiner=ModelRef(model_file_key(refiner.path), refiner.sha256) if refiner else None,
        hires_checkpoint=ModelRef(model_file_key(hires_checkpoint.path), hires_checkpoint.sha256) if hires_checkpoint else None,
    )
    model_params_publish(spec.to_json())  # in the blob store before any worker is asked to run it
    public_id = new_job_id()
    with _quota_transaction(terms):  # the quota's check and the job's INSERT, serialised per tenant
        _quota_checked(user, membership, request, terms)
        job = _job_create(
            request, spec, public_id=public_id, user=user, tenant=tenant, checkpoint=checkpoint, vae=vae, model=model,
            networks=networks, vae_key=vae_key, priority=priority, group=group, group_index=group_index,
        )
    if dispatch:
        dispatch_wake()
    return job


def _job_create(
    request: GenerationRequest, spec: JobSpec, *, public_id: str, user: AbstractUser, tenant: Tenant, checkpoint: ModelEntry,
    vae: ModelEntry | None, model: str, networks: str, vae_key: str, priority: int, group: JobGroup | None,
    group_index: int | None,
) -> Job:
    return Job.objects.create(
        public_id=public_id,
        owner=user,
        tenant=tenant,
        kind=request.kind,
        params=spec.to_json(),
        checkpoint_title=checkpoint.title,
        # The *_path columns hold the same storage keys as the spec (kept for admin and old rows;
        # no migration: a key is a shorter path). The spec in `params` is what a worker reads.
        checkpoint_path=spec.checkpoint.key,
        checkpoint_sha256=checkpoint.sha256,
        vae_title=vae.title if vae else "",
        vae_path=spec.vae.key if spec.vae else "",
        vae_sha256=vae_key,
        model_key=model,
        network_key=networks,
        # An SD upscale job runs alone: its tiles fill the pipeline calls.
        batch_key=f"sd-upscale:{public_id}" if request.sd_upscale else batch_key(
            request, model_key=model, lora_key=networks, vae_key=vae_key
        ),
        total_steps=request.image_steps * request.n_iter,
        seeds=request.all_seeds(),
        priority=priority,
        group=group,
        group_index=group_index,
    )


def _checkpoint_named(user: AbstractUser, field_name: str, name: str) -> ModelEntry:
    """A second checkpoint a request names (refiner, hires pass) among the member's own: an unknown
    one (or another member's) is a 422 naming the field, not the 404 of `sd_model_checkpoint`."""
    try:
        return checkpoint_resolve_for_user(user, name)
    except ModelNotFound:
        raise RequestValidationError(
            field_name, f"unknown checkpoint {name!r}; GET /sdapi/v1/sd-models lists the ones you may use"
        ) from None


def _refiner_for_user(
    user: AbstractUser, request: GenerationRequest, checkpoint: ModelEntry, inputs: InputImages | None
) -> ModelEntry | None:
    """The refiner checkpoint the request names (None: none).

    Its name must resolve like `sd_model_checkpoint` (A1111: "Could not find checkpoint"), and both
    models must be SDXL-family: the switch hands SDXL latents from the base to the refiner
    (`denoising_end` / `denoising_start`), so an SD 1.x/2.x base or a refiner of another latent
    space is refused naming `refiner_checkpoint`, as are the combinations the switch does not run
    (inpainting, ControlNet, SD upscale).
    """
    if request.refiner_checkpoint is None:
        return None
    refiner = _checkpoint_named(user, "refiner_checkpoint", request.refiner_checkpoint)
    if not request.refiner_runs:
        return refiner  # switching at 1.0: it never runs, so no check applies
    unsupported = (
        "inpainting (a mask)" if inputs is not None and inputs.mask is not None else
        "ControlNet units" if request.controlnet_units else
        "the SD upscale script" if request.sd_upscale else ""
    )
    if unsupported:
        raise RequestValidationError(
            "refiner_checkpoint", f"the refiner is not available with {unsupported} yet: send refiner_checkpoint \"None\""
        )
    base_family, refiner_family = checkpoint_family(checkpoint.path), checkpoint_family(refiner.path)
    if base_family != "sdxl":
        raise RequestValidationError(
            "refiner_checkpoint",
            f"a refiner needs an SDXL base model, and {checkpoint.title} is {FAMILY_TITLES[base_family]}: "
            "the switch hands SDXL latents to the refiner (SD 1.x/2.x refiners are not supported); "
            "choose an SDXL checkpoint or send refiner_checkpoint \"None\"",
        )
    if refiner_family not in SDXL_LATENT_FAMILIES:
        raise RequestValidationError(
            "refiner_checkpoint",
            f"{refiner.title} is {FAMILY_TITLES[refiner_family]}, another latent space than the SDXL base "
            f"{checkpoint.title}: choose an SDXL refiner or SDXL checkpoint",
        )
    return refiner


# Checkpoint families by latent space: a hires pass continues the first pass's latents (SD 1.x and
# 2.x share one autoencoder; SDXL has its own). An SDXL refiner cannot run a pass of its own.
LATENT_SPACES = {"sd1": "SD 1.x/2.x", "sd2": "SD 1.x/2.x", "sdxl": "SDXL"}


def _hires_checkpoint_for_user(
    user: AbstractUser, request: GenerationRequest, checkpoint: ModelEntry, refiner: ModelEntry | None
) -> ModelEntry | None:
    """The checkpoint `hr_checkpoint_name` names for the hires pass (None: the first pass's).

    It resolves like `sd_model_checkpoint` among the member's models, and must take the first
    pass's latents: a checkpoint of another latent space (SD 1.x/2.x vs SDXL) or an SDXL refiner is
    a 422 naming `hr_checkpoint_name`, as is one with a refiner that runs (a job needs at most two
    models). A file whose family cannot be read (a diffusers folder) is let through: the worker
    refuses a mismatch when it loads the pair.
    """
    if not request.hires or request.hr_checkpoint_name is None:
        return None
    entry = _checkpoint_named(user, "hr_checkpoint_name", request.hr_checkpoint_name)
    if entry.sha256 == checkpoint.sha256:
        return entry
    if refiner is not None and request.refiner_runs:
        raise RequestValidationError(
            "hr_checkpoint_name",
            "a hires checkpoint and a refiner together are not available yet: send one of them (refiner_checkpoint "
            "\"None\" or hr_checkpoint_name \"Use same checkpoint\")",
        )
    base_family, hires_family = checkpoint_family(checkpoint.path), checkpoint_family(entry.path)
    if hires_family == "sdxl-refiner":
        raise RequestValidationError(
            "hr_checkpoint_name",
            f"{entry.title} is an SDXL refiner: it cannot run the hires pass alone; name it in refiner_checkpoint, "
            "or choose an SDXL checkpoint",
        )
    if base_family and hires_family and LATENT_SPACES.get(base_family) != LATENT_SPACES.get(hires_family):
        raise RequestValidationError(
            "hr_checkpoint_name",
            f"{entry.title} is {FAMILY_TITLES[hires_family]} and {checkpoint.title} is {FAMILY_TITLES[base_family]}: "
            "the hires pass continues the first pass's latents, so choose a checkpoint of the same family",
        )
    return entry


def extras_submit(
    *, user: AbstractUser, request: ExtrasRequest, inputs: ExtrasInputs, degrade_missing_models: bool = False
) -> Job:
    """Queue A1111's Extras (upscale, restore faces) over the member's images as one job.

    The member's own, team or public files are resolved here (`ModelNotFound` for a model
    upscaler, or a restorer with a visibility over 0, they do not have); each output must fit
    `ATELIER_MAX_INPUT_PIXELS` (`RequestValidationError` naming the size field). The images are
    stored in the member's `inputs/` folder by content. The job needs no checkpoint (an empty
    `model_key`: any worker may run it) and its own batch key (it is never batched with another:
    its images run one after another anyway); it is billed and scheduled like any other.
    """
    from inference.dispatch_wake import dispatch_wake

    membership, terms = _member_terms(user, "run extras")
    tenant = membership.tenant
    _check_queue_room(user)
    check_output_sizes(request, inputs.sizes, max_pixels=settings.ATELIER_MAX_INPUT_PIXELS)
    request = _with_extras_models(user, request, degrade=degrade_missing_models and not settings.ATELIER_STRICT_MISSING_MODELS)
    keys = [_store_input(user, data) for data in inputs.images]
    request = with_inputs(request, keys=keys, names=inputs.names, sizes=inputs.sizes)
    model_params_publish(request.to_json())
    public_id = new_job_id()
    with _quota_transaction(terms):
        _quota_checked(user, membership, request, terms)
        job = Job.objects.create(
            public_id=public_id, owner=user, tenant=tenant, kind=EXTRAS_KIND, params=request.to_json(),
            checkpoint_title="", checkpoint_path="", checkpoint_sha256="", model_key="", network_key="",
            batch_key=f"extras:{public_id}", total_steps=len(keys),  # one step per image
        )
    dispatch_wake()
    return job


def _with_extras_models(user: AbstractUser, request: ExtrasRequest, *, degrade: bool) -> ExtrasRequest:
    """The Extras request with the files of its model upscalers, face restorers and detector.

    With `degrade`, what is not installed degrades as in A1111: one of A1111's own upscalers
    resizes with Lanczos, a face restorer is skipped, each with a note saying what to install;
    otherwise it is `ModelNotFound` naming the field. Any other upscaler name is refused, as
    A1111 refuses it."""
    resolved: dict[str, dict[str, str]] = {}
    notes: list[str] = []
    for slot in ("upscaler_1", "upscaler_2") if request.upscales else ():  # A1111 ignores both without upscaler_1
        name = getattr(request, slot)
        if name in BUILTIN_RESIZERS:  # "None", "Lanczos", "Nearest" need no file
            continue
        try:
            entry = upscaler_resolve_for_user(user, name, field=slot)
        except ModelNotFound as exc:
            if not degrade or name not in A1111_MODEL_UPSCALERS:
                raise
            notes.append(f"{slot} resized with Lanczos: {exc.message}")
            request = dataclasses.replace(request, **{slot: "Lanczos"})
            continue
        resolved[slot] = {"name": name, "key": model_file_key(entry.path), "sha256": entry.sha256}
    for restorer in request.restorers:
        field_name = f"{restorer.lower()}_visibility"
        try:
            _, entry = face_restorer_resolve_for_user(user, restorer, field=field_name)
        except ModelNotFound as exc:
            if not degrade:
                raise
            notes.append(f"{restorer} was not applied: {exc.message}")
            request = dataclasses.replace(request, **{field_name: 0.0})
            continue
        resolved[restorer] = {"name": restorer, "key": model_file_key(entry.path), "sha256": entry.sha256}
    if request.restorers:
        try:
            detector = face_detector_for_user(user)
        except ModelNotFound as exc:
            if not degrade:
                raise
            notes.append(f"faces were not restored: {exc.message}")
            request = dataclasses.replace(request, gfpgan_visibility=0.0, codeformer_visibility=0.0)
            resolved = {slot: model for slot, model in resolved.items() if slot not in ("GFPGAN", "CodeFormer")}
        else:
            resolved["detector"] = {"name": detector.name, "key": model_file_key(detector.path), "sha256": detector.sha256}
    return dataclasses.replace(request, resolved_models=resolved, missing_models=notes)


def promptgen_submit(*, user: AbstractUser, request: PromptgenRequest, priority: int = 0) -> Job:
    """Queue one prompt expansion (BeautifulPrompt) on the workers: `request.num_results` prompts.

    The model is resolved among the member's own, team and public promptgen folders
    (`ModelNotFound` naming `model` for one they may not use, `InvalidField` for one that is not
    a causal language model or holds pickled weights the platform refuses); the job stores its
    storage key and the weights' sha256, never this machine's path. A seed of -1 is drawn here, so
    the job records the seed it ran with. Its model key is the language model's (affinity to a
    worker holding it) and its batch key is the model's alone: the runtime samples each row with
    its own settings and seed, so any expansions on one model share a batch, from any member.
    """
    from inference.dispatch_wake import dispatch_wake

    membership, terms = _member_terms(user, "expand prompts")
    tenant = membership.tenant
    _check_queue_room(user)
    entry = promptgen_resolve_for_user(user, request.model)
    request = request.with_seed()
    params = {
        **request.to_dict(),
        "resolved_model": {
            "name": entry.name, "title": entry.title, "key": model_file_key(entry.path), "sha256": entry.sha256,
            "model_type": entry.model_type, "pickled": entry.pickled,
        },
    }
    model_params_publish(params)
    with _quota_transaction(terms):
        _quota_checked(user, membership, request, terms)
        job = Job.objects.create(
            owner=user, tenant=tenant, kind=PROMPTGEN_KIND, params=params,
            checkpoint_title="", checkpoint_path="", checkpoint_sha256="",
            model_key=promptgen_model_key(entry.sha256), network_key="",
            batch_key=promptgen_batch_key(entry.sha256),
            total_steps=request.max_length, seeds=[request.seed], priority=priority,
        )
    dispatch_wake()
    return job


def interrogate_submit(*, user: AbstractUser, model: str, image: bytes, size: tuple[int, int]) -> Job:
    """Queue A1111's interrogate of one image (`model` "clip" or "deepdanbooru", already parsed).

    The models are the public ones an operator placed (`inference/interrogate_models.py`):
    without them this is `ModelNotFound` naming `model` and what to install, before anything is
    stored or queued. The member's interrogate options are read now into the job
    (`a1111.interrogate.InterrogateSettings`), the image (a PNG the adapter decoded) is stored in
    their `inputs/` folder by content. Like an Extras job it needs no checkpoint (an empty
    `model_key`: any worker runs it) and has a batch key of its own (one image, never batched);
    one step, billed like any other job. The worker writes the caption to `Job.texts`, as
    promptgen writes its prompts.
    """
    from inference.dispatch_wake import dispatch_wake
    from inference.selectors import user_options_get

    membership, terms = _member_terms(user, "interrogate")
    tenant = membership.tenant
    _check_queue_room(user)
    chosen = InterrogateSettings.from_options(user_options_get(user))
    resolved = interrogate_models_resolve(model, skip_categories=chosen.clip_skip_categories)
    request = InterrogateRequest(
        model=model, image=_store_input(user, image, field="image"), size=size, settings=chosen,
        resolved_models=resolved,
    )
    model_params_publish(request.to_json())
    public_id = new_job_id()
    with _quota_transaction(terms):
        _quota_checked(user, membership, request, terms)
        job = Job.objects.create(
            public_id=public_id, owner=user, tenant=tenant, kind=INTERROGATE_KIND, params=request.to_json(),
            checkpoint_title="", checkpoint_path="", checkpoint_sha256="", model_key="", network_key="",
            batch_key=f"interrogate:{public_id}", total_steps=1,
        )
    dispatch_wake()
    return job


def _with_hires_upscaler(user: AbstractUser, request: GenerationRequest, *, degrade: bool) -> GenerationRequest:
    """The request with its hires-fix model upscaler's file. With `degrade`, one of A1111's own
    upscalers that is not installed becomes a Lanczos resize with a note saying what to install;
    otherwise (and for any name A1111 does not know) it is `ModelNotFound`."""
    try:
        upscaler = upscaler_resolve_for_user(user, request.hr_upscaler)
    except ModelNotFound as exc:
        if not degrade or request.hr_upscaler not in A1111_MODEL_UPSCALERS:
            raise
        note = f"the hires fix upscaled with Lanczos: {exc.message}"
        return dataclasses.replace(request, hr_upscaler="Lanczos", missing_models=[*request.missing_models, note])
    return dataclasses.replace(
        request, upscaler_model={"name": upscaler.name, "path": str(upscaler.path), "sha256": upscaler.sha256}
    )


def _with_face_restorer(user: AbstractUser, request: GenerationRequest, *, degrade: bool) -> GenerationRequest:
    """The request with its face restorer's files. Without them A1111 returns the image
    unrestored; with `degrade` so does this (with a note saying what to install), otherwise it is
    `ModelNotFound` naming what is missing."""
    try:
        restorer = _face_restorer_for_user(user, request)
    except ModelNotFound as exc:
        if not degrade:
            raise
        note = f"faces were not restored: {exc.message.removesuffix(', or send restore_faces: false')}"
        return dataclasses.replace(request, missing_models=[*request.missing_models, note])
    return dataclasses.replace(request, face_restorer=restorer)


def _face_restorer_for_user(user: AbstractUser, request: GenerationRequest) -> dict[str, Any]:
    """The restorer file, detector file and CodeFormer weight a "Restore faces" request runs with:
    what it names, else the member's options (A1111's `face_restoration_model`, `code_former_weight`)."""
    from inference.selectors import user_options_get

    options = user_options_get(user)
    name, entry = face_restorer_resolve_for_user(
        user, request.face_restoration_model, preferred=str(options["face_restoration_model"] or "")
    )
    detector = face_detector_for_user(user)
    weight = request.code_former_weight
    if weight is None:
        stored = options["code_former_weight"]
        weight = float(stored) if isinstance(stored, (int, float)) else 0.5
    return {
        "name": name, "path": str(entry.path), "sha256": entry.sha256,
        "detector_path": str(detector.path), "detector_sha256": detector.sha256, "weight": weight,
    }


def _with_stored_inputs(user: AbstractUser, request: GenerationRequest, inputs: InputImages | None) -> GenerationRequest:
    """The request with its init images and mask stored in the member's `inputs/` folder.

    Files are named by content, so the same picture sent a hundred times is stored once.
    """
    if inputs is None or not inputs.init_images:
        raise RequestValidationError("init_images", "img2img needs at least one init image")
    if len(inputs.init_images) > request.batch_size:
        raise RequestValidationError(
            "init_images", f"{len(inputs.init_images)} images for batch_size {request.batch_size}: send at most one per batch image"
        )
    return dataclasses.replace(
        request,
        init_images=[_store_input(user, data) for data in inputs.init_images],
        mask=_store_input(user, inputs.mask) if inputs.mask is not None else None,
        latent_mask=_store_input(user, inputs.latent_mask) if inputs.latent_mask is not None else None,
    )


def _with_sd_upscale_resolved(user: AbstractUser, request: GenerationRequest, inputs: InputImages | None) -> GenerationRequest:
    """SD upscale's upscaler index resolved against the member's `/sdapi/v1/upscalers` list (a model
    upscaler's file into `upscaler_model`), its output checked against `ATELIER_MAX_INPUT_PIXELS`
    and its tiles counted (for progress), from the first init image's size."""
    spec = request.sd_upscale
    assert spec is not None
    names = [*BUILTIN_UPSCALERS, *(name for name, _ in upscalers_for_user(user))]
    if spec.upscaler_index >= len(names):
        raise RequestValidationError(
            "script_args[2]",
            f"upscaler index {spec.upscaler_index} is not in GET /sdapi/v1/upscalers ({len(names)} upscalers: "
            f"0 to {len(names) - 1}, {', '.join(names)})",
        )
    name = names[spec.upscaler_index]
    if spec.upscaler_index >= len(BUILTIN_UPSCALERS):
        entry = upscaler_resolve_for_user(user, name, field="script_args[2]")
        request = dataclasses.replace(
            request, upscaler_model={"name": name, "path": str(entry.path), "sha256": entry.sha256}
        )
    spec = dataclasses.replace(spec, upscaler=name)
    if inputs is None or not inputs.sizes:
        raise RequestValidationError("init_images", "SD upscale needs an init image")
    width, height = upscaled_size(*inputs.sizes[0], spec)
    if width * height > settings.ATELIER_MAX_INPUT_PIXELS:
        raise RequestValidationError(
            "script_args[3]",
            f"the init image {inputs.sizes[0][0]}x{inputs.sizes[0][1]} would be upscaled to {width}x{height}, over the "
            f"{settings.ATELIER_MAX_INPUT_PIXELS} pixel limit: lower the scale factor",
        )
    tiles = tile_count(width, height, tile_w=request.width, tile_h=request.height, overlap=spec.overlap)
    return dataclasses.replace(request, sd_upscale=dataclasses.replace(spec, tiles=tiles))


def _store_input(user: AbstractUser, data: bytes, *, field: str = "init_images") -> str:
    """A PNG the member sent, stored in their `inputs/` folder under its content hash (once)."""
    key = f"{user_inputs_key(user.get_username())}/{hashlib.sha256(data).hexdigest()[:40]}.png"
    try:
        key = member_file_save(key, data, skip_if_stored=True)  # a racing twin's suffixed key holds the same bytes
    except UnsafeOutputPath:
        raise RequestValidationError(
            field, "your inputs folder leads outside your working directory (a symbolic link?): remove the link"
        ) from None
    return key


def _controlnet_models_for_user(user: AbstractUser, request: GenerationRequest) -> list[ModelEntry]:
    """The ControlNet file of each unit, among those the member may use (as for an unknown LoRA,
    an unknown one is a `RequestValidationError` naming the unit's field)."""
    entries = []
    for unit in request.controlnet_units:
        try:
            entries.append(controlnet_resolve_for_user(user, unit.model, unit.model_hash))
        except ModelNotFound as exc:
            raise RequestValidationError(f"{unit.field}.model", exc.message) from None
    return entries


def _with_controlnet_units(
    user: AbstractUser, request: GenerationRequest, entries: list[ModelEntry], images: list[bytes | None]
) -> GenerationRequest:
    """Each ControlNet unit with its model file and its image stored like an init image (a unit
    without an image, in img2img, uses the first init image)."""
    units = request.controlnet_units
    if len(images) != len(units) or any(data is None for data in images) and not request.init_images:
        field_name = next((f"{u.field}.image" for u, d in zip(units, images) if d is None), "alwayson_scripts.controlnet")
        raise RequestValidationError(field_name, "required (a base64 image, or image_link with a URL)")
    resolved = [
        dataclasses.replace(
            unit, model=entry.model_name, model_hash=entry.sha256[:8], model_path=str(entry.path),
            model_sha256=entry.sha256, image=_store_input(user, data) if data is not None else request.init_images[0],
        )
        for unit, entry, data in zip(units, entries, images, strict=True)
    ]
    return dataclasses.replace(request, controlnet_units=resolved)


NETWORK_FOLDERS = {"lora": "Lora", "lyco": "Lora", "hypernet": "hypernetworks"}


def _prompt_networks(field_name: str, text: str) -> list[ExtraNetwork]:
    """The extra-network tags of one prompt field; a malformed tag is a 422 naming the field."""
    try:
        return list(parse_prompt(text).extra_networks)
    except PromptError as exc:
        raise RequestValidationError(field_name, str(exc)) from None


def _networks_applied(networks: list[ExtraNetwork]) -> tuple[str, tuple[tuple[str, float], ...]]:
    """What a set of tags applies: the LoRA set (any order) and the hypernetworks in order."""
    return lora_key(networks), tuple((n.name, n.unet_weight) for n in networks if n.kind == "hypernet")


def _check_hires_networks(request: GenerationRequest, first_pass: list[ExtraNetwork]) -> None:
    """The hires pass applies the first pass's networks: the tags of `hr_prompt` and
    `hr_negative_prompt` must name the same ones, with the same weights. A1111 1.10 applies the
    hires prompt's own tags to the second pass (none there: no network), so a hires prompt without
    the prompt's tags would mean another image than the one made here: a 422 naming the field."""
    second_pass: list[ExtraNetwork] = []
    for field_name, given, text in (
        ("hr_prompt", request.hr_prompt, request.hires_prompt),
        ("hr_negative_prompt", request.hr_negative_prompt, request.hires_negative_prompt),
    ):
        second_pass.extend(_prompt_networks(field_name if given else field_name[3:], text))
    if request.disable_extra_networks or _networks_applied(second_pass) == _networks_applied(first_pass):
        return
    raise RequestValidationError(
        "hr_prompt" if request.hr_prompt or not request.hr_negative_prompt else "hr_negative_prompt",
        "the hires prompt must use the first pass's LoRAs and hypernetworks: repeat the prompt's <lora:…>/<hypernet:…> "
        "tags with the same weights (A1111 applies the hires prompt's own tags to the second pass; networks other "
        "than the first pass's are not available there), or send disable_extra_networks",
    )


def _extra_networks_for_user(
    user: AbstractUser, request: GenerationRequest, *, tenant: Tenant | None, access: ModelAccess | None = None,
) -> list[dict]:
    """The prompts' `<lora:…>` / `<hypernet:…>` tags, each resolved to a file the user may use
    (none with `disable_extra_networks`: the tags are only stripped), and the embeddings the prompts
    name, the hires pass's prompts included. A network folder is scanned only when a tag names
    one of its kind; the embeddings folder always (any word of a prompt may name one). A LoRA the
    team's admin does not allow the member is `ModelDenied` (403) naming `prompt`."""
    networks: list[ExtraNetwork] = []
    for field_name, text in (("prompt", request.prompt), ("negative_prompt", request.negative_prompt)):
        networks.extend(_prompt_networks(field_name, text))
    if request.hires:
        _check_hires_networks(request, networks)
    if request.disable_extra_networks:
        networks = []
    wanted = {NETWORK_FOLDERS[network.kind] for network in networks if network.kind in NETWORK_FOLDERS}
    entries = {folder: model_list_for_user(user, folder, tenant=tenant, include_denied=True) for folder in wanted}
    if "Lora" in wanted and access is None:
        access = model_access_for_user(user, tenant=tenant)
    resolved = []
    for network in networks:
        folder = NETWORK_FOLDERS.get(network.kind)
        if folder is None:
            continue  # other extra networks (e.g. <textual_inversion:…>) are not files we load
        # A1111 matches a tag by file stem; a name in a subfolder matches by its stem too.
        entry = next(
            (e for e in entries[folder] if network.name in (e.model_name, e.model_name.rsplit("/", 1)[-1])), None
        )
        if entry is None:
            raise RequestValidationError(
                "prompt", f"unknown {network.kind} {network.name!r}: put it in your models/{folder} folder, or pick one you have"
            )
        if folder == "Lora" and access is not None:
            access.check("lora", entry.name, field="prompt")
        resolved.append({
            "kind": "hypernet" if network.kind == "hypernet" else "lora", "name": network.name,
            "path": str(entry.path), "sha256": entry.sha256,
            "te_weight": network.te_weight, "unet_weight": network.unet_weight,
        })
    # Textual-inversion embeddings are named by their file stem anywhere in either prompt.
    by_name = {e.model_name.rsplit("/", 1)[-1]: e for e in reversed(model_list_for_user(user, "embeddings", tenant=tenant))}
    texts = [request.prompt, request.negative_prompt]
    if request.hires:
        texts += [request.hires_prompt, request.hires_negative_prompt]
    for text in texts:
        for name in find_embeddings(text, by_name):
            entry = by_name[name]
            if not any(n["kind"] == "embedding" and n["name"] == name for n in resolved):
                resolved.append({
                    "kind": "embedding", "name": name, "path": str(entry.path), "sha256": entry.sha256,
                    "te_weight": 1.0, "unet_weight": 1.0,
                })
    return resolved


def job_cancel(*, job: Job) -> Job:
    """Cancel: a queued or dispatched job never starts; a running one stops at its next step."""
    now = timezone.now()
    stopped = Job.objects.filter(pk=job.pk, status__in=[Job.Status.QUEUED, Job.Status.DISPATCHED]).update(
        status=Job.Status.CANCELLED, finished_at=now, cancel_requested=True
    )
    if not stopped:
        Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING).update(cancel_requested=True)
    job.refresh_from_db()
    if stopped:
        job_event_publish(job)
        job_ended(job)
    return job


def job_skip(*, job: Job) -> Job:
    """A1111's Skip: a running job drops the images it is making now (its current chunk, one
    iteration of its batch count) and goes on with the rest. The worker reads the request with the
    job's progress (`inference/runner/batch.py`); a job not running is left as it is."""
    Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, cancel_requested=False).update(
        skip_requested=F("skip_requested") + 1
    )
    job.refresh_from_db()
    return job


def _check_deepcache_level(request: GenerationRequest, checkpoint: ModelEntry, hires_checkpoint: ModelEntry | None) -> None:
    """A DeepCache level must name an input block of the UNet each caching pass runs on: the
    parser takes the extension's 0-10, but SDXL's UNet has 9 (0-8). A 422, not a failed job."""
    passes = ((checkpoint, request.deepcache_first_pass), (hires_checkpoint or checkpoint, request.deepcache_hires_pass))
    for entry, plan in passes:
        if plan is None:
            continue
        family = checkpoint_family(entry.path)
        count = deepcache_input_blocks(family)
        if count is not None and plan.level >= count:
            raise RequestValidationError(
                "override_settings.deepcache_cache_resnet_level",
                f"{entry.title} is {FAMILY_TITLES[family]}, whose UNet has {count} input blocks: the DeepCache "
                f"level must be from 0 to {count - 1}, not {plan.level}",
            )


def _checked_options(values: dict[str, Any]) -> dict[str, Any]:
    """The options a member sets, each checked: a key A1111 1.10 does not have is refused by name
    (A1111 answers a KeyError 500), a value of the wrong type names its key and the type; the
    read-only `sd_checkpoint_hash` is ignored, as it is in A1111 (the checkpoint sets it)."""
    from a1111.fields import read_float, read_int, read_str
    from a1111.options import READ_ONLY, check_option_value, unknown_options

    unknown = unknown_options(values)
    if unknown:
        shown = ", ".join(repr(key) for key in unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise RequestValidationError(
            unknown[0], f"unknown option{'s' if len(unknown) > 1 else ''} {shown}: GET /sdapi/v1/options lists every key"
        )
    checked: dict[str, Any] = {}
    for key, value in values.items():
        if key in READ_ONLY:
            continue
        try:
            checked[key] = check_option_value(key, value)
        except ValueError as exc:
            raise RequestValidationError(key, str(exc)) from None
    # The options the platform applies keep the bounds a request's override_settings has.
    if "CLIP_stop_at_last_layers" in checked:
        checked["CLIP_stop_at_last_layers"] = read_int(checked, "CLIP_stop_at_last_layers", 1, 1, 12)
    if "eta_noise_seed_delta" in checked:
        checked["eta_noise_seed_delta"] = read_int(checked, "eta_noise_seed_delta", 0, 0, MAX_SEED)
    if "samples_format" in checked:
        checked["samples_format"] = read_str(checked, "samples_format", "png", 10)
    if "code_former_weight" in checked:
        checked["code_former_weight"] = read_float(checked, "code_former_weight", 0.5, 0.0, 1.0)
    for key in TOKEN_MERGING_OPTIONS:
        if key in checked:
            checked[key] = read_float(checked, key, 0.0, 0.0, MAX_TOKEN_MERGING_RATIO)
    if any(key in checked for key in DEEPCACHE_OPTIONS):  # the extension's bounds and choices
        deepcache = parse_deepcache_options(checked)
        checked.update({key: deepcache[key] for key in DEEPCACHE_OPTIONS if key in checked})
    return checked


def user_options_update(*, user: AbstractUser, values: dict) -> dict:
    """Set a member's own options: any key of A1111 1.10's options object (`a1111/options.py`),
    of its type (`RequestValidationError` naming the key otherwise; unknown keys too). A
    checkpoint or VAE must be one the member may use (`ModelNotFound` otherwise), a face restorer
    one A1111 has. Returns what is stored (only what the member set; the rest reads as A1111's
    defaults)."""
    from inference.models import UserOptions

    known = _checked_options(values)
    if known.get("sd_model_checkpoint") is not None:
        known["sd_model_checkpoint"] = checkpoint_resolve_for_user(user, str(known["sd_model_checkpoint"])).title
    if "sd_vae" in known:  # A1111 stores the file name, or "Automatic" / "None"
        vae = vae_resolve_for_user(user, str(known["sd_vae"] or "None"))
        known["sd_vae"] = vae.name if vae else (str(known["sd_vae"] or "None").strip() or "None")
    if "face_restoration_model" in known or "code_former_weight" in known:
        # the same checks as a request's override_settings
        checked = parse_face_restoration({"restore_faces": True}, known)
        known.update({
            key: checked[key] for key in ("face_restoration_model", "code_former_weight") if key in known
        })
    options, _ = UserOptions.objects.get_or_create(user=user)
    options.values = {**options.values, **known}
    options.save(update_fields=["values", "updated_at"])
    return options.values
