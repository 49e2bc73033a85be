"""A1111's upscaler names (pure): the aliases it lists for the Real-ESRGAN models it knows.

The model registry and the API read this table without loading torch; the upscaler itself
(RRDBNet) is :mod:`runtime.upscalers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["A1111_ALIASES"]

# A1111's names for the Real-ESRGAN models it knows → the file names they ship as.
A1111_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "R-ESRGAN 4x+": "RealESRGAN_x4plus",
        "R-ESRGAN 4x+ Anime6B": "RealESRGAN_x4plus_anime_6B",
        "R-ESRGAN 2x+": "RealESRGAN_x2plus",
    }
)
