"""What every loader of a user-supplied weights file shares: refusing pickles, and naming a few keys.

LoRA, VAE and ControlNet files all load as `.safetensors` only (a `.ckpt`/`.pt` pickle can run
code when it is read), and their errors name at most `MAX_NAMED` offending tensors. Upscalers,
face restorers and the face detector ship as `.pth` too: `read_tensor_state` reads those with
torch's weights-only unpickler, which rebuilds tensors and plain containers and runs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file

MAX_NAMED = 3
# Where training code nests the weights: BasicSR's EMA copy first (what GFPGAN, CodeFormer and
# Real-ESRGAN ship), then its plain copy, then a Lightning-style state_dict.
STATE_WRAPPERS = ("params_ema", "params-ema", "params", "state_dict")


def read_tensor_state(path: Path, error: type[Exception], *, strip_prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors by name of a `.safetensors` or (weights-only) `.pth` file, unwrapped.

    Raises `error` naming the file when it cannot be read that way (a pickle with code in it,
    not a weights file at all) or holds no tensors by name; FileNotFoundError when missing.
    `strip_prefix` is removed from every key that has it (`module.` from multi-GPU training).
    """
    if not path.is_file():
        raise FileNotFoundError(path)
    safetensors = path.suffix.lower() == ".safetensors"
    try:
        state: object = load_file(str(path)) if safetensors else torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a pickle with code in it, or not a weights file at all
        how = "safetensors" if safetensors else "weights only"
        raise error(f"{path.name} cannot be read as {how} ({type(exc).__name__})") from None
    if isinstance(state, Mapping):
        wrapper = next((name for name in STATE_WRAPPERS if isinstance(state.get(name), Mapping)), None)
        state = state[wrapper] if wrapper else state
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise error(f"{path.name} holds no tensors by name")
    return {str(key).removeprefix(strip_prefix) if strip_prefix else str(key): value for key, value in state.items()}


def require_safetensors(path: Path, what: str, error: type[Exception]) -> None:
    """Raise `error` (a message naming `what`) for any other file type; FileNotFoundError if missing."""
    if path.suffix.lower() != ".safetensors":
        raise error(
            f"{what} {path.name!r} is not loaded: only .safetensors files are accepted "
            f"({path.suffix or 'no extension'} files may be pickles, which can run arbitrary code; "
            "convert it to .safetensors first)"
        )
    if not path.is_file():
        raise FileNotFoundError(path)


def few(keys: Iterable[str]) -> str:
    """Up to `MAX_NAMED` of `keys`, sorted, and how many more there are."""
    keys = sorted(keys)
    shown = ", ".join(keys[:MAX_NAMED])
    return shown if len(keys) <= MAX_NAMED else f"{shown} (and {len(keys) - MAX_NAMED} more)"
