"""RetinaFace: facexlib's two file layouts, the tiny test model, bad files, and the box arithmetic."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from runtime.faces.detection import (
    DetectedFace,
    FaceDetectorError,
    RetinaFace,
    decode_boxes,
    decode_landmarks,
    detect_faces,
    load_face_detector,
    non_max_suppression,
    prior_boxes,
    write_tiny_face_detector,
)


def _random_state(model: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + key: value.detach().clone() for key, value in model.state_dict().items()}


@pytest.fixture(scope="module")
def resnet50() -> RetinaFace:
    torch.manual_seed(0)
    return RetinaFace(body="resnet", base=64, channels=256).eval()


def test_the_resnet50_detector_has_facexlibs_keys_and_shapes(resnet50) -> None:
    state = resnet50.state_dict()
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    assert shapes["body.conv1.weight"] == (64, 3, 7, 7)
    assert shapes["body.layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
    assert shapes["body.layer4.2.conv3.weight"] == (2048, 512, 1, 1)
    assert shapes["fpn.output1.0.weight"] == (256, 512, 1, 1)
    assert shapes["fpn.output3.0.weight"] == (256, 2048, 1, 1)
    assert shapes["fpn.merge2.1.running_var"] == (256,)
    assert shapes["ssh1.conv3X3.0.weight"] == (128, 256, 3, 3)
    assert shapes["ssh3.conv7x7_3.1.weight"] == (64,)  # lower-case x in the files, unlike conv7X7_2
    assert shapes["ClassHead.0.conv1x1.weight"] == (4, 256, 1, 1)
    assert shapes["BboxHead.1.conv1x1.weight"] == (8, 256, 1, 1)
    assert shapes["LandmarkHead.0.conv1x1.weight"] == (20, 256, 1, 1)
    # torchvision's ResNet-50 as IntermediateLayerGetter keeps it: blocks 3, 4, 6, 3, one downsample
    # per layer, no fc or pooling; the SSH modules and heads on every level.
    blocks = {layer: {key.split(".")[2] for key in state if key.startswith(f"body.{layer}.")}
              for layer in ("layer1", "layer2", "layer3", "layer4")}
    assert [len(found) for found in blocks.values()] == [3, 4, 6, 3]
    assert sorted(key for key in state if ".downsample.0.weight" in key) == [
        f"body.layer{n}.0.downsample.0.weight" for n in (1, 2, 3, 4)
    ]
    assert not any(key.startswith(("body.fc", "body.avgpool")) for key in state)
    tops = {key.split(".")[0] for key in state}
    assert tops == {"body", "fpn", "ssh1", "ssh2", "ssh3", "ClassHead", "BboxHead", "LandmarkHead"}
    assert len(state) == 456  # every entry of the file, running statistics and batch counters included
    parameters = sum(value.numel() for key, value in state.items() if "running" not in key and "num_batches" not in key)
    assert 27_200_000 < parameters < 27_400_000  # Pytorch_Retinaface's ResNet-50 model: 27.3 M, 104 MiB


def test_a_module_prefixed_resnet50_file_round_trips(tmp_path, resnet50) -> None:
    original = resnet50
    torch.save(_random_state(original, prefix="module."), tmp_path / "detection_Resnet50_Final.pth")
    loaded = load_face_detector(tmp_path / "detection_Resnet50_Final.pth")
    assert isinstance(loaded.body, type(original.body))
    assert not loaded.training
    pixels = torch.randn(1, 3, 64, 64) * 50
    with torch.inference_mode():
        expected, got = original(pixels), loaded(pixels)
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))
    assert got[0].shape == (1, prior_boxes(64, 64).shape[0], 4)


def test_the_mobilenet_layout_loads(tmp_path) -> None:
    torch.manual_seed(2)
    model = RetinaFace(body="mobilenet", base=8, channels=64)
    state = _random_state(model)
    assert tuple(state["body.stage1.0.0.weight"].shape) == (8, 3, 3, 3)
    assert tuple(state["body.stage2.0.0.weight"].shape) == (64, 1, 3, 3)  # depthwise
    assert tuple(state["body.stage3.1.3.weight"].shape) == (256, 256, 1, 1)  # pointwise
    assert tuple(state["fpn.output3.0.weight"].shape) == (64, 256, 1, 1)
    assert tuple(state["LandmarkHead.2.conv1x1.weight"].shape) == (20, 64, 1, 1)
    assert 420_000 < sum(p.numel() for p in model.parameters()) < 430_000  # facexlib's 1.7 MB file
    torch.save(state, tmp_path / "detection_mobilenet0.25_Final.pth")
    loaded = load_face_detector(tmp_path / "detection_mobilenet0.25_Final.pth")
    assert type(loaded.body).__name__ == "MobileNetBody"
    assert detect_faces(loaded, Image.new("RGB", (100, 70), "white"), threshold=0.0)  # predictions for every anchor


def test_a_narrow_resnet_loads_with_its_widths_and_depths_read_off_the_tensors(tmp_path) -> None:
    narrow = RetinaFace(body="resnet", base=8, channels=16, blocks=(1, 2, 1, 1)).eval()
    save_file(_random_state(narrow), str(tmp_path / "narrow.safetensors"))
    loaded = load_face_detector(tmp_path / "narrow.safetensors")
    assert len(loaded.body.layer2) == 2 and loaded.body.conv1.out_channels == 8
    pixels = torch.randn(1, 3, 40, 56) * 50
    with torch.inference_mode():
        assert torch.equal(narrow(pixels)[1], loaded(pixels)[1])


def test_files_without_batch_counters_load(tmp_path) -> None:
    state = {k: v for k, v in _random_state(RetinaFace(body="mobilenet", base=2, channels=16)).items()
             if not k.endswith("num_batches_tracked")}  # as PyTorch before 0.4.1 saved them
    save_file(state, str(tmp_path / "old.safetensors"))
    assert isinstance(load_face_detector(tmp_path / "old.safetensors"), RetinaFace)


@pytest.mark.parametrize("name", ["tiny.pth", "tiny.safetensors"])
def test_the_tiny_detector_finds_faces_inside_the_image(tmp_path, name) -> None:
    model = load_face_detector(write_tiny_face_detector(tmp_path / name))
    for width, height in ((64, 64), (160, 96), (100, 70)):
        faces = detect_faces(model, Image.new("RGB", (width, height), (200, 150, 120)))
        assert faces, (width, height)
        assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
        for face in faces:
            assert isinstance(face, DetectedFace) and 0.9 < face.score <= 1.0
            x1, y1, x2, y2 = face.box
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
            assert len(face.landmarks) == 5
            (left_eye, right_eye, nose, mouth_left, mouth_right) = face.landmarks
            assert x1 <= nose[0] <= x2 and y1 <= nose[1] <= y2  # at the anchor's centre, inside the image
            assert right_eye[0] - left_eye[0] == pytest.approx(0.16 * 512, abs=0.1)  # in proportion to the anchor
            assert left_eye[0] < right_eye[0] and left_eye[1] < nose[1] < mouth_left[1] == mouth_right[1]
    assert len(detect_faces(model, Image.new("RGB", (512, 384)))) in range(2, 10)  # a handful after suppression


def test_the_tiny_detector_is_deterministic_and_can_find_nothing(tmp_path) -> None:
    picture = Image.effect_noise((128, 128), 60).convert("RGB")
    first = detect_faces(load_face_detector(write_tiny_face_detector(tmp_path / "a.pth", seed=1)), picture)
    again = detect_faces(load_face_detector(write_tiny_face_detector(tmp_path / "b.pth", seed=1)), picture)
    assert first == again and len(first) == 1
    blind = load_face_detector(write_tiny_face_detector(tmp_path / "blind.pth", always_detect=False))
    assert detect_faces(blind, picture) == []
    assert detect_faces(blind, picture, threshold=0.0)  # it does score every anchor


def test_large_images_are_detected_small_and_mapped_back(tmp_path) -> None:
    model = load_face_detector(write_tiny_face_detector(tmp_path / "tiny.pth"))
    small = detect_faces(model, Image.new("RGB", (128, 96)))
    large = detect_faces(model, Image.new("RGB", (1024, 768)), max_side=128)
    assert len(large) == len(small)
    for a, b in zip(small, large, strict=True):
        assert b.box == pytest.approx(tuple(v * 8 for v in a.box))
        points_large = [v for point in b.landmarks for v in point]
        assert points_large == pytest.approx([v * 8 for point in a.landmarks for v in point])


def test_the_network_sees_bgr_less_the_mean(tmp_path) -> None:
    model = load_face_detector(write_tiny_face_detector(tmp_path / "tiny.pth"))
    seen: list[torch.Tensor] = []
    model.body.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    detect_faces(model, Image.new("RGB", (64, 32), (255, 0, 0)))
    assert seen[0].shape == (1, 3, 32, 64)
    assert seen[0][0, :, 5, 7].tolist() == [0 - 104.0, 0 - 117.0, 255 - 123.0]


def test_files_that_are_not_retinaface_are_refused_with_a_reason(tmp_path) -> None:
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(FaceDetectorError, match="junk.pth.*weights only"):
        load_face_detector(tmp_path / "junk.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(FaceDetectorError, match="junk.safetensors"):
        load_face_detector(tmp_path / "junk.safetensors")
    save_file({"conv_first.weight": torch.zeros(2)}, str(tmp_path / "esrgan.safetensors"))
    with pytest.raises(FaceDetectorError, match="not a RetinaFace"):
        load_face_detector(tmp_path / "esrgan.safetensors")
    with open(tmp_path / "code.pth", "wb") as handle:  # a pickle that would run code: never unpickled
        pickle.dump({"body.conv1.weight": print}, handle)
    with pytest.raises(FaceDetectorError, match="weights only"):
        load_face_detector(tmp_path / "code.pth")
    torch.save({"step": 3}, tmp_path / "notensors.pth")
    with pytest.raises(FaceDetectorError, match="no tensors"):
        load_face_detector(tmp_path / "notensors.pth")
    state = _random_state(RetinaFace(body="mobilenet", base=2, channels=16))
    del state["ssh2.conv7x7_3.0.weight"]
    torch.save(state, tmp_path / "truncated.pth")
    with pytest.raises(FaceDetectorError, match="does not fit"):
        load_face_detector(tmp_path / "truncated.pth")
    state = _random_state(RetinaFace(body="mobilenet", base=2, channels=16))
    state = {k.replace("body.stage", "body.block"): v for k, v in state.items()}
    torch.save(state, tmp_path / "otherbody.pth")
    with pytest.raises(FaceDetectorError, match="neither a ResNet"):
        load_face_detector(tmp_path / "otherbody.pth")


def test_suppression_drops_overlaps_and_keeps_disjoint_boxes() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 3]], dtype=torch.float32)
    # box 1 overlaps box 0 (IoU 81/119), box 3 lies inside box 0 (IoU 0.3) and barely touches box 1
    assert non_max_suppression(boxes, torch.tensor([0.6, 0.9, 0.7, 0.5]), 0.4).tolist() == [1, 2, 3]
    assert non_max_suppression(boxes, torch.tensor([0.9, 0.6, 0.7, 0.5]), 0.4).tolist() == [0, 2, 3]
    assert non_max_suppression(boxes, torch.tensor([0.9, 0.6, 0.7, 0.5]), 0.25).tolist() == [0, 2]
    assert non_max_suppression(torch.zeros(0, 4), torch.zeros(0), 0.4).tolist() == []


@pytest.mark.parametrize(("height", "width"), [(64, 64), (100, 70), (33, 257)])
def test_prior_count_and_order(height, width) -> None:
    priors = prior_boxes(height, width)
    expected = sum(math.ceil(height / step) * math.ceil(width / step) * 2 for step in (8, 16, 32))
    assert priors.shape == (expected, 4)
    # the first location of the first level: centre (4, 4) px, then its 16 and 32 px anchors
    assert priors[0].tolist() == pytest.approx([4 / width, 4 / height, 16 / width, 16 / height])
    assert priors[1].tolist() == pytest.approx([4 / width, 4 / height, 32 / width, 32 / height])
    assert priors[2, 0].item() == pytest.approx(12 / width)  # then along the row
    assert priors[-1].tolist() == pytest.approx([
        (math.ceil(width / 32) - 0.5) * 32 / width, (math.ceil(height / 32) - 0.5) * 32 / height, 512 / width,
        512 / height,
    ])


def test_zero_offsets_decode_to_the_priors() -> None:
    priors = prior_boxes(48, 80)
    boxes = decode_boxes(torch.zeros(len(priors), 4), priors)
    assert torch.allclose(boxes[:, :2], priors[:, :2] - priors[:, 2:] / 2)
    assert torch.allclose(boxes[:, 2:], priors[:, :2] + priors[:, 2:] / 2)
    points = decode_landmarks(torch.zeros(len(priors), 10), priors)
    assert points.shape == (len(priors), 5, 2)
    assert torch.equal(points, priors[:, None, :2].expand(-1, 5, -1))
    # one unit of offset moves a centre by a tenth of the anchor and scales a size by e^0.2
    moved = decode_boxes(torch.tensor([[1.0, 0.0, 1.0, 0.0]]), torch.tensor([[0.5, 0.5, 0.2, 0.2]]))
    width = 0.2 * math.exp(0.2)
    assert moved[0].tolist() == pytest.approx([0.52 - width / 2, 0.4, 0.52 + width / 2, 0.6])
