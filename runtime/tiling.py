"""A1111's "Tiling": images that repeat seamlessly, by circular padding in every convolution.

With every `Conv2d` of the UNet and the VAE padding circularly, the image wraps around at its
edges: its right edge continues its left, its bottom its top, so copies of it tile a wall
without seams. The same switch A1111 flips (`padding_mode = "circular"`), for one call only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def seamless(*modules: torch.nn.Module, enabled: bool = True) -> Iterator[None]:
    """Within the `with`, the convolutions of `modules` pad circularly; restored on exit, normal or not."""
    if not enabled:
        yield
        return
    convolutions = [layer for module in modules for layer in module.modules() if isinstance(layer, torch.nn.Conv2d)]
    before = [layer.padding_mode for layer in convolutions]
    try:
        for layer in convolutions:
            layer.padding_mode = "circular"
        yield
    finally:
        for layer, mode in zip(convolutions, before, strict=True):
            layer.padding_mode = mode
