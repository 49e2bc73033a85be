"""A1111's Extras on one image: upscale (a second upscaler blended in), then restore faces (no Django).

The steps and their order are A1111 1.10's postprocessing scripts (`scripts/postprocessing_
upscale.py`, `postprocessing_gfpgan.py`, `postprocessing_codeformer.py`):

* **Upscale**: a built-in resizer scales by the factor (`Lanczos`, `Nearest`), a model
  (ESRGAN family) runs once at its own scale; either is then resized (Lanczos) to the exact
  size when it differs, as A1111's `Upscaler.upscale` does. A second upscaler's result is
  blended over the first by its visibility; with a crop target the image is center-cropped.
  (A1111 runs a model again while it falls short, e.g. twice for ×8 with a 4x model; one
  pass here, then Lanczos, as the hires fix does: a second pass would need 16× the memory.)
* **GFPGAN**, then **CodeFormer**: faces restored (`faces/restoration.py`), the result blended
  with the image by the restorer's visibility.

The models come through callables, so the worker runtime keeps them in its own caches
(`WorkerRuntime.postprocess`).
"""

from __future__ import annotations

from collections.abc import Callable

from PIL import Image

from runtime.specs import PostprocessSpec, Resizer, RestoreStep, UpscaleStep
from runtime.upscalers import RRDBNet, upscale

BUILTIN_RESAMPLING = {"Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST}

UpscalerLoader = Callable[[Resizer], RRDBNet]
FaceRestorer = Callable[[Image.Image, RestoreStep], Image.Image]


def resize_builtin(image: Image.Image, name: str, *, factor: float, width: int, height: int) -> Image.Image:
    """A1111's Lanczos / Nearest upscalers: scale by `factor`, then Lanczos to the exact size if it differs."""
    scaled = image.resize((int(image.width * factor), int(image.height * factor)), BUILTIN_RESAMPLING[name])
    return scaled if scaled.size == (width, height) else scaled.resize((width, height), Image.Resampling.LANCZOS)


def _upscaled_by(image: Image.Image, resizer: Resizer, step: UpscaleStep, load: UpscalerLoader) -> Image.Image:
    if resizer.path:
        return upscale(load(resizer), image, width=step.width, height=step.height)
    return resize_builtin(image, resizer.name, factor=step.factor, width=step.width, height=step.height)


def center_crop(image: Image.Image, width: int, height: int) -> Image.Image:
    """The middle `width`×`height` of an image at least that large (A1111 pastes it centered on a canvas)."""
    left, top = image.width // 2 - width // 2, image.height // 2 - height // 2
    return image.crop((left, top, left + width, top + height))


def apply_upscale(image: Image.Image, step: UpscaleStep, load: UpscalerLoader) -> Image.Image:
    result = _upscaled_by(image, step.upscaler, step, load)
    if step.second is not None and step.second_visibility > 0:
        second = _upscaled_by(image, step.second, step, load)
        result = Image.blend(result, second.convert(result.mode), step.second_visibility)
    if step.crop is not None:
        result = center_crop(result, *step.crop)
    return result


def postprocess(image: Image.Image, spec: PostprocessSpec, *, load_upscaler: UpscalerLoader,
                restore_faces: FaceRestorer) -> Image.Image:
    """The image after every step of `spec`, in A1111's order."""
    result = image.convert("RGB")
    if spec.upscale is not None:
        result = apply_upscale(result, spec.upscale, load_upscaler)
    for step in spec.restore:
        restored = restore_faces(result, step)
        if restored is not result and step.visibility < 1.0:
            restored = Image.blend(result, restored.convert(result.mode), step.visibility)
        result = restored
    return result
