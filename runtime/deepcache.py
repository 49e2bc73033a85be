"""DeepCache step caching on a diffusers UNet, for one pipeline call only (A1111's "sd-webui-deepcache").

On a cached call the UNet runs only its shallow layers: the LDM input blocks 0..`level` (`conv_in`,
then each down block's resnet/attention layers and downsampler in order) and the matching output
blocks, and takes what the deeper layers (the rest of the down blocks, the mid block, the first
output blocks) gave at the last full call. That is DeepCache's "reuse the high-level features"
(Ma, Fang & Wang, 2023), with the extension's cache levels and its schedule of full and cached
calls (`a1111/deepcache.py`). Our own implementation against `UNet2DConditionModel`, with no
forward of our own: while the `with` lasts, each deep layer's `forward` is wrapped to record its
output on a full call and hand that output back, without computing, on a cached one; a down or up
block whose layers are all deep is wrapped whole. A UNet hook (`module_hooks.around_calls`) counts
the calls and decides which kind each is.

Differences from the extension, where it could not be the same or should not be: a cached call
reuses the last full call's features (the extension, starting, may reuse an older full call's); a
call whose input has another shape than the last full call's (NGMS's halved batch) runs in full; a
level past the UNet's last input block is an error (the extension silently takes the last block).

The cached UNet is shared by every later batch: the wrappers and the hook come off on exit,
normal or not (an exception, a cancelled chunk), leaving each module's `forward` as it was (an
instance `forward` someone else set, as accelerate's offload hooks do, is put back).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from a1111.deepcache import DeepCachePass
from runtime.module_hooks import around_calls

__all__ = ["DeepCacheError", "DeepCacheState", "deep_cache", "deep_layers", "input_block_count"]

_ABSENT = object()


class DeepCacheError(ValueError):
    """A cache level the UNet does not have, or a UNet whose block layout is not SD's."""


@dataclass
class DeepCacheState:
    """One pipeline call's cache: the call count, whether the current call is cached, the deep
    layers' outputs of the last full call and its input's shape; `full` and `cached` count the calls."""

    plan: DeepCachePass
    index: int = -1  # the extension's count: the first call is -1
    replaying: bool = False
    outputs: dict[int, Any] = field(default_factory=dict)
    shape: tuple[Any, ...] | None = None
    full: int = 0
    cached: int = 0

    def start_call(self, shape: tuple[Any, ...]) -> None:
        plan = self.plan
        self.replaying = (
            self.index > plan.enable_after and self.index % plan.full_run_step_rate != 0 and shape == self.shape
        )
        if self.replaying:
            self.cached += 1
        else:
            self.full += 1
            self.outputs.clear()
            self.shape = shape

    def end_call(self) -> None:
        self.index += 1
        self.replaying = False


def _layers(block: torch.nn.Module, *, up: bool) -> list[list[torch.nn.Module]]:
    """A down or up block's LDM blocks in order: each resnet with its attention; a down block's
    downsampler is a block of its own, an up block's upsampler belongs to its last layer."""
    resnets = list(getattr(block, "resnets", []))
    attentions = list(getattr(block, "attentions", None) or [])
    if attentions and len(attentions) != len(resnets):
        raise DeepCacheError(f"{type(block).__name__} has {len(resnets)} resnets and {len(attentions)} attentions")
    layers = [[resnet, *([attentions[i]] if attentions else [])] for i, resnet in enumerate(resnets)]
    samplers = list(getattr(block, "upsamplers" if up else "downsamplers", None) or [])
    if samplers and up:
        layers[-1] += samplers
    elif samplers:
        layers.append(samplers)
    return layers


def input_block_count(unet: torch.nn.Module) -> int:
    """How many LDM input blocks `unet` has (`conv_in` and its down blocks' layers): the levels 0..n-1."""
    return 1 + sum(len(_layers(block, up=False)) for block in unet.down_blocks)


def deep_layers(unet: torch.nn.Module, level: int) -> list[torch.nn.Module]:
    """The modules a call cached at `level` does not run: the down blocks' layers past input block
    `level`, the mid block, the output blocks before the one that mirrors it; whole blocks where
    all of a block's layers are deep. `DeepCacheError` for a level or a UNet this cannot cache."""
    count = input_block_count(unet)
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level < count:
        raise DeepCacheError(
            f"the DeepCache level must be from 0 to {count - 1} for this checkpoint's UNet "
            f"({count} input blocks), not {level!r}"
        )
    if getattr(unet, "mid_block", None) is None:
        raise DeepCacheError("DeepCache needs a UNet with a mid block")
    output_count = sum(len(_layers(block, up=True)) for block in unet.up_blocks)
    if output_count != count:
        raise DeepCacheError(f"this UNet's up blocks have {output_count} layers for {count} input blocks")
    deep: list[torch.nn.Module] = []
    index = 1  # input block 0 is conv_in, which always runs
    for block in unet.down_blocks:
        layers = _layers(block, up=False)
        indices = range(index, index + len(layers))
        index += len(layers)
        if indices[0] > level:
            deep.append(block)
        else:
            deep += [module for i, layer in zip(indices, layers, strict=True) if i > level for module in layer]
    deep.append(unet.mid_block)
    first_shallow = count - 1 - level  # the output block that takes the cached features
    index = 0
    for block in unet.up_blocks:
        layers = _layers(block, up=True)
        indices = range(index, index + len(layers))
        index += len(layers)
        if indices[-1] < first_shallow:
            deep.append(block)
        else:
            deep += [module for i, layer in zip(indices, layers, strict=True) if i < first_shallow for module in layer]
    return deep


def _recording_or_replaying(state: DeepCacheState, key: int, forward: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if state.replaying:
            return state.outputs[key]
        output = forward(*args, **kwargs)
        state.outputs[key] = output
        return output

    return wrapped


@contextmanager
def deep_cache(unet: torch.nn.Module, plan: DeepCachePass | None) -> Iterator[DeepCacheState | None]:
    """Within the `with`, `unet`'s calls cache as `plan` says (None: nothing is touched, yields None).

    Raises `DeepCacheError` (before touching the UNet) for a level this UNet does not have. Yields
    the call's `DeepCacheState` (its `full` and `cached` counts). On exit every `forward` is the
    module's own again and the hook is gone.
    """
    if plan is None:
        yield None
        return
    deep = deep_layers(unet, plan.level)
    state = DeepCacheState(plan)
    own = [vars(module).get("forward", _ABSENT) for module in deep]

    def before(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        sample = args[0] if args else kwargs["sample"]
        state.start_call((tuple(sample.shape), sample.dtype, sample.device))

    def after(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        state.end_call()

    try:
        for key, module in enumerate(deep):
            module.forward = _recording_or_replaying(state, key, module.forward)
        with around_calls(unet, before, after):
            yield state
    finally:
        for module, forward in zip(deep, own, strict=True):
            if forward is _ABSENT:
                vars(module).pop("forward", None)
            else:
                module.forward = forward
        state.outputs.clear()
