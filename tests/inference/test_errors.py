"""Issue #14 item 3: one error hierarchy, one table mapping it for every adapter, one set of field readers.

Through Django's full stack on the real database: numeric strings are read the same way in every
numeric field (generation and ControlNet units alike) on the native API and `/sdapi/v1`; a bad
value is refused naming its field; one error kind gets one status on both APIs; the workspace
shows the same error naming the field.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from PIL import Image, ImageDraw

from inference.models import Job

CONTROLNET = "tiny-canny"
WEIGHT_FIELD = "alwayson_scripts.controlnet.args[0].weight"


def _control_image() -> str:
    image = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(image).rectangle((16, 20, 47, 43), fill="white")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _body(**unit) -> dict:
    """txt2img with numbers sent as strings, as some A1111 clients do, and one ControlNet unit."""
    unit = {"enabled": True, "image": _control_image(), "module": "canny", "model": CONTROLNET, **unit}
    return {"prompt": "a red house", "steps": "2", "width": 64, "height": 64, "seed": 3, "cfg_scale": "7.5",
            "alwayson_scripts": {"controlnet": {"args": [unit]}}}


STRING_UNIT = {"weight": "1.0", "guidance_start": "0", "guidance_end": "0.9", "processor_res": "64",
               "threshold_a": "100", "threshold_b": "200", "control_mode": "2", "resize_mode": "0"}


@pytest.fixture
def controlnet(tiny_checkpoint_path) -> Path:
    from runtime.tiny.controlnet import write_tiny_controlnet

    path = settings.ATELIER_PUBLIC_MODEL_DIRS["ControlNet"] / f"{CONTROLNET}.safetensors"
    if not path.exists():
        write_tiny_controlnet(path, seed=0)
    return path


def _assert_read_as_numbers(job: Job) -> None:
    assert job.params["cfg_scale"] == 7.5 and job.params["steps"] == 2
    (unit,) = job.params["controlnet_units"]
    assert (unit["weight"], unit["guidance_end"], unit["processor_res"]) == (1.0, 0.9, 64)
    assert (unit["threshold_a"], unit["control_mode"], unit["resize_mode"]) == (100.0, 2, 0)


# --- numeric strings: accepted the same way everywhere ------------------------------------------


@pytest.mark.django_db
def test_numeric_strings_are_numbers_on_the_native_api(api, controlnet) -> None:
    response = api("alice").post("/api/v1/jobs", _body(**STRING_UNIT))
    assert response.status_code == 201, response.content
    _assert_read_as_numbers(Job.objects.get(public_id=response.json()["id"]))


@pytest.mark.django_db(transaction=True)
def test_numeric_strings_are_numbers_on_sdapi_txt2img(live_server, tokens, controlnet) -> None:
    """/sdapi/v1/txt2img waits for its job: the job is cancelled once stored (A1111 then answers 200)."""
    from inference.services import job_cancel

    answer: dict[str, httpx.Response] = {}

    def call() -> None:
        answer["response"] = httpx.post(f"{live_server.url}/sdapi/v1/txt2img", json=_body(**STRING_UNIT),
                                        headers={"Authorization": f"Bearer {tokens['alice']}"}, timeout=60)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 30
    while not Job.objects.exists() and caller.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    job = Job.objects.first()
    assert job is not None, answer.get("response") and answer["response"].text
    _assert_read_as_numbers(job)
    job_cancel(job=job)
    caller.join(timeout=30)
    assert answer["response"].status_code == 200, answer["response"].text


# --- a value that is not a number: refused naming its field ------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("weight", ["heavy", True, "nan", "Infinity", [1], ""])
def test_a_weight_that_is_not_a_number_is_refused_naming_it_on_both_apis(api, controlnet, weight) -> None:
    native = api("alice").post("/api/v1/jobs", _body(weight=weight))
    assert native.status_code == 400, native.content
    assert native.json()["field"] == WEIGHT_FIELD and native.json()["error"].startswith(f"{WEIGHT_FIELD}: must be a number")
    sdapi = api("alice").post("/sdapi/v1/txt2img", _body(weight=weight))
    assert sdapi.status_code == 422, sdapi.content  # A1111's status for a failed validation
    assert sdapi.json()["body"] == WEIGHT_FIELD and sdapi.json()["detail"].startswith(f"{WEIGHT_FIELD}: must be a number")
    assert set(sdapi.json()) == {"error", "detail", "body", "errors"}
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_a_number_too_big_for_any_field_is_a_400_not_a_500(api, tiny_checkpoint_path) -> None:
    base = {"prompt": "x", "width": 64, "height": 64}
    response = api("alice").post("/api/v1/jobs", {**base, "cfg_scale": 10**400})  # no float holds it
    assert response.status_code == 400 and response.json()["field"] == "cfg_scale"
    assert len(response.json()["error"]) < 200  # the value is not echoed back in full
    digits = '{"prompt": "x", "steps": ' + "9" * 5000 + "}"  # over Python's integer-digits limit
    response = api("alice").post("/api/v1/jobs", digits)
    assert response.status_code == 400 and response.json()["field"] == "body"
    assert api("alice").post("/sdapi/v1/txt2img", digits).status_code == 422
    assert not Job.objects.exists()


# --- one error kind, one status on both APIs ----------------------------------------------------


@pytest.mark.django_db
def test_an_unknown_model_is_a_404_naming_its_field_on_both_apis(api, tiny_checkpoint_path) -> None:
    body = {"prompt": "x", "width": 64, "height": 64, "override_settings": {"sd_vae": "nope.safetensors"}}
    native = api("alice").post("/api/v1/jobs", body)
    sdapi = api("alice").post("/sdapi/v1/txt2img", body)
    assert native.status_code == sdapi.status_code == 404
    assert native.json()["field"] == sdapi.json()["body"] == "override_settings.sd_vae"
    assert native.json()["error"] == sdapi.json()["detail"]


@pytest.mark.django_db
def test_a_full_queue_is_a_429_on_both_apis(api, tiny_checkpoint_path, settings) -> None:
    settings.ATELIER_MAX_QUEUED_JOBS_PER_USER = 0
    body = {"prompt": "x", "width": 64, "height": 64}
    native = api("alice").post("/api/v1/jobs", body)
    sdapi = api("alice").post("/sdapi/v1/txt2img", body)
    assert native.status_code == sdapi.status_code == 429
    assert sdapi.json()["error"] == "TooManyRequests" and native.json()["error"] == sdapi.json()["detail"]


def test_the_table_answers_every_kind_the_same_on_both_apis_but_validation() -> None:
    """A1111 answers a failed validation with 422; every other kind has one status everywhere."""
    from inference.api.errors import ERROR_TABLE
    from a1111.errors import InvalidField, RequestError

    for kind, answer in ERROR_TABLE:
        if not issubclass(kind, InvalidField) and kind is not RequestError:
            assert answer.status == answer.sdapi_status, kind


# --- the workspace: the same error, naming the field --------------------------------------------


@pytest.mark.django_db
def test_the_workspace_names_the_field_and_the_unit_as_its_tabs_do(personas, controlnet) -> None:
    from frontend.workspace.jobs import WorkspaceError, workspace_submit

    values = {"prompt": "a red house", "steps": 2, "cfg_scale": "lots", "width": 64, "height": 64, "n_iter": 1,
              "batch_size": 1}
    with pytest.raises(WorkspaceError) as raised:
        workspace_submit(user=personas["alice"], kind="txt2img", values=values)
    assert raised.value.message.startswith("cfg_scale: must be a number")

    control = Image.new("RGB", (64, 64), "white")
    units = [{"enabled": False}, {"enabled": True, "image": control, "module": "canny", "model": CONTROLNET,
                                  "weight": "heavy"}]
    with pytest.raises(WorkspaceError) as raised:
        workspace_submit(user=personas["alice"], kind="txt2img", values={**values, "cfg_scale": "7.5",
                                                                         "controlnet_units": units})
    assert raised.value.message.startswith("ControlNet Unit 1.weight: must be a number")

    with pytest.raises(WorkspaceError) as raised:  # a NotFound names its field too
        workspace_submit(user=personas["alice"], kind="txt2img", values={**values, "cfg_scale": 7, "vae": "nope"})
    assert raised.value.message.startswith("override_settings.sd_vae: unknown VAE 'nope'")
    assert not Job.objects.exists()
