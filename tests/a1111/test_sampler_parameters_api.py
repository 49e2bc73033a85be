"""A1111's sampler parameters through `/sdapi/v1` (eta, s_churn, s_tmin, s_tmax, s_noise,
s_min_uncond, img2img's initial_noise_multiplier): the request's values and the member's options,
the 422s naming the field, what they do to batching, and one job run on a worker with A1111's
infotext entries (issue 21, item 5)."""

from __future__ import annotations

import pytest

from a1111.generation import GenerationRequest, batch_key
from inference.models import Job
from inference.sdapi.generate import member_settings, parse_generation_body, submit_generation
from tests.security.conftest import run_on_a_worker

TINY = {"prompt": "a red barn", "steps": 3, "width": 64, "height": 64, "seed": 11}
WEBUIAPI_DEFAULTS = {"eta": 1.0, "s_churn": 0, "s_tmax": 0, "s_tmin": 0, "s_noise": 1}  # sent with every request


def parse(body: dict, settings: dict | None = None) -> GenerationRequest:
    return parse_generation_body(body, "img2img" if "init_images" in body else "txt2img", {}, settings or {})[0]


def test_the_request_wins_over_the_options_and_client_defaults_do_not_mask_them() -> None:
    options = {"eta_ancestral": 0.4, "eta_ddim": 0.2, "s_noise": 0.9, "s_churn": 3.0, "s_min_uncond": 2.0}
    euler_a = parse({**TINY, "sampler_name": "Euler a"}, options).sampler_parameters
    assert (euler_a.eta, euler_a.s_noise, euler_a.s_min_uncond) == (0.4, 0.9, 2.0)
    assert parse({**TINY, "sampler_name": "DDIM"}, options).sampler_parameters.eta == 0.2
    # A1111: a request's eta wins; webuiapi's s_noise 1 is A1111's default and leaves the option be
    asked = parse({**TINY, **WEBUIAPI_DEFAULTS, "sampler_name": "Euler a", "eta": 0.7}, options).sampler_parameters
    assert (asked.eta, asked.s_noise) == (0.7, 0.9)
    euler = parse({**TINY, **WEBUIAPI_DEFAULTS, "sampler_name": "Euler", "s_churn": 1.5, "s_tmax": 10}, options)
    assert (euler.sampler_parameters.s_churn, euler.sampler_parameters.s_tmax, euler.sampler_parameters.eta) == (1.5, 10.0, None)
    assert parse({**TINY, **WEBUIAPI_DEFAULTS, "sampler_name": "Euler a"}).sampler_parameters.eta is None  # eta 1: the default


def test_parameters_split_batches_only_where_the_sampler_uses_them() -> None:
    def key(body: dict) -> str:
        return batch_key(parse({**TINY, **body}), model_key="m", lora_key="")

    assert key({"sampler_name": "Euler", "eta": 0.3}) == key({"sampler_name": "Euler"})  # Euler takes no eta
    assert key({"sampler_name": "Euler a", "eta": 0.3}) != key({"sampler_name": "Euler a"})
    assert key({"sampler_name": "Euler", "s_churn": 1.0}) != key({"sampler_name": "Euler"})
    assert key({"s_min_uncond": 1.0}) != key({})
    image = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
    assert key({"init_images": [image], "initial_noise_multiplier": 0.8}) != key({"init_images": [image]})


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"eta": 1.5}, "eta"),
        ({"s_churn": -1}, "s_churn"),
        ({"s_noise": "loud"}, "s_noise"),
        ({"s_min_uncond": 99}, "s_min_uncond"),
        ({"override_settings": {"eta_ancestral": 2}}, "override_settings.eta_ancestral"),
        ({"override_settings": {"s_tmax": -3}}, "override_settings.s_tmax"),
    ],
)
def test_out_of_range_values_are_422s_naming_the_field(api, personas, tiny_checkpoint_path, body, field) -> None:
    response = api("alice").post("/sdapi/v1/txt2img", {**TINY, **body})
    assert response.status_code == 422, response.content
    assert f"{field}:" in response.json()["detail"]
    assert not Job.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_members_options_and_the_requests_values_reach_the_image_and_its_infotext(api, personas, tiny_checkpoint_path, one_torch_thread) -> None:
    alice = personas["alice"]
    assert api("alice").post("/sdapi/v1/options", {"eta_ancestral": 0.5, "s_min_uncond": 3.0}).status_code == 200
    assert api("alice").get("/sdapi/v1/options").json()["eta_ancestral"] == 0.5
    jobs = [
        submit_generation(alice, parse_generation_body({**TINY, **body}, "txt2img", {}, member_settings(alice))[0], None)
        for body in ({"sampler_name": "Euler a", **WEBUIAPI_DEFAULTS, "eta": None}, {"sampler_name": "Euler", "s_churn": 2.0, "s_noise": 0.95})
    ]
    for index, job in enumerate(jobs):
        run_on_a_worker([job], name=f"sampler-{index}")
        assert job.status == "succeeded", job.error
    ancestral, churned = (job.infotexts[0] for job in jobs)
    assert "Sampler: Euler a" in ancestral and "Eta: 0.5" in ancestral and "NGMS: 3.0" in ancestral
    assert "Sigma churn: 2.0" in churned and "Sigma noise: 0.95" in churned and "Eta" not in churned


INFOTEXT = (
    "a lighthouse at dusk\nNegative prompt: fog\nSteps: 3, Sampler: Euler a, Schedule type: Karras, CFG scale: 5.5, "
    "Seed: 42, Size: 64x96, Clip skip: 2, ENSD: 31337, Eta: 0.25, Sigma noise: 0.9, Hires upscale: 1.5, "
    "Hires steps: 2, Hires upscaler: Latent, Denoising strength: 0.6"
)


@pytest.mark.django_db
def test_an_infotext_fills_the_fields_and_settings_the_request_leaves_out() -> None:
    """A1111 1.8+'s `infotext` field: a field the body sends wins; a setting in override_settings too."""
    request = parse({"infotext": INFOTEXT, "steps": 2, "override_settings": {"eta_ancestral": 0.5}})
    assert (request.prompt, request.negative_prompt, request.seed, request.cfg_scale) == ("a lighthouse at dusk", "fog", 42, 5.5)
    assert (request.width, request.height, request.steps, request.sampler_name, request.scheduler) == (64, 96, 2, "Euler a", "Karras")
    assert (request.clip_skip, request.eta_noise_seed_delta) == (2, 31337)
    assert (request.sampler_parameters.eta, request.sampler_parameters.s_noise) == (0.5, 0.9)
    assert (request.hr_width, request.hr_height, request.hr_second_pass_steps, request.denoising_strength) == (96, 144, 2, 0.6)
    # webuiapi sends every field: only the settings come from the infotext, as on A1111
    sent = parse({**TINY, **WEBUIAPI_DEFAULTS, "sampler_name": "Euler", "infotext": INFOTEXT, "enable_hr": False})
    assert (sent.prompt, sent.steps, sent.hires, sent.clip_skip) == ("a red barn", 3, False, 2)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("infotext", "field"),
    [(7, "infotext"), ("a cat\nSteps: many, Sampler: Euler, Seed: 1", "infotext"), ("a cat\nSteps: 9999, Sampler: Euler, Seed: 1", "steps")],
)
def test_a_bad_infotext_is_a_422_naming_what_to_fix(api, personas, tiny_checkpoint_path, infotext, field) -> None:
    response = api("alice").post("/sdapi/v1/txt2img", {"infotext": infotext})
    assert response.status_code == 422, response.content
    assert f"{field}:" in response.json()["detail"]


def test_img2img_fix_steps_runs_every_step_and_splits_batches() -> None:
    image = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
    body = {**TINY, "steps": 10, "init_images": [image], "denoising_strength": 0.3}
    fixed, plain = parse(body, {"img2img_fix_steps": True}), parse(body)
    assert (fixed.img2img_fix_steps, fixed.sampling_steps, plain.sampling_steps) == (True, 10, 3)
    assert batch_key(fixed, model_key="m", lora_key="") != batch_key(plain, model_key="m", lora_key="")
    assert not parse({**TINY}, {"img2img_fix_steps": True}).img2img_fix_steps  # txt2img: no such thing


def test_overrides_kept_after_the_job_are_the_options_a1111_has() -> None:
    from inference.sdapi.generate import kept_settings

    override = {"s_noise": 0.9, "sd_checkpoint_hash": "x", "no_such_option": 1}
    assert kept_settings({"override_settings": override, "override_settings_restore_afterwards": False}) == {"s_noise": 0.9}
    assert kept_settings({"override_settings": override}) == {}  # A1111's default: restored afterwards
    assert kept_settings({"override_settings": None, "override_settings_restore_afterwards": False}) == {}


@pytest.mark.django_db
def test_internal_progress_follows_the_callers_own_task_only(api, personas, tiny_checkpoint_path) -> None:
    """A1111's `/internal/progress` by `force_task_id`: queued, running with its live preview (sent
    again only when it changed), completed; another member using the same id sees nothing of it."""
    from django.utils import timezone

    from inference.models import Worker
    from inference.transitions import job_claim, job_progress, job_succeed

    task = "task(k3j5x)"
    job = submit_generation(personas["alice"], parse({**TINY, "force_task_id": task}), None)

    def progress(who: str, **body) -> dict:
        response = api(who).post("/internal/progress", {"id_task": task, **body})
        assert response.status_code == 200, response.content
        return response.json()

    assert progress("alice")["queued"] is True and progress("alice")["active"] is False
    worker = Worker.objects.create(name="w@task", queue="q.task", last_heartbeat=timezone.now())
    Job.objects.filter(pk=job.pk).update(status=Job.Status.DISPATCHED, worker=worker, attempts=1)
    job = job_claim(public_id=job.public_id, attempt=1, worker_name=worker.name, total_steps=3)
    assert job_progress(job=job, attempt=1, step=2, preview="cHJldmlldw==")
    running = progress("alice")
    assert running["active"] and running["live_preview"] == "data:image/jpeg;base64,cHJldmlldw==" and running["id_live_preview"] == 2
    assert progress("alice", id_live_preview=2)["live_preview"] is None  # already seen
    stranger = progress("charlie")  # the same id, another member: as an unknown task
    assert (stranger["active"], stranger["queued"], stranger["completed"], stranger["textinfo"]) == (False, False, False, "Waiting...")
    assert job_succeed(job=job, attempt=1, outputs=[], infotexts=[], gpu_seconds=0.1)
    assert progress("alice")["completed"] is True
    for body, field in (({"id_task": "x" * 65}, "id_task"), ({}, "id_task"), ({"id_task": task, "id_live_preview": "a"}, "id_live_preview")):
        response = api("alice").post("/internal/progress", body)
        assert response.status_code == 422 and f"{field}:" in response.json()["detail"], response.content
    refused = api("alice").post("/sdapi/v1/txt2img", {**TINY, "force_task_id": "no spaces"})
    assert refused.status_code == 422 and "force_task_id:" in refused.json()["detail"]


@pytest.mark.django_db
def test_a_latent_mask_is_stored_with_the_mask_and_refused_when_broken(api, personas, tiny_checkpoint_path) -> None:
    import base64
    import io

    from PIL import Image

    def png(color: int) -> str:
        buffer = io.BytesIO()
        Image.new("L", (64, 64), color).save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode()

    body = {**TINY, "init_images": [png(128)], "mask": png(255), "latent_mask": png(0)}
    generation, inputs = parse_generation_body(body, "img2img", {}, {})
    job = submit_generation(personas["alice"], generation, inputs)
    stored = GenerationRequest.from_json(job.params)
    assert stored.latent_mask and stored.latent_mask != stored.mask and stored.latent_mask.startswith("users/alice/")
    without_mask = parse_generation_body({**body, "mask": None}, "img2img", {}, {})[1]
    assert without_mask.latent_mask is None  # A1111 ignores it without a mask
    refused = api("alice").post("/sdapi/v1/img2img", {**body, "latent_mask": "not an image"})
    assert refused.status_code == 422 and "latent_mask" in refused.json()["detail"], refused.content
