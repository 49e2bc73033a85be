"""`refiner_checkpoint` / `refiner_switch_at` through `/sdapi/v1`: parsing, the 422s naming the field
(unknown refiner, a bad switch point, a base or refiner of another latent family), and one job run
in-process on the tiny SDXL and tiny SDXL refiner (as a worker runs it), with A1111's infotext and
the pair as the job's model key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from inference.models import Job, Worker
from inference.sdapi.generate import _notes, parse_generation_body, submit_generation
from tenants.workdirs import user_model_dir
from tests.security.conftest import run_on_a_worker


@pytest.fixture(scope="session")
def xl_files(tmp_path_factory) -> list[Path]:
    from runtime.tiny.families import write_tiny_sdxl_checkpoint, write_tiny_sdxl_refiner_checkpoint

    folder = tmp_path_factory.mktemp("xl-models")
    return [
        write_tiny_sdxl_checkpoint(folder / "tiny-xl.safetensors"),
        write_tiny_sdxl_refiner_checkpoint(folder / "tiny-xl-refiner.safetensors", seed=1),
    ]


@pytest.fixture
def alice_xl(personas, tiny_checkpoint_path, xl_files):
    """The tiny SDXL and its refiner in alice's own models folder (removed afterwards)."""
    folder = user_model_dir("alice", "Stable-diffusion")
    folder.mkdir(parents=True, exist_ok=True)
    copies = [Path(shutil.copy(path, folder / path.name)) for path in xl_files]
    yield copies
    for path in copies:
        path.unlink(missing_ok=True)


XL = {"override_settings": {"sd_model_checkpoint": "tiny-xl"}}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field", "needle"),
    [
        ({**XL, "refiner_checkpoint": "no-such-model"}, "refiner_checkpoint", "unknown checkpoint 'no-such-model'"),
        ({**XL, "refiner_checkpoint": 7}, "refiner_checkpoint", "must be a checkpoint's name"),
        ({**XL, "refiner_checkpoint": "tiny-xl-refiner", "refiner_switch_at": 1.5}, "refiner_switch_at", "between 0.0 and 1.0"),
        ({**XL, "refiner_checkpoint": "tiny-xl-refiner", "refiner_switch_at": "soon"}, "refiner_switch_at", "number"),
        ({"override_settings": {"sd_model_checkpoint": "atelier-tiny"}, "refiner_checkpoint": "tiny-xl-refiner"},
         "refiner_checkpoint", "needs an SDXL base"),
        ({**XL, "refiner_checkpoint": "atelier-tiny", "refiner_switch_at": 0.8}, "refiner_checkpoint", "another latent space"),
        ({"override_settings": {"sd_model_checkpoint": "tiny-xl", "hires_fix_refiner_pass": "third pass"},
          "refiner_checkpoint": "tiny-xl-refiner"}, "override_settings.hires_fix_refiner_pass", "both passes"),
    ],
)
def test_bad_refiners_are_422s_naming_the_field(api, alice_xl, body, field, needle) -> None:
    response = api("alice").post("/sdapi/v1/txt2img", {"prompt": "a house", "width": 64, "height": 64, "steps": 2, **body})
    assert response.status_code == 422, response.content
    detail = response.json()["detail"]
    assert f"{field}:" in detail and needle in detail, detail
    assert not Job.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_refined_job_needs_both_models_and_says_so_in_its_infotext(personas, alice_xl, one_torch_thread) -> None:
    from runtime.engine import WorkerRuntime
    from django.conf import settings

    base, refiner = alice_xl
    body = {"prompt": "a house", "width": 64, "height": 64, "steps": 4, "seed": 5, **XL,
            "refiner_checkpoint": "tiny-xl-refiner", "refiner_switch_at": 0.5}
    generation, inputs = parse_generation_body(body, "txt2img")
    assert (generation.refiner_checkpoint, generation.refiner_switch_at) == ("tiny-xl-refiner", 0.5)
    assert parse_generation_body({**body, "refiner_checkpoint": "None"}, "txt2img")[0].refiner_checkpoint is None
    assert _notes(body, generation) == []  # no "not available yet" note
    job = submit_generation(personas["alice"], generation, inputs)
    base_sha = job.checkpoint_sha256
    refiner_sha = job.params["models"]["refiner"]["sha256"]
    assert job.model_key == f"{base_sha}+{refiner_sha}" and job.params["models"]["refiner"]["key"].endswith("tiny-xl-refiner.safetensors")
    # switching at 1.0 never reaches the refiner: the job needs the base alone (A1111 loads nothing)
    never = submit_generation(personas["alice"], parse_generation_body({**body, "refiner_switch_at": 1.0}, "txt2img")[0], None)
    assert never.model_key == base_sha and never.params["models"]["refiner"] is None
    assert never.batch_key != job.batch_key
    Job.objects.filter(pk=never.pk).delete()

    runtime = WorkerRuntime(device="cpu", cache_size=2, config_cache_dir=settings.ATELIER_MODEL_CACHE_DIR)
    run_on_a_worker([job], name="refiner", runtime=runtime)
    assert job.status == "succeeded", job.error
    assert f"Refiner: tiny-xl-refiner [{refiner_sha[:10]}], Refiner switch at: 0.5" in job.infotexts[0]
    assert job.model_key in Worker.objects.get(name="w@refiner").loaded_models  # the pair, for affinity
