"""Face restoration ("Restore faces"): find faces, restore each with GFPGAN or CodeFormer, paste back.

A1111 does this with facexlib's FaceRestoreHelper; this is the same procedure, written here
because facexlib needs torchvision:

1. RetinaFace (`detection.py`) finds the faces and their five landmarks. Images whose
   short side is under 640 px are enlarged for detection, as A1111 asks facexlib to do.
2. Each face is aligned onto the FFHQ five-point template (a similarity transform, estimated
   robustly from the landmarks) and cropped to the restorer's square size.
3. The restorer (`gfpgan.py` or `codeformer.py`) redraws the crop.
4. The crop is warped back and blended in through a mask eroded and blurred in proportion
   to the face's size, so no seam shows. Pixels away from faces are untouched.

facexlib can also refine the paste mask with a face-parsing network; A1111 does not, and
neither does this.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from runtime.faces.detection import DetectedFace, RetinaFace, detect_faces

# The five landmarks (eyes, nose, mouth corners) of an aligned FFHQ face in a 512 px crop.
FFHQ_TEMPLATE_512 = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
     [201.26117, 371.41043], [313.08905, 371.15118]],
    dtype=np.float32,
)
DETECTION_MIN_SIDE = 640  # facexlib's `resize=640`, as A1111 calls it
DETECTION_THRESHOLD = 0.8  # facexlib's default confidence
MIN_EYE_DISTANCE = 5.0  # px; smaller "faces" are noise (A1111's eye_dist_threshold)
CROP_BORDER = (135, 133, 132)  # facexlib's fill outside the image: a neutral grey

RESTORERS = ("CodeFormer", "GFPGAN")  # A1111's face_restoration_model names, its default first


@dataclass(frozen=True)
class FaceNet:
    """A loaded restorer: GFPGAN or CodeFormer, which both redraw square RGB crops in [-1, 1]."""

    restorer: str
    module: torch.nn.Module

    @property
    def face_size(self) -> int:
        return int(self.module.face_size)

    def restore(self, crops: torch.Tensor, fidelity: float) -> torch.Tensor:
        if self.restorer == "CodeFormer":
            return self.module(crops, fidelity=fidelity)
        return self.module(crops)


def load_face_net(restorer: str, path: Path, *, device: torch.device | str, dtype: torch.dtype) -> FaceNet:
    """The restorer network of a file (`FaceRestorerError` when it is not one)."""
    if restorer == "GFPGAN":
        from runtime.faces.gfpgan import load_gfpgan

        return FaceNet(restorer, load_gfpgan(path, device=device, dtype=dtype))
    if restorer == "CodeFormer":
        from runtime.faces.codeformer import load_codeformer

        return FaceNet(restorer, load_codeformer(path, device=device, dtype=dtype))
    raise ValueError(f"unknown face restorer {restorer!r}: use one of {', '.join(RESTORERS)}")


def _detect(detector: RetinaFace, image: Image.Image) -> list[DetectedFace]:
    """Faces with their landmarks in `image`'s pixels (small images are enlarged to detect)."""
    scale = max(1.0, DETECTION_MIN_SIDE / min(image.size))
    probe = image if scale == 1.0 else image.resize(
        (round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC
    )
    faces = detect_faces(detector, probe, threshold=DETECTION_THRESHOLD, max_side=max(1024, max(probe.size)))
    if scale != 1.0:
        faces = [
            DetectedFace(
                box=tuple(v / scale for v in face.box),  # type: ignore[arg-type]
                score=face.score,
                landmarks=tuple((x / scale, y / scale) for x, y in face.landmarks),
            )
            for face in faces
        ]
    return [face for face in faces if np.hypot(*np.subtract(face.landmarks[0], face.landmarks[1])) >= MIN_EYE_DISTANCE]


def _alignment(face: DetectedFace, size: int) -> np.ndarray | None:
    """The 2×3 similarity transform taking the face's landmarks onto the template."""
    template = FFHQ_TEMPLATE_512 * (size / 512.0)
    matrix, _ = cv2.estimateAffinePartial2D(np.array(face.landmarks, dtype=np.float32), template, method=cv2.LMEDS)
    return matrix


def _run_net(net: FaceNet, crop: np.ndarray, fidelity: float) -> np.ndarray:
    parameter = next(net.module.parameters())
    pixels = torch.from_numpy(crop).permute(2, 0, 1).unsqueeze(0).to(parameter.device, parameter.dtype)
    pixels = pixels / 127.5 - 1.0
    with torch.inference_mode():
        out = net.restore(pixels, fidelity)
    out = ((out.float().clamp(-1, 1) + 1.0) * 127.5).round()
    return out[0].permute(1, 2, 0).cpu().numpy().astype(np.uint8)


def _paste(canvas: np.ndarray, restored: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """`restored` (the aligned crop) warped back into `canvas` through a soft-edged mask."""
    height, width = canvas.shape[:2]
    size = restored.shape[0]
    inverse = cv2.invertAffineTransform(matrix)
    back = cv2.warpAffine(restored, inverse, (width, height), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(np.ones((size, size), np.float32), inverse, (width, height), flags=cv2.INTER_LINEAR)
    mask = cv2.erode(mask, np.ones((3, 3), np.uint8))  # drop the interpolated rim
    edge = max(1, int(np.sqrt(float(mask.sum()))) // 20)  # a twentieth of the face's side
    mask = cv2.erode(mask, np.ones((2 * edge, 2 * edge), np.uint8))
    mask = cv2.GaussianBlur(mask, (2 * edge + 1, 2 * edge + 1), 0)[..., None]
    return mask * back.astype(np.float32) + (1.0 - mask) * canvas


def restore_faces(
    image: Image.Image, *, detector: RetinaFace, net: FaceNet, fidelity: float = 0.5
) -> tuple[Image.Image, int]:
    """`image` with every face the detector finds restored, and how many faces that was."""
    return restore_detected(image, _detect(detector, image.convert("RGB")), net=net, fidelity=fidelity)


def restore_detected(
    image: Image.Image, faces: list[DetectedFace], *, net: FaceNet, fidelity: float = 0.5
) -> tuple[Image.Image, int]:
    """`image` with the given faces restored, and how many were (degenerate landmarks are skipped).

    With nothing to restore the image is returned as it was (the same object).
    """
    source = np.asarray(image.convert("RGB"))
    canvas = source.astype(np.float32)
    size = net.face_size
    restored = 0
    for face in faces:
        matrix = _alignment(face, size)
        if matrix is None:
            continue
        crop = cv2.warpAffine(source, matrix, (size, size), borderMode=cv2.BORDER_CONSTANT, borderValue=CROP_BORDER)
        canvas = _paste(canvas, _run_net(net, crop, fidelity), matrix)
        restored += 1
    if not restored:
        return image, 0
    return Image.fromarray(canvas.clip(0, 255).round().astype(np.uint8)), restored
