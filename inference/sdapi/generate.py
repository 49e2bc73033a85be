"""`/sdapi/v1/txt2img` and `/sdapi/v1/img2img`, with PAI-EAS's extras, over `job_submit`.

Each call becomes a `Job` like every other client's and holds the request open until that job
is finished (an async view: waiting costs no thread). A client that disconnects does not
cancel, as in A1111. Responses have A1111's shape: `images` (base64 PNGs with the infotext),
`parameters` (the request echoed with defaults filled in) and `info` (a JSON string).

PAI-EAS extras, read from `alwayson_scripts`: `sd_model_checkpoint` and `sd_vae` (per-request
model switch), `image_link` (img2img input by URL), `id_task` (echoed), `uid` (accepted; who
the caller is comes from the token, never from the body) and `save_dir`. With `save_dir` the
PNGs are written to that folder inside the caller's working directory and the response is
PAI's: `images: []` and `parameters` with `id_task`, `status`, `image_url`, `seed`,
`error_msg`, `total_time` and `image_mask_url` (the ControlNet detect maps).

ControlNet: `alwayson_scripts.controlnet.args` (sd-webui-controlnet's units, or PAI's with
`image_link`), see `inference/inputs/controlnet.py`. As the extension does, each unit's
detect map is appended to `images` after the generated ones (unless the unit says
`save_detected_map: false`).

Scripts: a `script_name` in `a1111.scripts.SCRIPTS` (X/Y/Z plot, prompt matrix, prompts from
file or textbox) runs as one job group (`inference/sdapi/scripts.py`); "sd upscale"
(`a1111.scripts.JOB_SCRIPTS`, img2img) is read into the one job's request (`_with_sd_upscale`);
an unknown one is a 422.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.http import HttpRequest

from inference.sdapi.adapter import SdapiError, json_object, sdapi
from inference.limits import generation_limits
from inference.inputs.controlnet import controlnet_infotext_entries, with_controlnet_inputs
from inference.events import job_group
from a1111.generation import GenerationRequest, parse_generation_request
from a1111.fields import RequestValidationError
from a1111.infotext import VERSION, img2img_infotext_params
from a1111.infotext_request import apply_infotext
from a1111.sd_upscale import is_sd_upscale, parse_sd_upscale_args
from a1111.options import A1111_OPTIONS, READ_ONLY, override_settings_defaults
from inference.inputs.images import InputImages, read_input_images
from inference.jobspec import member_params_from_json
from inference.models import Job
from a1111.scripts import check_alwayson_scripts, check_script_args, find_script
from a1111.styles import StyleText, with_styles_applied
from inference.selectors import user_options_get
from inference.services import job_submit, user_options_update
from inference.storage import member_file_read
from tenants.selectors import prompt_style_texts_for_user
from tenants.workdirs import user_save_dir_key

# How often a waiting call re-reads its job if no event arrives (events can be lost).
WAIT_POLL_SECONDS = 1.0

COMMON_ECHO_DEFAULTS: dict[str, Any] = {
    "prompt": "", "negative_prompt": "", "styles": None, "seed": -1, "subseed": -1, "subseed_strength": 0,
    "seed_resize_from_h": -1, "seed_resize_from_w": -1, "sampler_name": None, "scheduler": None,
    "batch_size": 1, "n_iter": 1, "steps": 50, "cfg_scale": 7.0, "width": 512, "height": 512,
    "restore_faces": None, "tiling": None, "do_not_save_samples": False, "do_not_save_grid": False,
    "eta": None, "s_min_uncond": None, "s_churn": None, "s_tmax": None,
    "s_tmin": None, "s_noise": None, "override_settings": None, "override_settings_restore_afterwards": True,
    "refiner_checkpoint": None, "refiner_switch_at": None, "disable_extra_networks": False,
    "firstpass_image": None, "comments": None, "force_task_id": None,
    "sampler_index": "Euler", "script_name": None, "script_args": [], "send_images": True,
    "save_images": False, "alwayson_scripts": {}, "infotext": None,
}
TXT2IMG_ECHO_DEFAULTS: dict[str, Any] = {
    **COMMON_ECHO_DEFAULTS, "denoising_strength": None, "enable_hr": False, "firstphase_width": 0,
    "firstphase_height": 0, "hr_scale": 2.0, "hr_upscaler": None, "hr_second_pass_steps": 0,
    "hr_resize_x": 0, "hr_resize_y": 0, "hr_checkpoint_name": None, "hr_sampler_name": None,
    "hr_scheduler": None, "hr_prompt": "", "hr_negative_prompt": "",
}
IMG2IMG_ECHO_DEFAULTS: dict[str, Any] = {
    **COMMON_ECHO_DEFAULTS, "init_images": None, "resize_mode": 0, "image_cfg_scale": None, "mask": None,
    "mask_blur_x": 4, "mask_blur_y": 4, "mask_blur": None, "mask_round": True, "inpainting_fill": 0,
    "inpaint_full_res": True, "inpaint_full_res_padding": 0, "inpainting_mask_invert": 0,
    "initial_noise_multiplier": None, "latent_mask": None, "denoising_strength": 0.75,
    "include_init_images": False,
}

PAI_MODEL_KEYS = ("sd_model_checkpoint", "sd_vae")  # also read from alwayson_scripts (PAI-EAS)



async def wait_for_job(public_id: str) -> Job:
    """Until the job is finished: woken by its events, re-reading the row at least every second."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(job_group(public_id), channel)
    try:
        while True:
            job = await Job.objects.aget(public_id=public_id)
            if job.is_finished:
                return job
            try:
                await asyncio.wait_for(layer.receive(channel), timeout=WAIT_POLL_SECONDS)
            except asyncio.TimeoutError:
                pass
    finally:
        await layer.group_discard(job_group(public_id), channel)


def _with_member_defaults(
    user, generation: GenerationRequest, options: Mapping[str, Any] | None = None
) -> GenerationRequest:
    """No model or VAE named: the member's own options (`options`, when the caller read them
    already: `user_options_get` resolves their checkpoint, a scan of the model folders), as
    A1111's loaded model and VAE."""
    options = user_options_get(user) if options is None else options
    if generation.checkpoint is None and options["sd_model_checkpoint"]:
        generation = dataclasses.replace(generation, checkpoint=str(options["sd_model_checkpoint"]))
    if generation.vae is None and options.get("sd_vae"):
        generation = dataclasses.replace(generation, vae=str(options["sd_vae"]))
    clip_skip = options.get("CLIP_stop_at_last_layers")
    if "CLIP_stop_at_last_layers" not in generation.override_settings and isinstance(clip_skip, int) and clip_skip > 1:
        generation = dataclasses.replace(generation, clip_skip=min(clip_skip, 12))
    return generation


def _submit(
    user, generation: GenerationRequest, inputs: InputImages | None, priority: int = 0,
    options: Mapping[str, Any] | None = None,
) -> Job:
    return job_submit(
        user=user, request=_with_member_defaults(user, generation, options), inputs=inputs, priority=priority,
        degrade_missing_models=True,  # as A1111: unrestored / Lanczos, with a note in `info`
    )


def member_settings(user) -> dict[str, Any]:
    """The member's options a request's `override_settings` falls back to (`a1111/options.py`)."""
    return override_settings_defaults(user_options_get(user))


def _member_context(user, body: dict[str, Any]) -> tuple[dict[str, StyleText], dict[str, object]]:
    """The caller's styles (`styles_for_body`) and options (`user_options_get`), read in one go:
    one hop to the request's thread, and the options kept for the submit (`_with_member_defaults`)."""
    return styles_for_body(user, body), user_options_get(user)


def styles_for_body(user, body: dict[str, Any]) -> dict[str, StyleText]:
    """The styles the caller may use, when the body names any (else none: no query)."""
    return prompt_style_texts_for_user(user) if body.get("styles") else {}


def style_names(body: dict[str, Any]) -> list[str]:
    """The style names of a body already parsed (for `info.styles`)."""
    styles = body.get("styles")
    return [name for name in styles if isinstance(name, str)] if isinstance(styles, list) else []


def parse_generation_body(
    body: dict[str, Any], kind: str, styles: dict[str, StyleText] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> tuple[GenerationRequest, InputImages | None]:
    """A txt2img/img2img body as a request and its images (decoded, or fetched: blocking, run it
    off the event loop). `styles`: the caller's prompt styles (`styles_for_body`); the body's
    `styles` are merged into its prompts first, as A1111 does (an unknown name is a 422 naming
    it). `settings`: the member's options (`member_settings`), the defaults of the body's
    `override_settings`, so a request reads both in one place and its own settings win. Raises
    `RequestError` naming the field, or `SdapiError` (A1111's 404 for an img2img call without an
    image)."""
    limits = generation_limits()
    body = dict(apply_infotext(body, kind=kind))  # A1111 1.8+: what an infotext names, where the body is silent
    body = with_styles_applied(body, styles or {}, max_prompt_chars=limits.max_prompt_chars)
    override, alwayson = body.get("override_settings"), body.get("alwayson_scripts")
    if settings and (override is None or isinstance(override, Mapping)):
        # PAI-EAS names the model and VAE in alwayson_scripts: those come before the member's too
        named = [key for key in PAI_MODEL_KEYS if isinstance(alwayson, Mapping) and alwayson.get(key)]
        defaults = {key: value for key, value in settings.items() if key not in named}
        body = {**body, "override_settings": {**defaults, **(override or {})}}
    generation = parse_generation_request({**body, "kind": kind}, limits=limits, lenient_sampler=True)
    if kind == "img2img" and isinstance(override, Mapping) and override.get("token_merging_ratio"):
        # A1111: a request's own token_merging_ratio wins over the token_merging_ratio_img2img option
        generation = dataclasses.replace(generation, token_merging_ratio_img2img=0.0)
    generation = _with_sd_upscale(body, generation)
    inputs = None
    if kind == "img2img":
        alwayson = body.get("alwayson_scripts")
        has_link = isinstance(alwayson, dict) and alwayson.get("image_link")
        if body.get("init_images") is None and not has_link:
            raise SdapiError(404, "Init image not found: send init_images (base64, data URI or URL) or alwayson_scripts.image_link")
        inputs = read_input_images(body, max_images=generation.batch_size)
    # ControlNet units (alwayson_scripts.controlnet.args): validated, images decoded or fetched.
    return with_controlnet_inputs(body, generation, inputs)


# --- SD upscale (img2img's script_name "sd upscale", one of `a1111.scripts.JOB_SCRIPTS`) ---------


def _with_sd_upscale(body: dict[str, Any], generation: GenerationRequest) -> GenerationRequest:
    """The request with its SD upscale run when `script_name` names that script (422s name the
    `script_args` index at fault; `a1111/sd_upscale.py`). Other scripts are left to `_notes`."""
    if not is_sd_upscale(body.get("script_name")):
        return generation
    if generation.kind != "img2img":
        raise RequestValidationError("script_name", "SD upscale is an img2img script: call /sdapi/v1/img2img")
    run = parse_sd_upscale_args(body.get("script_args"), width=generation.width, height=generation.height)
    return dataclasses.replace(generation, sd_upscale=run)


def submit_generation(user, generation: GenerationRequest, inputs: InputImages | None, *, priority: int = 0) -> Job:
    """`job_submit` as /sdapi does it: the member's own default model, VAE and clip skip filled in."""
    return _submit(user, generation, inputs, priority)


def finished_job_response(
    job: Job, body: dict[str, Any], kind: str, *, absolute: Callable[[str], str], elapsed: float
) -> tuple[int, dict[str, Any]]:
    """The answer to a txt2img/img2img call whose job is finished, as PAI-EAS's asynchronous
    results carry it: the HTTP status the sync call would have had, and the JSON body, whose
    `parameters` always hold PAI's `id_task`, `status`, `image_url`, `seed`, `error_msg` and
    `total_time` (also for a failure: then `status` is 1 and `error_msg` says why).
    `absolute(path)` makes a URL of a path of this site."""
    eas = _eas_parameters(absolute, job, body, elapsed)
    alwayson = body.get("alwayson_scripts")
    if isinstance(alwayson, dict) and alwayson.get("save_dir"):
        return (500 if job.status == Job.Status.FAILED else 200), {"images": [], "parameters": eas, "info": ""}
    echo = echo_parameters(body, kind)
    if job.status == Job.Status.FAILED:
        return 500, {"images": [], "parameters": {**echo, **eas}, "info": ""}
    notes = _notes(body, GenerationRequest.from_json(job.params))
    if job.status == Job.Status.CANCELLED:
        notes.append("interrupted before any image was finished")
    send_images = body.get("send_images", True) is not False
    images = read_job_images(job, [*job.outputs, *job.control_maps]) if send_images else []
    return 200, {"images": images, "parameters": {**echo, **eas}, "info": _info(job, notes, style_names(body))}


def _notes(body: dict[str, Any], generation: GenerationRequest) -> list[str]:
    """What `info.notes` tells the caller: what A1111 would skip too for want of a model, and what to install."""
    notes: list[str] = []
    notes += generation.missing_models  # what A1111 would skip too, and what to install
    return notes


def read_job_images(job: Job, keys: list[str]) -> list[str]:
    """The stored images of `job` at `keys`, base64 as the sdapi answers carry them; a 404 when one
    of them was removed."""
    try:
        return [base64.b64encode(member_file_read(key)).decode() for key in keys]
    except FileNotFoundError:
        raise SdapiError(404, f"an image of job {job.public_id} is no longer stored (its file was removed)") from None


def _title_parts(title: str) -> tuple[str | None, str | None]:
    """("name", "hash10") from an A1111 title "name.safetensors [hash10]"."""
    if not title:
        return None, None
    name, _, hash_part = title.rpartition(" [")
    return name.rsplit(".", 1)[0], hash_part.rstrip("]")


def _info(job: Job, notes: list[str], styles: list[str]) -> str:
    params = job.params
    notes = notes + [f"image {index} was flagged by the NSFW censor and blurred" for index in job.censored]
    model_name, model_hash = _title_parts(job.checkpoint_title)
    vae_name, vae_hash = _title_parts(job.vae_title)
    seeds = list(job.seeds)
    count = len(seeds)
    request = GenerationRequest.from_json(params)
    restorer = member_params_from_json(params).get("face_restorer")
    extra = {"Schedule type": params["scheduler"]}
    if request.kind == "img2img":
        extra.update({k: v for k, v in img2img_infotext_params(request).items() if v is not None})
    extra.update(controlnet_infotext_entries(request.controlnet_units))
    return json.dumps({
        "prompt": params["prompt"], "all_prompts": [params["prompt"]] * count,
        "negative_prompt": params["negative_prompt"], "all_negative_prompts": [params["negative_prompt"]] * count,
        "seed": seeds[0] if seeds else params["seed"], "all_seeds": seeds,
        "subseed": params["subseed"], "all_subseeds": [params["subseed"] + i for i in range(count)],
        "subseed_strength": params["subseed_strength"],
        "width": params["width"], "height": params["height"], "sampler_name": params["sampler_name"],
        "cfg_scale": params["cfg_scale"], "steps": params["steps"], "batch_size": params["batch_size"],
        "restore_faces": request.restore_faces,
        "face_restoration_model": restorer["name"] if restorer else None,
        "sd_model_name": model_name, "sd_model_hash": model_hash,
        "sd_vae_name": vae_name, "sd_vae_hash": vae_hash, "seed_resize_from_w": request.seed_resize_from_w, "seed_resize_from_h": request.seed_resize_from_h,
        "denoising_strength": request.denoising_strength if request.kind == "img2img" else None,
        "extra_generation_params": extra,
        "index_of_first_image": 0, "infotexts": list(job.infotexts), "styles": styles,
        "job_timestamp": f"{job.created_at:%Y%m%d%H%M%S}", "clip_skip": request.clip_skip,
        "is_using_inpainting_conditioning": False, "version": VERSION,
        "id_task": job.public_id, "notes": notes, "nsfw_censored": list(job.censored),
    })


def _eas_parameters(absolute: Callable[[str], str], job: Job, body: dict[str, Any], elapsed: float) -> dict[str, Any]:
    """PAI-EAS's `parameters` for a `save_dir` call (see the seed document's examples)."""
    alwayson = body.get("alwayson_scripts") or {}
    workdir_prefix = user_save_dir_key(job.owner.get_username(), "")
    ok = job.status == Job.Status.SUCCEEDED
    return {
        "id_task": str(alwayson.get("id_task", job.public_id)),
        "status": 0 if ok else 1,
        # PAI answers paths on its mount; ours are URLs the same token can download, plus the
        # paths relative to the member's working directory (the folder they mount or sync).
        # Always the platform's URL (it checks the token, then streams the PNG, or on object
        # storage redirects to a short-lived signed URL of where it lies): a signed URL put here
        # would expire while the result waits in a queue.
        "image_url": ",".join(
            absolute(f"/api/v1/jobs/{job.public_id}/images/{index}") for index in range(len(job.outputs))
        ),
        "image_path": ",".join(key.removeprefix(workdir_prefix) for key in job.outputs),
        # ControlNet's preprocessed control images, downloadable by the owner only
        "image_mask_url": ",".join(
            absolute(f"/api/v1/jobs/{job.public_id}/control-maps/{index}")
            for index in range(len(job.control_maps))
        ),
        "seed": ",".join(str(seed) for seed in job.seeds) if ok else "",
        "error_msg": "" if ok else (job.error or "interrupted before any image was finished"),
        "total_time": round(elapsed, 2),
    }


async def _generate(request: HttpRequest, user, kind: str) -> dict[str, Any]:
    started = time.perf_counter()
    body = json_object(request)
    script = find_script(body.get("script_name"))  # an unknown one is a 422 before anything is read
    check_script_args(body.get("script_args"))
    check_alwayson_scripts(body.get("alwayson_scripts"))
    # URLs are fetched off the event loop and off Django's one sync thread (they may take seconds).
    styles, options = await sync_to_async(_member_context)(user, body)
    settings = override_settings_defaults(options)
    generation, inputs = await sync_to_async(parse_generation_body, thread_sensitive=False)(body, kind, styles, settings)
    if kept := kept_settings(body):  # A1111: the overrides stay the member's options
        await sync_to_async(user_options_update)(user=user, values=kept)
        options = None  # changed: the submit reads them again
    if script is not None:
        from inference.sdapi.scripts import run_script  # it builds on this module's helpers

        return await run_script(user, body, kind, script, generation, inputs)
    job = await sync_to_async(_submit)(user, generation, inputs, options=options)  # validates models and extra networks too
    notes = _notes(body, GenerationRequest.from_json(job.params))  # with what job_submit found missing
    job = await wait_for_job(job.public_id)
    if generation.save_dir:
        parameters = await sync_to_async(_eas_parameters)(
            request.build_absolute_uri, job, body, time.perf_counter() - started
        )
        return {"images": [], "parameters": parameters, "info": ""}
    if job.status == Job.Status.FAILED:  # the worker could not generate: A1111 answers 500 too
        raise SdapiError(500, f"job {job.public_id} failed: {job.error}", "GenerationFailed")
    if job.status == Job.Status.CANCELLED:  # interrupted: A1111 returns 200 with what it has
        notes.append("interrupted before any image was finished")
    send_images = body.get("send_images", True) is not False
    # The images, then the ControlNet detect maps (as the extension appends them).
    images = await sync_to_async(read_job_images)(job, [*job.outputs, *job.control_maps]) if send_images else []
    return {"images": images, "parameters": echo_parameters(body, kind), "info": _info(job, notes, style_names(body))}


def kept_settings(body: Mapping[str, Any]) -> dict[str, Any]:
    """With `override_settings_restore_afterwards: false`, A1111 leaves the request's overrides set
    after the job: here they become the member's stored options (the keys A1111's options object
    has; the others are ignored, as when generating). Stored before the job is submitted, as A1111
    applies them before it samples; a value of the wrong type is a 422 naming it."""
    override = body.get("override_settings")
    if body.get("override_settings_restore_afterwards", True) is not False or not isinstance(override, Mapping):
        return {}
    return {key: value for key, value in override.items() if key in A1111_OPTIONS and key not in READ_ONLY}


def echo_parameters(body: dict[str, Any], kind: str) -> dict[str, Any]:
    """`parameters`: the request echoed with A1111's defaults filled in."""
    defaults = IMG2IMG_ECHO_DEFAULTS if kind == "img2img" else TXT2IMG_ECHO_DEFAULTS
    echo = {**defaults, **{k: v for k, v in body.items() if k in defaults}}
    if kind == "img2img" and not body.get("include_init_images"):
        echo["init_images"], echo["mask"] = None, None  # A1111 leaves them out of the echo
    alwayson = body.get("alwayson_scripts")
    if isinstance(alwayson, dict) and "id_task" in alwayson:
        echo["id_task"] = str(alwayson["id_task"])
    return echo


@sdapi("POST")
async def txt2img(request: HttpRequest, user) -> dict:
    return await _generate(request, user, "txt2img")


@sdapi("POST")
async def img2img(request: HttpRequest, user) -> dict:
    return await _generate(request, user, "img2img")
