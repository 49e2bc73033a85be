"""Hooks around a module's calls for the length of a block (no Django).

Several runtime features change what one pipeline call's UNet sees or returns without touching
the cached module (composable diffusion's extra rows, NGMS's skipped negative half): each is a
pair of hooks that must come off again whatever happens inside the block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

Before = Callable[[torch.nn.Module, tuple[Any, ...], dict[str, Any]], tuple[tuple[Any, ...], dict[str, Any]] | None]
After = Callable[[torch.nn.Module, tuple[Any, ...], dict[str, Any], Any], Any]


@contextmanager
def around_calls(module: torch.nn.Module, before: Before, after: After) -> Iterator[None]:
    """While in the block, `before(module, args, kwargs)` may replace each call's arguments and
    `after(module, args, kwargs, output)` its output (torch's keyword-aware hooks)."""
    handles = [
        module.register_forward_pre_hook(before, with_kwargs=True),
        module.register_forward_hook(after, with_kwargs=True),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
