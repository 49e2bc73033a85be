"""Small valid `.safetensors` files written by hand (no torch), for tests that need a model file
the registry will list (`inference.model_files.model_file_check` refuses anything else)."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from pathlib import Path

DTYPE_BYTES = {"U8": 1, "F16": 2, "BF16": 2, "F32": 4, "I64": 8}


def safetensors_bytes(
    tensors: Mapping[str, tuple[str, tuple[int, ...]]], *, metadata: Mapping[str, str] | None = None, fill: bytes = b"\0",
) -> bytes:
    """A file with each named tensor (dtype, shape), its data `fill` repeated, laid out in order."""
    header: dict[str, object] = {}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = math.prod(shape) * DTYPE_BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = dict(metadata)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    data = (fill * (offset // max(len(fill), 1) + 1))[:offset]
    return struct.pack("<Q", len(raw)) + raw + data


def write_safetensors(path: Path, tensors: Mapping[str, tuple[str, tuple[int, ...]]], **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(safetensors_bytes(tensors, **kwargs))
    return path


def write_placeholder_model(path: Path, text: str = "placeholder") -> Path:
    """A valid safetensors file whose one tensor holds `text` (distinct texts, distinct hashes):
    listed by the registry, not loadable as any real model."""
    data = text.encode()
    return write_safetensors(path, {"placeholder": ("U8", (len(data),))}, fill=data)
