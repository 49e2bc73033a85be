"""A1111's Extras on one image (`runtime/extras.py`) through `WorkerRuntime.postprocess`:
built-in resizers, a model upscaler, a second upscaler blended in, the crop, and GFPGAN blended by
its visibility. Tiny random-weight models, 64×64 pictures, no Django."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from runtime.faces.detection import write_tiny_face_detector
from runtime.faces.gfpgan import write_tiny_gfpgan
from runtime.engine import WorkerRuntime
from runtime.specs import PostprocessSpec, Resizer, RestoreStep, UpscaleStep
from runtime.upscalers import write_tiny_esrgan


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("extras")
    models = {
        "esrgan": write_tiny_esrgan(folder / "RealESRGAN_x4plus.pth"),
        "gfpgan": write_tiny_gfpgan(folder / "GFPGANv1.4.pth"),
        "detector": write_tiny_face_detector(folder / "detection_Resnet50_Final.pth", always_detect=True),
    }
    runtime = WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=folder / "cache")
    picture = Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    return runtime, models, picture


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_lanczos_is_pils_and_a_model_differs(setup) -> None:
    runtime, models, picture = setup
    lanczos = runtime.postprocess(picture, PostprocessSpec(UpscaleStep(2.0, 128, 128, Resizer("Lanczos"))))
    assert lanczos.size == (128, 128)
    assert np.array_equal(_pixels(lanczos), _pixels(picture.resize((128, 128), Image.Resampling.LANCZOS)))
    model = Resizer("R-ESRGAN 4x+", str(models["esrgan"]), "esrgan")
    upscaled = runtime.postprocess(picture, PostprocessSpec(UpscaleStep(2.0, 128, 128, model)))
    assert upscaled.size == (128, 128) and not np.array_equal(_pixels(upscaled), _pixels(lanczos))

    # the second upscaler blended at 0.5 lies between the two
    blended = runtime.postprocess(
        picture, PostprocessSpec(UpscaleStep(2.0, 128, 128, Resizer("Lanczos"), second=model, second_visibility=0.5))
    )
    expected = Image.blend(lanczos, upscaled, 0.5)
    assert np.abs(_pixels(blended) - _pixels(expected)).max() <= 1


def test_the_crop_keeps_the_middle(setup) -> None:
    runtime, _, picture = setup
    cropped = runtime.postprocess(picture, PostprocessSpec(UpscaleStep(2.0, 128, 128, Resizer("Nearest"), crop=(96, 64))))
    assert cropped.size == (96, 64)
    whole = picture.resize((128, 128), Image.Resampling.NEAREST)
    assert np.array_equal(_pixels(cropped), _pixels(whole.crop((16, 32, 112, 96))))


def test_face_restoration_is_blended_by_its_visibility(setup) -> None:
    runtime, models, picture = setup

    def restored(visibility: float) -> Image.Image:
        step = RestoreStep("GFPGAN", str(models["gfpgan"]), "gfpgan", visibility)
        return runtime.postprocess(
            picture, PostprocessSpec(restore=(step,), detector_path=str(models["detector"]), detector_sha256="detector")
        )

    full, half = restored(1.0), restored(0.5)
    assert not np.array_equal(_pixels(full), _pixels(picture))
    assert np.abs(_pixels(half) - _pixels(Image.blend(picture, full, 0.5))).max() <= 1
