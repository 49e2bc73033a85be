"""The NSFW censor (PAI's `--enable-nsfw-censor`): a safety-checker model flags images, which are blurred.

The model is the one Stable Diffusion ships with (`StableDiffusionSafetyChecker`: a CLIP vision
tower and concept embeddings), as a diffusers/transformers folder (`config.json` and
`model.safetensors`, e.g. CompVis/stable-diffusion-safety-checker) that the operator puts at
`ATELIER_SAFETY_CHECKER_DIR`. Nothing is downloaded: with the censor on and no model there, jobs
fail with a message saying where to put it, rather than returning unchecked images.

A flagged image is blurred beyond recognition (not replaced by black, as diffusers does, so
the member can still tell which image it was), and the job records which images were flagged,
so every API can say so. `write_tiny_safety_checker` writes a random-weight checker of the same
architecture for tests, whose thresholds make it flag every image or none.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class SafetyCheckerMissing(RuntimeError):
    """The censor is on but no checker model is installed (the message says where it goes)."""


class SafetyChecker:
    """A loaded checker: `flagged(images)` says which images show NSFW concepts."""

    def __init__(self, folder: Path, *, device: torch.device, dtype: torch.dtype) -> None:
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

        if not (folder / "config.json").is_file():
            raise SafetyCheckerMissing(
                f"the NSFW censor is on (ATELIER_NSFW_CENSOR) but no safety checker is installed at {folder}: put "
                "a StableDiffusionSafetyChecker folder there (config.json and model.safetensors, e.g. "
                "CompVis/stable-diffusion-safety-checker), or turn the censor off"
            )
        self.model = StableDiffusionSafetyChecker.from_pretrained(str(folder), local_files_only=True, torch_dtype=dtype)
        self.model.to(device).eval()
        self.device, self.dtype = device, dtype
        self.image_size = int(self.model.config.vision_config.image_size)

    def _pixels(self, images: list[Image.Image]) -> torch.Tensor:
        """CLIP's preprocessing: shortest side to the tower's size (bicubic), centre crop, normalise."""
        size = self.image_size
        batch = []
        for image in images:
            image = image.convert("RGB")
            scale = size / min(image.size)
            resized = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                                   Image.Resampling.BICUBIC)
            left, top = (resized.width - size) // 2, (resized.height - size) // 2
            array = np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
            batch.append((array - CLIP_MEAN) / CLIP_STD)
        return torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).to(self.device, self.dtype)

    def flagged(self, images: list[Image.Image]) -> list[bool]:
        if not images:
            return []
        placeholders = np.zeros((len(images), 1, 1, 3))  # the model blacks these out; we blur our own
        with torch.inference_mode():
            _, flags = self.model(clip_input=self._pixels(images), images=placeholders)
        return [bool(flag) for flag in flags]


def censor_image(image: Image.Image) -> Image.Image:
    """Blurred so that nothing in it can be made out: the radius is an eighth of the longer side."""
    return image.filter(ImageFilter.GaussianBlur(radius=max(image.size) / 8))


def write_tiny_safety_checker(folder: Path, *, flag_everything: bool, seed: int = 0) -> Path:
    """A random-weight `StableDiffusionSafetyChecker` with a tiny CLIP tower, written as a model folder.

    Its concept thresholds make it flag every image (`flag_everything`) or none: cosine
    similarity is always within [-1, 1]. Returns `folder`.
    """
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig

    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2,
                     "vocab_size": 1000},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = StableDiffusionSafetyChecker(config)
        threshold = -2.0 if flag_everything else 2.0
        with torch.no_grad():
            model.concept_embeds.normal_()
            model.special_care_embeds.normal_()
            model.concept_embeds_weights.fill_(threshold)
            model.special_care_embeds_weights.fill_(threshold)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    return folder
