"""What every loader of a user-supplied weights file shares: refusing pickles, and naming a few keys.

LoRA, VAE and ControlNet files all load as `.safetensors` only (a `.ckpt`/`.pt` pickle can run
code when it is read), and their errors name at most `MAX_NAMED` offending tensors.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

MAX_NAMED = 3


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
