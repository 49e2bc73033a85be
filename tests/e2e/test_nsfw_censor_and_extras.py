"""The NSFW censor, tiling, a model upscaler and face restoration through the APIs of a running platform.

The platform runs with `ATELIER_NSFW_CENSOR=1` and a tiny random-weight safety checker that flags
every image (`inference/worker/safety.py`), so every image comes back blurred and every API says so.
bob keeps a tiny GFPGAN and a tiny face detector that finds "faces" everywhere in his own folder.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from inference.worker.faces.detection import write_tiny_face_detector
from inference.worker.faces.gfpgan import write_tiny_gfpgan
from inference.worker.safety import write_tiny_safety_checker
from inference.worker.upscalers import write_tiny_esrgan
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


def test_face_restoration_runs_where_installed_and_is_refused_where_not(platform: Platform) -> None:
    plain = txt2img(platform, "bob")
    restored = txt2img(platform, "bob", restore_faces=True)
    assert restored["images"][0] != plain["images"][0]  # same seed: only the restorer differs
    info = json.loads(restored["info"])
    assert info["restore_faces"] is True and info["face_restoration_model"] == "GFPGAN"
    assert "Face restoration: GFPGAN" in info["infotexts"][0]
    assert platform.get("bob", "/sdapi/v1/face-restorers").json() == [
        {"name": "GFPGAN", "cmd_dir": "models/GFPGAN/GFPGANv1.4.pth"}
    ]
    for member in ("alice", "charlie"):  # bob's restorer is his own
        response = platform.post(member, "/sdapi/v1/txt2img", {"prompt": "a face", "steps": 2, "restore_faces": True})
        assert response.status_code == 404
        assert "not installed" in response.text and "restore_faces: false" in response.text


def test_the_hires_fix_upscales_through_an_installed_esrgan_model(platform: Platform) -> None:
    result = txt2img(platform, "bob", enable_hr=True, hr_scale=2, hr_upscaler="R-ESRGAN 4x+", denoising_strength=0.5)
    image = Image.open(io.BytesIO(base64.b64decode(result["images"][0])))
    assert image.size == (128, 128)
    info = json.loads(result["info"])
    assert "Hires upscaler: R-ESRGAN 4x+" in info["infotexts"][0]
