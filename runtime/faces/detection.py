"""Face detection with RetinaFace, the detector GFPGAN and CodeFormer face restoration run first.

A1111 (through facexlib) ships it as `detection_Resnet50_Final.pth` (a torchvision ResNet-50 body)
or `detection_mobilenet0.25_Final.pth` (a MobileNet-0.25 body). Both load here: parameter names
match facexlib's state-dict keys exactly (`body.layer1.0.conv1.weight`, `fpn.output1.0.weight`,
`ssh1.conv7x7_3.0.weight` with its lower-case x, `ClassHead.0.conv1x1.weight`…), a `module.`
prefix left by DataParallel training is stripped, and the body's kind and widths are read off
the tensors. `.pth` files are read with torch's weights-only unpickler.

`detect_faces` gives boxes, scores and the five landmarks (eyes, nose, mouth corners) in image
pixels, as facexlib's `detect_faces` does: BGR input less the mean (104, 117, 123), two anchors
per location on three levels (strides 8, 16, 32), offsets decoded with variances (0.1, 0.2),
then non-maximum suppression (written here in plain torch: no torchvision in this project).

`write_tiny_face_detector` writes a random-weight model with a narrow MobileNet body whose heads
are biased to find a few faces, or none, on any picture: a deterministic stand-in for tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F  # noqa: N812 - the usual name

from runtime.weight_files import read_tensor_state

BGR_MEAN = (104.0, 117.0, 123.0)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))  # per level, in detection-input pixels
STEPS = (8, 16, 32)
VARIANCES = (0.1, 0.2)
PRE_NMS_LIMIT = 5000  # candidates kept for suppression, best first, as Pytorch_Retinaface does


@dataclass(frozen=True)
class DetectedFace:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels
    score: float
    landmarks: tuple[tuple[float, float], ...]  # left eye, right eye, nose, mouth left, mouth right


class FaceDetectorError(ValueError):
    """The file is not a RetinaFace model (the message says why)."""


def _conv_bn(inp: int, out: int, kernel: int, stride: int, leaky: float | None) -> nn.Sequential:
    """Convolution (no bias) and batch norm, then a leaky ReLU unless `leaky` is None."""
    layers: list[nn.Module] = [nn.Conv2d(inp, out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(out)]
    if leaky is not None:
        layers.append(nn.LeakyReLU(leaky, inplace=True))
    return nn.Sequential(*layers)


def _conv_dw(inp: int, out: int, stride: int) -> nn.Sequential:
    """MobileNet's depthwise 3x3 then pointwise 1x1, each with batch norm and leaky ReLU (0.1)."""
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), nn.BatchNorm2d(inp), nn.LeakyReLU(0.1, inplace=True),
        nn.Conv2d(inp, out, 1, 1, 0, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.1, inplace=True),
    )


class MobileNetBody(nn.Module):
    """MobileNet-V1 at width `base / 32` (8 for facexlib's 0.25), returning strides 8, 16 and 32."""

    def __init__(self, base: int) -> None:
        super().__init__()
        b = base
        self.stage1 = nn.Sequential(
            _conv_bn(3, b, 3, 2, 0.1), _conv_dw(b, 2 * b, 1), _conv_dw(2 * b, 4 * b, 2),
            _conv_dw(4 * b, 4 * b, 1), _conv_dw(4 * b, 8 * b, 2), _conv_dw(8 * b, 8 * b, 1),
        )
        self.stage2 = nn.Sequential(_conv_dw(8 * b, 16 * b, 2), *[_conv_dw(16 * b, 16 * b, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(_conv_dw(16 * b, 32 * b, 2), _conv_dw(32 * b, 32 * b, 1))
        self.out_channels = (8 * b, 16 * b, 32 * b)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c3 = self.stage1(x)
        c4 = self.stage2(c3)
        return [c3, c4, self.stage3(c4)]


class Bottleneck(nn.Module):
    """torchvision's ResNet bottleneck (stride on the 3x3), with its attribute names."""

    expansion = 4

    def __init__(self, inp: int, width: int, stride: int) -> None:
        super().__init__()
        out = width * self.expansion
        self.conv1 = nn.Conv2d(inp, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = (
            nn.Sequential(nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out))
            if stride != 1 or inp != out else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = F.relu(self.bn2(self.conv2(y)), inplace=True)
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)), inplace=True)


class ResNetBody(nn.Module):
    """torchvision's ResNet up to layer4 (no pooling head), returning layers 2, 3 and 4."""

    def __init__(self, base: int, blocks: Sequence[int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        channels = base
        for index, count in enumerate(blocks):
            width = base * 2**index
            stride = 1 if index == 0 else 2
            layer = [Bottleneck(channels, width, stride)]
            channels = width * Bottleneck.expansion
            layer += [Bottleneck(channels, width, 1) for _ in range(count - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*layer))
        self.out_channels = tuple(base * 2**index * Bottleneck.expansion for index in (1, 2, 3))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x)), inplace=True), 3, 2, 1)
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return [c3, c4, self.layer4(c4)]


class FPN(nn.Module):
    def __init__(self, in_channels: Sequence[int], out: int, leaky: float) -> None:
        super().__init__()
        self.output1 = _conv_bn(in_channels[0], out, 1, 1, leaky)
        self.output2 = _conv_bn(in_channels[1], out, 1, 1, leaky)
        self.output3 = _conv_bn(in_channels[2], out, 1, 1, leaky)
        self.merge1 = _conv_bn(out, out, 3, 1, leaky)
        self.merge2 = _conv_bn(out, out, 3, 1, leaky)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        out1, out2, out3 = self.output1(features[0]), self.output2(features[1]), self.output3(features[2])
        out2 = self.merge2(out2 + F.interpolate(out3, size=out2.shape[-2:], mode="nearest"))
        out1 = self.merge1(out1 + F.interpolate(out2, size=out1.shape[-2:], mode="nearest"))
        return [out1, out2, out3]


class SSH(nn.Module):
    """The single-stage headless context module: 3x3, 5x5 and 7x7 receptive fields concatenated."""

    def __init__(self, channels: int, leaky: float) -> None:
        super().__init__()
        quarter = channels // 4
        self.conv3X3 = _conv_bn(channels, channels // 2, 3, 1, None)  # noqa: N815 - facexlib's key names
        self.conv5X5_1 = _conv_bn(channels, quarter, 3, 1, leaky)  # noqa: N815
        self.conv5X5_2 = _conv_bn(quarter, quarter, 3, 1, None)  # noqa: N815
        self.conv7X7_2 = _conv_bn(quarter, quarter, 3, 1, leaky)  # noqa: N815
        self.conv7x7_3 = _conv_bn(quarter, quarter, 3, 1, None)  # lower-case x, as in the files

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5 = self.conv5X5_1(x)
        branch7 = self.conv7x7_3(self.conv7X7_2(branch5))
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(branch5), branch7], dim=1))


class _Head(nn.Module):
    """A 1x1 convolution giving `values` numbers per anchor, flattened to (batch, anchors, values)."""

    def __init__(self, channels: int, anchors: int, values: int) -> None:
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(channels, anchors * values, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1x1(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.values)


class RetinaFace(nn.Module):
    """RetinaFace: body, FPN, SSH context modules and per-level class, box and landmark heads.

    `body` is "resnet" (`base` 64 and blocks (3, 4, 6, 3) for ResNet-50) or "mobilenet" (`base` 8
    for MobileNet-0.25). `forward` takes BGR pixels less `BGR_MEAN` and returns box offsets,
    face probabilities and landmark offsets for every prior of `prior_boxes`.
    """

    def __init__(self, *, body: str, base: int, channels: int, blocks: Sequence[int] = (3, 4, 6, 3)) -> None:
        super().__init__()
        if body not in ("resnet", "mobilenet"):
            raise ValueError(f"unknown RetinaFace body {body!r}")
        self.body: ResNetBody | MobileNetBody = ResNetBody(base, blocks) if body == "resnet" else MobileNetBody(base)
        leaky = 0.1 if channels <= 64 else 0.0  # facexlib's rule, for the FPN and SSH alike
        self.fpn = FPN(self.body.out_channels, channels, leaky)
        self.ssh1, self.ssh2, self.ssh3 = (SSH(channels, leaky) for _ in range(3))
        anchors = len(ANCHOR_SIZES[0])
        self.ClassHead = nn.ModuleList(_Head(channels, anchors, 2) for _ in STEPS)  # noqa: N815
        self.BboxHead = nn.ModuleList(_Head(channels, anchors, 4) for _ in STEPS)  # noqa: N815
        self.LandmarkHead = nn.ModuleList(_Head(channels, anchors, 10) for _ in STEPS)  # noqa: N815

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pyramid = self.fpn(self.body(x))
        features = [ssh(level) for ssh, level in zip((self.ssh1, self.ssh2, self.ssh3), pyramid, strict=True)]
        boxes = torch.cat([head(f) for head, f in zip(self.BboxHead, features, strict=True)], dim=1)
        logits = torch.cat([head(f) for head, f in zip(self.ClassHead, features, strict=True)], dim=1)
        landmarks = torch.cat([head(f) for head, f in zip(self.LandmarkHead, features, strict=True)], dim=1)
        return boxes, logits.softmax(dim=-1), landmarks


def prior_boxes(height: int, width: int) -> torch.Tensor:
    """The anchors for an input of `height` x `width`: (n, 4) as centre x, centre y, width, height,
    relative to the input size, in the heads' order (level, row, column, anchor)."""
    priors = []
    for sizes, step in zip(ANCHOR_SIZES, STEPS, strict=True):
        rows, cols = -(-height // step), -(-width // step)
        cy, cx = torch.meshgrid(
            (torch.arange(rows) + 0.5) * step / height, (torch.arange(cols) + 0.5) * step / width, indexing="ij"
        )
        per_size = [
            torch.stack([cx, cy, torch.full_like(cx, size / width), torch.full_like(cy, size / height)], dim=-1)
            for size in sizes
        ]
        priors.append(torch.stack(per_size, dim=2).reshape(-1, 4))
    return torch.cat(priors)


def decode_boxes(offsets: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """Box offsets (n, 4) against `priors` → corners x1, y1, x2, y2 (relative units, like the priors)."""
    centres = priors[:, :2] + offsets[:, :2] * VARIANCES[0] * priors[:, 2:]
    sizes = priors[:, 2:] * torch.exp(offsets[:, 2:] * VARIANCES[1])
    return torch.cat([centres - sizes / 2, centres + sizes / 2], dim=1)


def decode_landmarks(offsets: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """Landmark offsets (n, 10) against `priors` → five (x, y) points per prior, (n, 5, 2)."""
    points = offsets.reshape(-1, 5, 2)
    return priors[:, None, :2] + points * VARIANCES[0] * priors[:, None, 2:]


def non_max_suppression(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes kept, best score first: each box overlapping a better one by more than
    `iou_threshold` (intersection over union) is dropped."""
    areas = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    order = torch.sort(scores, descending=True, stable=True).indices
    kept: list[int] = []
    while order.numel() > 0:
        best, rest = int(order[0]), order[1:]
        kept.append(best)
        top_left = torch.maximum(boxes[rest, :2], boxes[best, :2])
        bottom_right = torch.minimum(boxes[rest, 2:], boxes[best, 2:])
        intersection = (bottom_right - top_left).clamp(min=0).prod(dim=1)
        iou = intersection / (areas[rest] + areas[best] - intersection).clamp(min=1e-12)
        order = rest[iou <= iou_threshold]
    return torch.tensor(kept, dtype=torch.long)


def _model_for(name: str, state: Mapping[str, torch.Tensor]) -> RetinaFace:
    """A RetinaFace of the body and widths these tensors have (random weights)."""
    if "fpn.output1.0.weight" not in state or "ClassHead.0.conv1x1.weight" not in state:
        raise FaceDetectorError(
            f"{name} is not a RetinaFace face detector (no fpn.output1 or ClassHead tensors); "
            "expected facexlib's detection_Resnet50_Final.pth or detection_mobilenet0.25_Final.pth"
        )
    channels = state["fpn.output1.0.weight"].shape[0]
    anchors = state["ClassHead.0.conv1x1.weight"].shape[0] // 2
    if anchors != len(ANCHOR_SIZES[0]):
        raise FaceDetectorError(f"{name}: {anchors} anchors per location, RetinaFace has {len(ANCHOR_SIZES[0])}")
    if "body.conv1.weight" in state:
        blocks = [
            len({key.split(".")[2] for key in state if key.startswith(f"body.layer{layer}.")}) for layer in (1, 2, 3, 4)
        ]
        if 0 in blocks:
            raise FaceDetectorError(f"{name}: a ResNet body without all of layer1 to layer4")
        return RetinaFace(body="resnet", base=state["body.conv1.weight"].shape[0], channels=channels, blocks=blocks)
    if "body.stage1.0.0.weight" in state:
        return RetinaFace(body="mobilenet", base=state["body.stage1.0.0.weight"].shape[0], channels=channels)
    raise FaceDetectorError(f"{name}: the body is neither a ResNet (body.conv1) nor a MobileNet (body.stage1)")


def load_face_detector(
    path: Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> RetinaFace:
    """A RetinaFace with the file's weights (ResNet or MobileNet body, read off the tensors), in eval mode."""
    path = Path(path)
    state = read_tensor_state(path, FaceDetectorError, strip_prefix="module.")
    model = _model_for(path.name, state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first_line = str(exc).splitlines()[0]
        raise FaceDetectorError(f"{path.name} does not fit the RetinaFace architecture: {first_line}") from None
    return model.to(device=device, dtype=dtype).eval()


def detect_faces(
    model: RetinaFace,
    image: Image.Image,
    *,
    threshold: float = 0.9,
    nms_threshold: float = 0.4,
    max_side: int = 1024,
) -> list[DetectedFace]:
    """The faces in `image` scoring above `threshold`, best first, in the image's own pixels.

    An image larger than `max_side` is shrunk for detection and the results scaled back. Boxes
    are clipped to the image; landmarks are not (a face at the edge keeps its true geometry).
    """
    rgb = image.convert("RGB")
    width, height = rgb.size
    if max(width, height) > max_side:
        factor = max_side / max(width, height)
        rgb = rgb.resize((max(1, round(width * factor)), max(1, round(height * factor))), Image.Resampling.BILINEAR)
    in_width, in_height = rgb.size
    parameter = next(model.parameters())
    bgr = np.asarray(rgb, dtype=np.float32)[:, :, ::-1] - np.asarray(BGR_MEAN, dtype=np.float32)
    pixels = torch.from_numpy(bgr.copy()).permute(2, 0, 1).unsqueeze(0).to(parameter.device, parameter.dtype)
    with torch.inference_mode():
        offsets, probabilities, landmark_offsets = (t[0].float().cpu() for t in model(pixels))
    priors = prior_boxes(in_height, in_width)
    if priors.shape[0] != offsets.shape[0]:
        raise FaceDetectorError(f"the model gave {offsets.shape[0]} predictions for {priors.shape[0]} anchors")
    scores = probabilities[:, 1]
    candidates = torch.nonzero(scores > threshold).flatten()
    candidates = candidates[torch.sort(scores[candidates], descending=True, stable=True).indices[:PRE_NMS_LIMIT]]
    scale = torch.tensor([width, height], dtype=torch.float32)  # relative units → original pixels
    boxes = decode_boxes(offsets[candidates], priors[candidates]) * scale.repeat(2)
    clipped = torch.stack([boxes[:, 0::2].clamp(0, width), boxes[:, 1::2].clamp(0, height)], dim=-1).reshape(-1, 4)
    points = decode_landmarks(landmark_offsets[candidates], priors[candidates]) * scale
    faces = []
    for index in non_max_suppression(boxes, scores[candidates], nms_threshold).tolist():
        x1, y1, x2, y2 = clipped[index].tolist()
        faces.append(DetectedFace(
            box=(x1, y1, x2, y2),
            score=float(scores[candidates[index]]),
            landmarks=tuple((float(x), float(y)) for x, y in points[index].tolist()),
        ))
    return faces


# Where the tiny model puts the five landmarks, in anchor sizes from its anchor's centre (x right,
# y down): eyes above, nose, mouth corners below; the eyes 0.16 anchors (82 px) apart. In
# proportion to the anchor, so a face found on a picture enlarged for detection (as the face
# restorer enlarges small pictures to 640 px) still has its eyes apart in the original.
_TINY_FACE = ((-0.08, -0.06), (0.08, -0.06), (0.0, 0.01), (-0.05, 0.08), (0.05, 0.08))


def write_tiny_face_detector(path: Path, *, seed: int = 0, always_detect: bool = True) -> Path:
    """A random-weight RetinaFace (MobileNet body at base width 2, 16 channels) as `.pth` or `.safetensors`.

    Its heads ignore the body (zero weights, set biases), so what it finds depends only on the
    picture's size. With `always_detect` the largest anchors (512 pixels, stride 32) score
    0.99995 and every other anchor 0.00005: smaller anchors would leave dozens of overlapping
    faces after suppression, these leave one on a small picture and a handful on a large one
    (ties go to the anchor nearest the top left). Boxes are the anchors themselves, and the five
    landmarks a face 0.16 anchors (82 pixels) between the eyes, at each anchor's centre. Without `always_detect`
    nothing scores above 0.0001.
    """
    from runtime.tiny.model import (
        save_safetensors_atomically,
        write_file_atomically,
    )

    path = Path(path)
    background, face = [5.0, -5.0], [-5.0, 5.0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RetinaFace(body="mobilenet", base=2, channels=16)
    with torch.no_grad():
        for level, heads in enumerate(zip(model.ClassHead, model.BboxHead, model.LandmarkHead, strict=True)):
            for head in heads:
                head.conv1x1.weight.zero_()
                head.conv1x1.bias.zero_()
            class_head, _, landmark_head = heads
            largest = always_detect and level == len(STEPS) - 1
            class_head.conv1x1.bias.copy_(torch.tensor(background + (face if largest else background)))
            # a landmark lies at value * variance * anchor size from the anchor's centre
            layout = torch.tensor(_TINY_FACE).flatten() / VARIANCES[0]
            landmark_head.conv1x1.bias.copy_(torch.cat([layout for _ in ANCHOR_SIZES[level]]))
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if path.suffix.lower() == ".safetensors":
        return save_safetensors_atomically(state, path)
    return write_file_atomically(path, lambda name: torch.save(state, name))
