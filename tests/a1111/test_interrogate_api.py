"""`/sdapi/v1/interrogate` through Django's stack: A1111's body and answer, the refusals naming the
field, the error saying what to install when the public models are missing (before anything is
queued), what a stored job holds, and a call answered by an in-process worker running the tiny
random-weight BLIP, CLIP and tagger (`runtime/tiny/interrogate.py`, built into a temporary folder
that stands in for the public models folders).
"""

from __future__ import annotations

import base64
import io
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from PIL import Image

from a1111.interrogate import InterrogateRequest
from inference.dispatch import pending_job
from inference.models import Job, Worker
from inference.sdapi.adapter import SdapiError
from inference.sdapi.interrogate import interrogate_answer
from inference.services import interrogate_submit, user_options_update
from runtime.tiny.interrogate import BLIP_WORDS, CATEGORIES, TAGS
from tests.conftest import INTERROGATE_FOLDERS as KINDS
from tests.security.conftest import run_on_a_worker


def png_b64(size: tuple[int, int] = (64, 64), color: str = "teal") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
def installed(interrogate_installed) -> dict[str, Path]:
    return interrogate_installed


@pytest.fixture
def not_installed(settings, tmp_path) -> dict[str, Path]:
    folders = {kind: tmp_path / kind for kind in KINDS}
    settings.ATELIER_PUBLIC_MODEL_DIRS = {**settings.ATELIER_PUBLIC_MODEL_DIRS, **folders}
    return folders


def refused(response, status: int, field: str, *needles: str) -> str:
    assert response.status_code == status, response.content
    payload = response.json()
    assert set(payload) == {"error", "detail", "body", "errors"} and payload["body"] == field, payload
    for needle in needles:
        assert needle in payload["detail"], payload["detail"]
    assert not Job.objects.exists()
    return payload["detail"]


def _inputs() -> set[str]:
    folder = settings.DATA_DIR / "users" / "alice" / "inputs"
    return {path.name for path in folder.iterdir()} if folder.is_dir() else set()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "status", "field", "needle"),
    [
        ({}, 422, "image", "send an image"),
        ({"image": "not base64!"}, 422, "image", "not valid base64"),
        ({"image": base64.b64encode(b"no picture here").decode()}, 422, "image", "not an image"),
        ({"image": png_b64(), "model": "wd14"}, 404, "model", "Model not found"),
        ({"image": png_b64(), "model": 5}, 422, "model", "clip"),
    ],
)
def test_bad_input_is_refused_naming_the_field(api, personas, installed, body, status, field, needle) -> None:
    refused(api("alice").post("/sdapi/v1/interrogate", body), status, field, needle)


@pytest.mark.django_db
def test_without_the_models_each_interrogator_says_what_to_install_and_queues_nothing(api, personas, not_installed) -> None:
    stored_before = _inputs()
    detail = refused(api("alice").post("/sdapi/v1/interrogate", {"image": png_b64()}), 404, "model",
                     "clip", "models/BLIP", "models/CLIP", "models/interrogate", "artists.txt")
    assert str(settings.DATA_DIR) not in detail
    refused(api("alice").post("/sdapi/v1/interrogate", {"image": png_b64(), "model": "deepdanbooru"}), 404, "model",
            "deepdanbooru", "models/deepbooru", "id2label")
    # only what is missing is named; a pickled or wrong folder says what is wrong with it
    from runtime.tiny.interrogate import write_tiny_blip

    write_tiny_blip(not_installed["BLIP"] / "blip")
    (not_installed["CLIP"] / "old").mkdir(parents=True)
    (not_installed["CLIP"] / "old" / "config.json").write_text("{}")
    (not_installed["CLIP"] / "old" / "pytorch_model.bin").write_bytes(b"\0")
    detail = refused(api("alice").post("/sdapi/v1/interrogate", {"image": png_b64()}), 404, "model",
                     "models/CLIP", "pickled weights", "models/interrogate")
    assert "models/BLIP" not in detail
    assert _inputs() == stored_before  # nothing was stored for a refused request


@pytest.mark.django_db
def test_a_job_holds_model_keys_the_image_and_the_members_options(api, personas, installed) -> None:
    alice = personas["alice"]
    user_options_update(user=alice, values={
        "interrogate_clip_skip_categories": ["artists"], "interrogate_return_ranks": True,
        "interrogate_clip_num_beams": 3,
    })
    job = interrogate_submit(user=alice, model="clip", image=base64.b64decode(png_b64()), size=(64, 64))
    assert (job.kind, job.model_key, job.checkpoint_path, job.total_steps) == ("interrogate", "", "", 1)
    assert job.batch_key == f"interrogate:{job.public_id}"
    request = InterrogateRequest.from_json(job.params)
    assert request.image.startswith("users/alice/inputs/") and (settings.DATA_DIR / request.image).is_file()
    assert request.settings.return_ranks and request.settings.clip_num_beams == 3
    models = request.resolved_models
    assert models["blip"]["key"] == "public/models/BLIP/atelier-tiny-blip" and len(models["blip"]["sha256"]) == 64
    assert models["clip"]["key"] == "public/models/CLIP/atelier-tiny-clip"
    assert [c["name"] for c in models["categories"]] == ["flavors", "mediums", "movements"]  # artists skipped
    assert str(installed["BLIP"]) not in str(job.params)  # keys, never this machine's paths
    shown = api("alice").get(f"/api/v1/jobs/{job.public_id}").json()
    assert shown["kind"] == "interrogate" and "resolved_models" not in shown["params"] and "image" not in shown["params"]
    tagger = interrogate_submit(user=alice, model="deepdanbooru", image=base64.b64decode(png_b64()), size=(64, 64))
    assert set(InterrogateRequest.from_json(tagger.params).resolved_models) == {"tagger"}
    pending = pending_job(tagger)  # what the scheduler sees: no model to hold, one image, one step
    assert (pending.model_key, pending.batch_key, pending.images, pending.steps) == ("", tagger.batch_key, 1, 1)


@pytest.mark.django_db
def test_a_failed_job_is_a1111s_500_and_an_interrupted_one_an_empty_caption(personas, installed) -> None:
    job = interrogate_submit(user=personas["alice"], model="clip", image=base64.b64decode(png_b64()), size=(64, 64))
    job.status, job.error = Job.Status.FAILED, "interrogate failed: out of memory"
    with pytest.raises(SdapiError) as failed:
        interrogate_answer(job)
    assert failed.value.status == 500 and "out of memory" in failed.value.detail
    job.status, job.texts = Job.Status.CANCELLED, []
    assert interrogate_answer(job) == {"caption": ""}


def answered_by_a_worker(api, who: str, body: dict, *, name: str):
    """POST `body` to /sdapi/v1/interrogate while a worker thread runs the job it queues."""
    ran: list[Job] = []

    def work() -> None:
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not ran:
                job = Job.objects.filter(kind="interrogate", status="queued").first()
                if job is None:
                    time.sleep(0.05)
                    continue
                run_on_a_worker([job], name=name)
                ran.append(job)
                # gone, as a stopped worker is: the next call's job must not be dispatched to it
                Worker.objects.filter(name=f"w@{name}").update(state=Worker.State.OFFLINE)
        finally:
            connection.close()  # this thread's own connection

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    response = api(who).post("/sdapi/v1/interrogate", body)
    worker.join(timeout=120)
    assert ran, "the worker thread ran no job"
    return response, ran[0]


@pytest.mark.django_db(transaction=True)
def test_clip_and_deepdanbooru_answer_a1111s_caption(api, personas, installed, one_torch_thread) -> None:
    response, job = answered_by_a_worker(api, "alice", {"image": png_b64(), "model": "clip"}, name="clip")
    assert response.status_code == 200, response.content
    caption = response.json()["caption"]
    assert set(response.json()) == {"caption"} and job.texts == [caption]
    parts = caption.split(", ")
    assert set(parts[0].split()) <= set(BLIP_WORDS)  # the tiny BLIP's words, then one phrase per category
    assert [next(n for n, phrases in CATEGORIES.items() if p in phrases) for p in parts[1:]] == list(CATEGORIES)

    user_options_update(user=personas["bob"], values={
        "interrogate_deepbooru_score_threshold": 0.0, "deepbooru_sort_alpha": True, "deepbooru_filter_tags": "solo",
    })
    response, job = answered_by_a_worker(
        api, "bob", {"image": f"data:image/png;base64,{png_b64()}", "model": "deepdanbooru"}, name="tagger",
    )
    assert response.status_code == 200, response.content
    expected = sorted(tag for tag in TAGS if not tag.startswith("rating:") and tag != "solo")
    assert response.json()["caption"] == ", ".join(
        tag.replace("_", " ").replace("(", "\\(").replace(")", "\\)") for tag in expected
    )
    assert (job.owner, job.status) == (personas["bob"], "succeeded")


@pytest.mark.django_db
def test_models_gone_from_the_worker_fail_the_job_saying_so_without_paths(personas, installed, settings, tmp_path) -> None:
    job = interrogate_submit(user=personas["alice"], model="deepdanbooru", image=base64.b64decode(png_b64()), size=(64, 64))
    # this worker's public deepbooru folder does not hold the tagger the job names
    settings.ATELIER_PUBLIC_MODEL_DIRS = {**settings.ATELIER_PUBLIC_MODEL_DIRS, "deepbooru": tmp_path / "empty"}
    run_on_a_worker([job], name="no-tagger")
    assert job.status == "failed" and job.texts == []
    assert job.error.startswith("interrogate failed:") and "no model.safetensors" in job.error, job.error
    assert str(tmp_path) not in job.error
