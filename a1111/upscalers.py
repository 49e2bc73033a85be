"""A1111's upscaler names (pure): the aliases it lists for the Real-ESRGAN models it knows.

The model registry and the API read this table without loading torch; the upscaler itself
(RRDBNet) is :mod:`runtime.upscalers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["A1111_ALIASES", "A1111_MODEL_UPSCALERS"]

# A1111's names for the Real-ESRGAN models it knows → the file names they ship as.
A1111_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "R-ESRGAN 4x+": "RealESRGAN_x4plus",
        "R-ESRGAN 4x+ Anime6B": "RealESRGAN_x4plus_anime_6B",
        "R-ESRGAN 2x+": "RealESRGAN_x2plus",
    }
)

# The model upscalers A1111 1.10 lists out of the box (it downloads their weights on first use).
# Here an operator installs them; a request naming one that is not installed degrades as A1111
# does when an upscale cannot run (see `ATELIER_STRICT_MISSING_MODELS`), any other name is refused.
A1111_MODEL_UPSCALERS: frozenset[str] = frozenset({
    "ESRGAN_4x", "LDSR", "R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B", "R-ESRGAN General 4xV3", "R-ESRGAN General WDN 4xV3",
    "R-ESRGAN AnimeVideo", "R-ESRGAN 2x+", "ScuNET GAN", "ScuNET PSNR", "SwinIR 4x", "DAT x2", "DAT x3", "DAT x4",
})
