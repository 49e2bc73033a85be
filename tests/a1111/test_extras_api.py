"""A1111's Extras (`/sdapi/v1/extra-single-image`, `/extra-batch-images`, native `kind: "extras"`)
through Django's stack: validation, per-member models, what a stored job holds, the size cap,
and the pure sizing and infotext rules. The image work itself runs on a real platform in
`tests/e2e/test_nsfw_censor_and_extras.py`.

bob keeps a tiny ESRGAN, a tiny GFPGAN and the face detector in his own folders; charlie
(another team) has none of them.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from PIL import Image, ImageColor

from a1111.extras import (
    ExtrasRequest,
    extras_infotext,
    output_size,
    parse_extras_request,
    scaled_size,
)
from inference.models import Job
from inference.storage import model_file_path
from runtime.faces.detection import write_tiny_face_detector
from runtime.faces.gfpgan import write_tiny_gfpgan
from runtime.upscalers import write_tiny_esrgan


def _png_b64(size: tuple[int, int] = (64, 64), color: str = "teal") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
def bobs_models(personas) -> Iterator[dict[str, Path]]:
    models = settings.DATA_DIR / "users" / "bob" / "models"
    paths = {
        "esrgan": write_tiny_esrgan(models / "ESRGAN" / "RealESRGAN_x4plus.pth"),
        "gfpgan": write_tiny_gfpgan(models / "GFPGAN" / "GFPGANv1.4.pth"),
        "detector": write_tiny_face_detector(models / "GFPGAN" / "detection_Resnet50_Final.pth"),
    }
    yield paths
    for path in paths.values():
        path.unlink()


def _refused(response, status: int, *needles: str) -> None:
    assert response.status_code == status, response.content
    text = response.content.decode()
    for needle in needles:
        assert needle in text, text
    assert not Job.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "needles"),
    [
        ({"image": "not base64!"}, ["image: not valid base64"]),
        ({"image": base64.b64encode(b"plain text, no picture").decode()}, ["image: not an image"]),
        ({"image": ""}, ["image: send an image"]),
        ({"upscaling_resize": 9}, ["upscaling_resize", "between 1.0 and 8.0"]),
        ({"upscaling_resize": 0.5}, ["upscaling_resize"]),
        ({"resize_mode": 2}, ["resize_mode"]),
        ({"gfpgan_visibility": 1.5}, ["gfpgan_visibility"]),
        ({"codeformer_weight": -0.1}, ["codeformer_weight"]),
        ({"extras_upscaler_2_visibility": "lots"}, ["extras_upscaler_2_visibility"]),
        ({"upscaling_crop": "maybe"}, ["upscaling_crop"]),
        # the output cap: 30000×30000 is over ATELIER_MAX_INPUT_PIXELS
        ({"resize_mode": 1, "upscaling_resize_w": 30000, "upscaling_resize_h": 30000, "upscaler_1": "Lanczos"},
         ["upscaling_resize_w", "30000x30000", "pixel limit"]),
    ],
)
def test_bad_fields_are_a_422_naming_the_field(api, personas, fields, needles) -> None:
    body = {"image": _png_b64(), "upscaler_1": "Lanczos", **fields}
    _refused(api("alice").post("/sdapi/v1/extra-single-image", body), 422, *needles)


@pytest.mark.django_db
def test_batch_refusals_name_the_image(api, personas) -> None:
    body = {"upscaler_1": "Lanczos", "imageList": [{"data": _png_b64(), "name": "a"}, {"data": "%%%", "name": "b"}]}
    _refused(api("alice").post("/sdapi/v1/extra-batch-images", body), 422, "imageList[1].data: not valid base64")
    _refused(api("alice").post("/sdapi/v1/extra-batch-images", {"upscaler_1": "Lanczos"}), 422, "imageList")


@pytest.mark.django_db
def test_the_output_cap_follows_the_input_pixel_limit(api, personas, settings) -> None:
    settings.ATELIER_MAX_INPUT_PIXELS = 100 * 100  # a 64×64 image fits; ×2 (128×128) does not
    _refused(
        api("alice").post("/sdapi/v1/extra-single-image", {"image": _png_b64(), "upscaler_1": "Lanczos"}),
        422, "upscaling_resize", "128x128",
    )
    # without an upscaler nothing grows, so nothing is over the limit
    response = api("alice").post("/api/v1/jobs", {"kind": "extras", "image": _png_b64(), "upscaler_1": "None"})
    assert response.status_code == 201, response.content


@pytest.mark.django_db
def test_upscalers_and_restorers_are_the_members_own(api, bobs_models, settings) -> None:
    # a name A1111 does not know is refused, as A1111 refuses it
    _refused(api("charlie").post("/sdapi/v1/extra-single-image", {
        "image": _png_b64(), "upscaler_1": "Lanczos", "upscaler_2": "RealESRGAN_x4plus", "extras_upscaler_2_visibility": 0.5,
    }), 404, "upscaler 'RealESRGAN_x4plus' is not installed")
    # A1111's own upscalers and the restorers degrade when missing (below); strict mode refuses them
    settings.ATELIER_STRICT_MISSING_MODELS = True
    for body, needle in [
        ({"upscaler_1": "R-ESRGAN 4x+"}, "upscaler 'R-ESRGAN 4x+' is not installed"),
        ({"gfpgan_visibility": 1}, "face restorer GFPGAN is not installed"),
        ({"codeformer_visibility": 0.5}, "face restorer CodeFormer is not installed"),
    ]:
        _refused(api("charlie").post("/sdapi/v1/extra-single-image", {"image": _png_b64(), **body}), 404, needle)
    # bob has GFPGAN but not CodeFormer
    _refused(api("bob").post("/sdapi/v1/extra-single-image", {"image": _png_b64(), "codeformer_visibility": 1}), 404,
             "CodeFormer is not installed", "installed: GFPGAN")
    assert not (settings.DATA_DIR / "users" / "charlie" / "inputs").exists() or not any(
        (settings.DATA_DIR / "users" / "charlie" / "inputs").iterdir()
    )  # nothing was stored for a refused request

    settings.ATELIER_STRICT_MISSING_MODELS = False  # the default: A1111's degradation, with notes
    body = {"kind": "extras", "image": _png_b64(), "upscaler_1": "R-ESRGAN 4x+", "gfpgan_visibility": 1}
    response = api("charlie").post("/api/v1/jobs", body)
    assert response.status_code == 201, response.content
    request = ExtrasRequest.from_json(Job.objects.get(public_id=response.json()["id"]).params)
    assert (request.upscaler_1, request.restorers, request.resolved_models) == ("Lanczos", [], {})
    assert "models/ESRGAN" in request.missing_models[0] and "GFPGAN was not applied" in request.missing_models[1]


@pytest.mark.django_db
def test_a_job_is_stored_with_its_inputs_in_the_owners_folder(api, bobs_models) -> None:
    body = {
        "kind": "extras", "upscaler_1": "R-ESRGAN 4x+", "upscaling_resize": 2, "gfpgan_visibility": 0.5,
        "imageList": [{"data": _png_b64(color="red"), "name": "one"}, {"data": _png_b64((32, 48)), "name": "two"}],
    }
    response = api("bob").post("/api/v1/jobs", body)
    assert response.status_code == 201, response.content
    job = Job.objects.get(public_id=response.json()["id"])
    assert (job.kind, job.model_key, job.checkpoint_path, job.total_steps) == ("extras", "", "", 2)
    request = ExtrasRequest.from_json(job.params)
    assert request.names == ["one", "two"] and request.sizes == [[64, 64], [32, 48]]
    assert all(key.startswith("users/bob/inputs/") and (settings.DATA_DIR / key).is_file() for key in request.images)
    models = request.resolved_models
    # storage keys (a worker resolves them on its own machine), not this machine's paths
    assert models["upscaler_1"]["key"].startswith("users/bob/models/ESRGAN/")
    for slot, name in (("upscaler_1", "esrgan"), ("GFPGAN", "gfpgan"), ("detector", "detector")):
        assert model_file_path(models[slot]["key"]) == bobs_models[name].resolve()
    assert "CodeFormer" not in models  # visibility 0: not needed, not resolved

    shown = api("bob").get(f"/api/v1/jobs/{job.public_id}").json()
    assert shown["status"] == "queued" and shown["params"]["upscaler_1"] == "R-ESRGAN 4x+"
    assert "resolved_models" not in shown["params"] and str(settings.DATA_DIR) not in str(shown)
    assert api("charlie").get(f"/api/v1/jobs/{job.public_id}").status_code == 404
    assert api("alice").get(f"/api/v1/jobs/{job.public_id}").status_code == 200  # bob's team admin
    again = Job.objects.get(public_id=api("bob").post("/api/v1/jobs", body).json()["id"])
    assert ExtrasRequest.from_json(again.params).images == request.images  # stored once, by content
    assert again.batch_key != job.batch_key  # extras jobs are never batched together


def test_sizes_follow_a1111() -> None:
    by = parse_extras_request({"upscaler_1": "lanczos", "upscaling_resize": 1.5})
    assert by.upscaler_1 == "Lanczos"
    assert scaled_size(by, 100, 60) == (144, 88)  # 150×90 snapped down to multiples of 8
    to = parse_extras_request({"upscaler_1": "Nearest", "resize_mode": 1, "upscaling_resize_w": 100,
                               "upscaling_resize_h": 50, "upscaling_crop": False})
    assert scaled_size(to, 64, 64) == output_size(to, 64, 64) == (96, 96)  # the larger ratio, snapped
    cropped = parse_extras_request({"upscaler_1": "Nearest", "resize_mode": 1, "upscaling_resize_w": 100,
                                    "upscaling_resize_h": 50})
    assert scaled_size(cropped, 64, 64) == (100, 100) and output_size(cropped, 64, 64) == (100, 50)
    none = parse_extras_request({"upscaler_1": "None", "upscaling_resize": 4})
    assert output_size(none, 64, 64) == (64, 64)


def test_infotext_is_a1111s_postprocessing_text() -> None:
    request = parse_extras_request({
        "upscaler_1": "R-ESRGAN 4x+", "upscaling_resize": 2, "upscaler_2": "Lanczos",
        "extras_upscaler_2_visibility": 0.25, "gfpgan_visibility": 1, "codeformer_visibility": 0.5,
        "codeformer_weight": 0.3,
    })
    assert extras_infotext(request, 64, 64) == (
        "Postprocess upscale by: 2, Postprocess upscaler: R-ESRGAN 4x+, Postprocess upscaler 2: Lanczos, "
        "GFPGAN visibility: 1, CodeFormer visibility: 0.5, CodeFormer weight: 0.3"
    )
    to = parse_extras_request({"upscaler_1": "Lanczos", "resize_mode": 1, "upscaling_resize_w": 96,
                               "upscaling_resize_h": 80})
    assert extras_infotext(to, 64, 64) == (
        "Postprocess upscale to: 96x80, Postprocess crop to: 96x80, Postprocess upscaler: Lanczos"
    )


# --- the worker side, in this process: dispatch, run, store, cancel -----------------------------


@pytest.fixture
def worker_and_runtime(tmp_path):
    import uuid

    from inference.transitions import worker_register
    from runtime.engine import WorkerRuntime

    worker = worker_register(name=f"extras-{uuid.uuid4().hex[:8]}@host", device="cpu", device_memory_bytes=None)
    return worker, WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=tmp_path / "cache")


def _dispatched_extras(api, user: str, **fields) -> Job:
    from inference.dispatch import dispatch_pending

    body = {"kind": "extras", "upscaler_1": "Lanczos", "upscaling_resize": 2,
            "imageList": [{"data": _png_b64(color=color), "name": color} for color in ("red", "blue")], **fields}
    response = api(user).post("/api/v1/jobs", body)
    assert response.status_code == 201, response.content
    assert dispatch_pending() == 1  # no checkpoint needed: the free worker takes it at once
    return Job.objects.get(public_id=response.json()["id"])


@pytest.mark.django_db
def test_a_worker_runs_it_into_the_owners_outputs_and_bills_it(api, personas, worker_and_runtime) -> None:
    from inference.runner.extras import extras_execute
    from tenants.models import UsageRecord

    worker, runtime = worker_and_runtime
    job = _dispatched_extras(api, "bob")
    assert (job.status, job.worker) == ("dispatched", worker)
    extras_execute(job=job, attempt=1, worker_name=worker.name, runtime=runtime)
    job.refresh_from_db()
    assert (job.status, job.step, job.total_steps) == ("succeeded", 2, 2)
    assert [key.rsplit("/", 1)[-1] for key in job.outputs] == [f"{job.public_id}-0.png", f"{job.public_id}-1.png"]
    for key, color in zip(job.outputs, ("red", "blue"), strict=True):
        assert key.startswith("users/bob/outputs/")
        with Image.open(settings.DATA_DIR / key) as image:
            assert image.size == (128, 128) and image.convert("RGB").getpixel((64, 64)) == ImageColor.getrgb(color)
            assert image.info["postprocessing"] == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
    assert UsageRecord.objects.get(job=job).images == 2
    extras_execute(job=job, attempt=1, worker_name=worker.name, runtime=runtime)  # a redelivery does nothing
    job.refresh_from_db()
    assert job.status == "succeeded" and UsageRecord.objects.filter(job=job).count() == 1


@pytest.mark.django_db
def test_a_cancel_stops_it_between_images_and_leaves_no_images(api, personas, worker_and_runtime) -> None:
    from inference.runner.extras import extras_execute
    from inference.services import job_cancel
    from runtime.engine import WorkerRuntime

    worker, _ = worker_and_runtime
    job = _dispatched_extras(api, "alice")

    class CancelledAfterTheFirstImage(WorkerRuntime):
        def postprocess(self, image, spec):
            job_cancel(job=Job.objects.get(pk=job.pk))  # the owner presses interrupt while it runs
            return super().postprocess(image, spec)

    runtime = CancelledAfterTheFirstImage(device="cpu", cache_size=1, config_cache_dir=settings.DATA_DIR / "cache")
    extras_execute(job=job, attempt=1, worker_name=worker.name, runtime=runtime)
    job.refresh_from_db()
    assert (job.status, job.outputs) == ("cancelled", [])
    assert not list((settings.DATA_DIR / "users" / "alice" / "outputs").rglob(f"{job.public_id}-*.png"))
