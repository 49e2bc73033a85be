"""Live previews: what the image looks like mid-denoising, without running the VAE.

A1111's "Approx cheap" method: each latent pixel's four channels map linearly to RGB with
fixed coefficients fitted to each family's VAE, so a preview costs one small matrix product
(microseconds), not a decode. The picture is blurry and its colours approximate, which is all a
progress preview needs. Random-weight test models give noise-like previews, but the same code.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# latent channel → (R, G, B), from A1111's modules/sd_samplers_common.py ("Approx cheap")
SD_COEFFICIENTS = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473))
SDXL_COEFFICIENTS = (
    (0.3448, 0.4168, 0.4395), (-0.1953, -0.0290, 0.0250), (0.1074, 0.0886, -0.0163), (-0.3730, -0.2499, -0.2088),
)
PREVIEW_SCALE = 4  # preview pixels per latent pixel (the image has 8)


def latent_preview(latents: torch.Tensor, *, index: int = 0, xl: bool = False) -> Image.Image:
    """Latent `index` of a batch (`[batch, 4, h, w]`) as an RGB picture of `4w x 4h` pixels.

    A batch may hold several users' images: a preview is made from one image's latent only.
    """
    coefficients = torch.tensor(SDXL_COEFFICIENTS if xl else SD_COEFFICIENTS, dtype=torch.float32)
    rgb = torch.einsum("chw,cr->hwr", latents[index, :4].detach().float().cpu(), coefficients)
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    image = Image.fromarray(np.ascontiguousarray(pixels))
    return image.resize((image.width * PREVIEW_SCALE, image.height * PREVIEW_SCALE), Image.Resampling.BILINEAR)
