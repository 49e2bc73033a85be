"""The NSFW censor, tiling, a model upscaler, face restoration and A1111's Extras through the APIs of a
running platform.

The platform runs with `ATELIER_NSFW_CENSOR=1` and a tiny random-weight safety checker that flags
every image (`runtime/safety.py`), so every generated image comes back blurred and every
API says so; Extras outputs are not censored (as in A1111), which the exact Lanczos check proves.
bob keeps a tiny GFPGAN and a tiny face detector that finds "faces" everywhere in his own folder.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from runtime.faces.detection import write_tiny_face_detector
from runtime.faces.gfpgan import write_tiny_gfpgan
from runtime.safety import write_tiny_safety_checker
from runtime.upscalers import write_tiny_esrgan
from tests.harness import Platform, running_platform

pytestmark = pytest.mark.e2e


def _install_checker(platform: Platform) -> None:
    models = platform.data_dir / "public" / "models"
    write_tiny_safety_checker(models / "safety_checker", flag_everything=True)
    write_tiny_esrgan(models / "ESRGAN" / "RealESRGAN_x4plus.pth")
    bobs = platform.data_dir / "users" / "bob" / "models" / "GFPGAN"
    write_tiny_gfpgan(bobs / "GFPGANv1.4.pth")
    write_tiny_face_detector(bobs / "detection_Resnet50_Final.pth", always_detect=True)


@pytest.fixture(scope="module")
def platform():
    with running_platform(workers=1, env_overrides={"ATELIER_NSFW_CENSOR": "1"}, before_start=_install_checker) as platform:
        yield platform


def roughness(encoded: str) -> float:
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB"), dtype=np.float32)
    return float(np.abs(np.diff(pixels, axis=1)).mean())


def txt2img(platform: Platform, user: str, **fields) -> dict:
    body = {"prompt": "a lighthouse", "steps": 3, "width": 64, "height": 64, "seed": 5, "sampler_name": "Euler", **fields}
    response = platform.post(user, "/sdapi/v1/txt2img", body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def test_flagged_images_come_back_blurred_and_every_api_says_so(platform: Platform) -> None:
    result = txt2img(platform, "alice", batch_size=2)
    info = json.loads(result["info"])
    assert info["nsfw_censored"] == [0, 1]
    assert "image 0 was flagged by the NSFW censor and blurred" in info["notes"]
    assert all(roughness(image) < 2.0 for image in result["images"])  # the tiny model's images are noise
    job = platform.get("alice", f"/api/v1/jobs/{info['id_task']}").json()
    assert job["status"] == "succeeded" and job["censored"] == [0, 1]
    assert platform.get("charlie", f"/api/v1/jobs/{info['id_task']}").status_code == 404


def test_tiling_is_applied_and_recorded_in_the_infotext(platform: Platform) -> None:
    result = txt2img(platform, "alice", tiling=True)
    info = json.loads(result["info"])
    assert "Tiling: True" in info["infotexts"][0]
    assert not any("tiling" in note for note in info["notes"])


def test_face_restoration_runs_where_installed_and_is_skipped_with_a_note_where_not(platform: Platform) -> None:
    plain = txt2img(platform, "bob")
    restored = txt2img(platform, "bob", restore_faces=True)
    assert restored["images"][0] != plain["images"][0]  # same seed: only the restorer differs
    info = json.loads(restored["info"])
    assert info["restore_faces"] is True and info["face_restoration_model"] == "GFPGAN"
    assert "Face restoration: GFPGAN" in info["infotexts"][0]
    assert platform.get("bob", "/sdapi/v1/face-restorers").json() == [
        {"name": "GFPGAN", "cmd_dir": "models/GFPGAN/GFPGANv1.4.pth"}
    ]
    # bob's restorer is his own: charlie's image comes back unrestored, as A1111 returns it, and says why
    unrestored = txt2img(platform, "charlie", restore_faces=True)
    notes = json.loads(unrestored["info"])["notes"]
    assert any("faces were not restored" in note and "models/Codeformer" in note for note in notes)
    assert "Face restoration" not in json.loads(unrestored["info"])["infotexts"][0]


def test_the_hires_fix_upscales_through_an_installed_esrgan_model(platform: Platform) -> None:
    result = txt2img(platform, "bob", enable_hr=True, hr_scale=2, hr_upscaler="R-ESRGAN 4x+", denoising_strength=0.5)
    image = Image.open(io.BytesIO(base64.b64decode(result["images"][0])))
    assert image.size == (128, 128)
    info = json.loads(result["info"])
    assert "Hires upscaler: R-ESRGAN 4x+" in info["infotexts"][0]


# --- A1111's Extras: /sdapi/v1/extra-single-image and extra-batch-images -------------------------
# Extras are not censored (as in A1111: they are the member's own pictures, not generated), so
# with this platform's flag-everything checker an exact Lanczos result also proves that.


def _noise_png(seed: int) -> tuple[Image.Image, str]:
    picture = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return picture, "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()  # as webuiapi sends


def _decoded(encoded: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(encoded)))


def extras(platform: Platform, user: str, path: str = "extra-single-image", **fields) -> dict:
    body = {"resize_mode": 0, "upscaling_resize": 2, "upscaler_1": "Lanczos", **fields}
    response = platform.post(user, f"/sdapi/v1/{path}", body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def test_extras_upscale_with_lanczos_or_a_model_and_only_the_owner_sees_the_job(platform: Platform) -> None:
    picture, encoded = _noise_png(1)
    lanczos = extras(platform, "alice", image=encoded)
    image = _decoded(lanczos["image"])
    assert image.size == (128, 128)
    expected = picture.resize((128, 128), Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(expected))  # not blurred by the censor
    assert "Postprocess upscale by: 2, Postprocess upscaler: Lanczos" in lanczos["html_info"]
    assert image.info["postprocessing"] == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"

    [job] = platform.get("alice", "/api/v1/jobs?limit=1").json()["jobs"]
    assert (job["kind"], job["status"], job["censored"]) == ("extras", "succeeded", [])
    usage = platform.get("alice", "/api/v1/usage").json()["records"]
    assert any(record["job"] == job["id"] and record["images"] == 1 for record in usage)  # billed like any job
    assert platform.get("charlie", f"/api/v1/jobs/{job['id']}").status_code == 404
    assert platform.get("charlie", f"/api/v1/jobs/{job['id']}/images/0").status_code == 404

    model = extras(platform, "alice", image=encoded, upscaler_1="R-ESRGAN 4x+")
    upscaled = _decoded(model["image"])
    assert upscaled.size == (128, 128) and upscaled.tobytes() != image.tobytes()
    assert "Postprocess upscaler: R-ESRGAN 4x+" in model["html_info"]


def test_extras_batch_returns_one_image_per_input_in_order(platform: Platform) -> None:
    pictures = [_noise_png(seed) for seed in (2, 3)]
    result = extras(platform, "alice", "extra-batch-images", resize_mode=1, upscaling_resize_w=96,
                    upscaling_resize_h=80, imageList=[{"data": data, "name": f"n{i}"} for i, (_, data) in enumerate(pictures)])
    assert len(result["images"]) == 2
    for (picture, _), encoded in zip(pictures, result["images"], strict=True):
        image = _decoded(encoded).convert("RGB")
        assert image.size == (96, 80)  # scaled to cover 96×80 (1.5×), then center-cropped
        expected = picture.resize((96, 96), Image.Resampling.LANCZOS).crop((0, 8, 96, 88))
        assert np.array_equal(np.asarray(image), np.asarray(expected))


def test_extras_gfpgan_visibility_and_another_members_restorer(platform: Platform) -> None:
    _, encoded = _noise_png(4)
    alone = extras(platform, "bob", image=encoded)
    invisible = extras(platform, "bob", image=encoded, gfpgan_visibility=0)
    restored = extras(platform, "bob", image=encoded, gfpgan_visibility=1)
    assert invisible["image"] == alone["image"]  # visibility 0: the upscale alone, pixel for pixel
    assert _decoded(restored["image"]).tobytes() != _decoded(alone["image"]).tobytes()
    assert "GFPGAN visibility: 1" in restored["html_info"]
    # bob's restorer is his own: alice's image is upscaled only, as A1111 skips a missing restorer
    skipped = extras(platform, "alice", image=encoded, gfpgan_visibility=1)
    assert "GFPGAN was not applied" in skipped["html_info"] and "GFPGAN visibility" not in skipped["html_info"]
