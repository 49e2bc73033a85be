"""Write a small random-weight A1111 hypernetwork file, for tests and the demo.

The file has the exact layout A1111 1.10 saves (``{width: (k_state_dict, v_state_dict)}`` plus its
metadata keys) with layer structure ``[1, 2, 1]``, ReLU, and dropout after the first layer, so the
second Linear sits at Sequential index 3 (``linear.3.*``): loading it checks that the module layout,
dropout included, is rebuilt as A1111 builds it. Its weights are drawn from ``seed`` and large
enough (fan-in scaled, unlike A1111's near-zero training init) to change a 64x64 tiny-sd image
visibly at strength 1. It is written as ``.pt`` (what A1111 writes) or as ``.safetensors``
(tensors ``<width>.<0|1>.<parameter>``, metadata as strings in the header); both hold the same
weights for the same seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from runtime.networks.hypernetwork import HypernetworkModule, dropout_structure_for
from runtime.tiny.model import write_file_atomically

__all__ = ["write_tiny_hypernetwork"]

TINY_LAYER_STRUCTURE = (1, 2, 1)
TINY_ACTIVATION = "relu"
TINY_DROPOUT_STRUCTURE = dropout_structure_for(TINY_LAYER_STRUCTURE, use_dropout=True, last_layer_dropout=True)
FORMATS = ("pt", "safetensors")


def _random_state(width: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A random module's ``state_dict()`` (an OrderedDict with ``_metadata``, as A1111 saves it)."""
    module = HypernetworkModule(
        width,
        layer_structure=TINY_LAYER_STRUCTURE,
        activation_func=TINY_ACTIVATION,
        add_layer_norm=False,
        activate_output=False,
        dropout_structure=TINY_DROPOUT_STRUCTURE,
    )
    with torch.no_grad():
        for parameter in module.parameters():
            # Weights ~ N(0, 4/fan_in), biases ~ N(0, 0.01): an MLP output as large as its input.
            scale = 2.0 / parameter.shape[-1] ** 0.5 if parameter.ndim == 2 else 0.1
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    return module.state_dict()


def write_tiny_hypernetwork(path: Path, *, width: int, seed: int = 0, fmt: str = "pt") -> Path:
    """Write a random hypernetwork with k/v modules for context ``width`` to ``path``; returns ``path``.

    ``fmt`` is ``"pt"`` (A1111's pickle layout, plain data only) or ``"safetensors"``. Parent folders
    are created; the file is written to a temporary name and renamed into place. The global torch
    RNG is untouched.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, not {fmt!r}")
    if width <= 0:
        raise ValueError(f"width must be positive, not {width}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    state_k = _random_state(width, generator)
    state_v = _random_state(width, generator)
    metadata: dict[str, object] = {
        "name": path.stem,
        "step": 0,
        "layer_structure": list(TINY_LAYER_STRUCTURE),
        "activation_func": TINY_ACTIVATION,
        "is_layer_norm": False,
        "weight_initialization": "Normal",
        "use_dropout": True,
        "activate_output": False,
        "last_layer_dropout": True,
        "dropout_structure": list(TINY_DROPOUT_STRUCTURE),
        "sd_checkpoint": None,
        "sd_checkpoint_name": None,
    }
    def write(name: str) -> None:
        if fmt == "pt":
            torch.save({width: (state_k, state_v), **metadata}, name)
        else:
            tensors = {f"{width}.0.{key}": t for key, t in state_k.items()}
            tensors.update({f"{width}.1.{key}": t for key, t in state_v.items()})
            header = {key: value if isinstance(value, str) else json.dumps(value) for key, value in metadata.items()}
            save_file(tensors, name, metadata={"format": "pt", **header})

    write_file_atomically(path, write)
    return path
