"""Face restoration: alignment onto the FFHQ template, restoration, and the soft paste back.

The first tests drive `restore_detected` with known landmarks and simple stand-in nets (one
that returns its input, one that paints the crop white), so the geometry is checked exactly.
The last ones run the whole chain through `WorkerRuntime` with the tiny random-weight
RetinaFace, GFPGAN and CodeFormer files the test suite writes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from runtime.faces import FaceRestorerError
from runtime.faces.codeformer import write_tiny_codeformer
from runtime.faces.detection import DetectedFace, write_tiny_face_detector
from runtime.faces.gfpgan import write_tiny_gfpgan
from runtime.faces.restoration import (
    FFHQ_TEMPLATE_512,
    FaceNet,
    load_face_net,
    restore_detected,
)
from runtime.engine import WorkerRuntime
from runtime.specs import FaceRestorationSpec


class _Identity(torch.nn.Module):
    face_size = 128

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # a parameter gives the device and dtype

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return faces


class _White(_Identity):
    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(faces)


def _face_at(center: tuple[float, float], side: float) -> DetectedFace:
    """A face whose landmarks sit where the template puts them, in a `side`-px box at `center`."""
    points = (FFHQ_TEMPLATE_512 - 256.0) * (side / 512.0) + np.array(center, dtype=np.float32)
    half = side / 2
    return DetectedFace(
        box=(center[0] - half, center[1] - half, center[0] + half, center[1] + half),
        score=0.99,
        landmarks=tuple((float(x), float(y)) for x, y in points),
    )


def _textured(size: int = 256) -> Image.Image:
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, size, dtype=np.float32)
    pixels = np.stack([np.add.outer(base, base) / 2, np.tile(base, (size, 1)), np.tile(base[:, None], (1, size))], -1)
    pixels += rng.normal(0, 3, pixels.shape)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def test_a_net_that_changes_nothing_leaves_the_image_as_it_was() -> None:
    image = _textured()
    result, count = restore_detected(image, [_face_at((128, 120), 140)], net=FaceNet("GFPGAN", _Identity()))
    assert count == 1
    difference = np.abs(np.asarray(result, np.float32) - np.asarray(image, np.float32))
    assert difference.mean() < 1.0  # only resampling: the crop and the inverse warp line up
    assert difference.max() < 40


def test_the_restored_face_is_pasted_where_the_face_is_and_nowhere_else() -> None:
    image = _textured()
    result, _ = restore_detected(image, [_face_at((128, 120), 140)], net=FaceNet("GFPGAN", _White()))
    before, after = np.asarray(image, np.int16), np.asarray(result, np.int16)
    assert (after[110:130, 118:138] == 255).all()  # the face's middle is what the net drew
    assert np.array_equal(after[:30], before[:30])  # far from the face: untouched, bit for bit
    assert np.array_equal(after[:, 230:], before[:, 230:])
    # a soft edge: between the face and the far field, values in between
    row = after[120, :, 0]
    assert ((row > before[120, :, 0] + 5) & (row < 250)).any()


def test_several_faces_are_each_restored_and_none_is_a_no_op() -> None:
    image = _textured(320)
    faces = [_face_at((90, 100), 100), _face_at((230, 220), 100)]
    result, count = restore_detected(image, faces, net=FaceNet("GFPGAN", _White()))
    after = np.asarray(result)
    assert count == 2 and (after[95:105, 85:95] == 255).all() and (after[215:225, 225:235] == 255).all()
    same, count = restore_detected(image, [], net=FaceNet("GFPGAN", _White()))
    assert same is image and count == 0


def test_degenerate_landmarks_are_skipped() -> None:
    flat = DetectedFace(box=(0, 0, 10, 10), score=0.99, landmarks=((5.0, 5.0),) * 5)
    image = _textured(64)
    result, count = restore_detected(image, [flat], net=FaceNet("GFPGAN", _White()))
    assert count == 0 and result is image


@pytest.fixture(scope="module")
def face_models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("faces")
    return {
        "detector": write_tiny_face_detector(folder / "detection_Resnet50_Final.pth", always_detect=True),
        "blind": write_tiny_face_detector(folder / "detection_blind.pth", always_detect=False),
        "GFPGAN": write_tiny_gfpgan(folder / "GFPGANv1.4.pth"),
        "CodeFormer": write_tiny_codeformer(folder / "codeformer-v0.1.0.pth"),
    }


def _runtime(folder: Path) -> WorkerRuntime:
    return WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=folder / "cache")


def _spec(models: dict[str, Path], restorer: str, *, detector: str = "detector", fidelity: float = 0.5) -> FaceRestorationSpec:
    return FaceRestorationSpec(
        restorer=restorer, model_path=str(models[restorer]), model_sha256=f"{restorer}-sha",
        detector_path=str(models[detector]), detector_sha256=f"{detector}-sha", fidelity=fidelity,
    )


def test_the_runtime_restores_faces_with_either_restorer(face_models, tmp_path) -> None:
    runtime = _runtime(tmp_path)
    image = _textured(96)
    for restorer in ("GFPGAN", "CodeFormer"):
        [first] = runtime.restore_faces([image], _spec(face_models, restorer))
        [again] = runtime.restore_faces([image], _spec(face_models, restorer))
        assert first is not None and first.size == image.size and first.mode == "RGB"
        assert not np.array_equal(np.asarray(first), np.asarray(image))  # faces were found and redrawn
        assert np.array_equal(np.asarray(first), np.asarray(again))  # deterministic
    assert runtime.restore_faces([None], _spec(face_models, "GFPGAN")) == [None]


def test_codeformer_fidelity_changes_the_result(face_models, tmp_path) -> None:
    runtime = _runtime(tmp_path)
    image = _textured(96)
    [faithful] = runtime.restore_faces([image], _spec(face_models, "CodeFormer", fidelity=1.0))
    [restored] = runtime.restore_faces([image], _spec(face_models, "CodeFormer", fidelity=0.0))
    assert not np.array_equal(np.asarray(faithful), np.asarray(restored))


def test_no_face_found_means_the_image_is_unchanged(face_models, tmp_path) -> None:
    runtime = _runtime(tmp_path)
    image = _textured(96)
    [result] = runtime.restore_faces([image], _spec(face_models, "GFPGAN", detector="blind"))
    assert result is image


def test_a_file_of_the_wrong_kind_is_refused_with_its_name(face_models) -> None:
    with pytest.raises(FaceRestorerError, match="codeformer-v0.1.0.pth"):
        load_face_net("GFPGAN", face_models["CodeFormer"], device="cpu", dtype=torch.float32)
