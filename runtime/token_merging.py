"""A1111's token merging (`token_merging_ratio`): ToMe for SD on a UNet, for one pipeline call only.

ToMe for SD (Bolya & Hoffman, 2023) merges the most similar image tokens before each
self-attention of the transformer blocks at the UNet's highest resolution and copies the result
back to the merged tokens afterwards: fewer tokens in the quadratic attention, a faster step, a
slightly different image. A1111 1.10 applies it with `tomesd` before sampling
(`sd_models.apply_token_merging`: the ratio, `use_rand=False`, self-attention only, the defaults
for the rest: the highest resolution only, 2x2 strides); this module does the same, so a ratio
merges the same tokens here as there. SDXL has no attention at its highest resolution, so there,
as in A1111, the option merges nothing and the image is the unmerged one.

Why `tomesd` and not our own: it still works with the diffusers we run (its block replaces
`BasicTransformerBlock.forward` by one written for diffusers 0.14, which computes the same thing
for the SD1.x/SD2.x/SDXL blocks, `norm_type="layer_norm"` with no positional embedding, feed-forward
chunking or GLIGEN); it is what A1111 runs, so images match A1111's; and it is small and MIT.
`check_supported` refuses a UNet whose blocks use anything that old forward would silently drop.

The cached UNet is shared by every later batch: `token_merging` patches it for the `with` only
and takes the patch off on exit, normal or not (an exception, a cancelled chunk), leaving the
blocks' classes and attributes as they were. Ratio 0 touches nothing, so it gives the very image
that no option gives.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from a1111.generation import MAX_TOKEN_MERGING_RATIO

__all__ = ["MAX_RATIO", "TokenMergingError", "check_supported", "token_merging"]

MAX_RATIO = MAX_TOKEN_MERGING_RATIO  # A1111's slider; with 2x2 strides tomesd merges at most the 3/4 of tokens that are not dst
_TOME_ATTRIBUTES = ("_tome_info",)  # what tomesd leaves behind on `remove_patch`


class TokenMergingError(ValueError):
    """A ratio out of range, or a UNet whose transformer blocks `tomesd` cannot patch faithfully."""


def _transformer_blocks(unet: torch.nn.Module) -> list[torch.nn.Module]:
    return [module for module in unet.modules() if any(c.__name__ == "BasicTransformerBlock" for c in type(module).__mro__)]


def check_supported(unet: torch.nn.Module) -> None:
    """Raise `TokenMergingError` unless every transformer block is one tomesd's forward reproduces."""
    for block in _transformer_blocks(unet):
        if getattr(block, "norm_type", "layer_norm") != "layer_norm" or getattr(block, "pos_embed", None) is not None:
            raise TokenMergingError(
                f"token merging supports SD1.x, SD2.x and SDXL UNets only; this one has {type(block).__name__} "
                f"blocks with norm {getattr(block, 'norm_type', '?')!r}"
            )
        if getattr(block, "_chunk_size", None) is not None:
            raise TokenMergingError("token merging cannot run with the UNet's feed-forward chunking on")


@contextmanager
def token_merging(unet: torch.nn.Module, ratio: float) -> Iterator[None]:
    """Within the `with`, `unet` merges `ratio` of its highest-resolution tokens before self-attention.

    `ratio` 0 (A1111's default) changes nothing. Raises `TokenMergingError` (before touching the
    UNet) for a ratio outside 0..`MAX_RATIO` or an unsupported UNet. On exit the blocks' classes
    are their own again and tomesd's hook and attributes are gone.
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio <= MAX_RATIO:
        raise TokenMergingError(f"token merging ratio must be a number from 0 to {MAX_RATIO}, not {ratio!r}")
    if ratio == 0:
        yield
        return
    import tomesd

    check_supported(unet)
    blocks = _transformer_blocks(unet)
    classes = [type(block) for block in blocks]
    had = {id(module): {name for name in _TOME_ATTRIBUTES if name in vars(module)} for module in (unet, *blocks)}
    try:
        tomesd.apply_patch(
            unet, ratio=float(ratio), max_downsample=1, sx=2, sy=2, use_rand=False,
            merge_attn=True, merge_crossattn=False, merge_mlp=False,
        )
        yield
    finally:
        tomesd.remove_patch(unet)
        for block, original in zip(blocks, classes, strict=True):
            block.__class__ = original
        for module in (unet, *blocks):
            for name in _TOME_ATTRIBUTES:
                if name in vars(module) and name not in had[id(module)]:
                    delattr(module, name)
