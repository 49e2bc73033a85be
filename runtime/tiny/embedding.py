"""Write a tiny textual-inversion embedding for tests and the demo, in A1111's ``.safetensors`` layout.

The file holds one float32 tensor ``emb_params`` of shape ``[n_vectors, width]`` (the layout A1111
and kohya write), with random values of the spread of CLIP token embeddings (std 0.02),
deterministic per seed. ``width`` must be the text encoder's hidden size (32 for the tiny model,
768 for SD1.x). The file's stem is the word that triggers the embedding in a prompt.
"""

from __future__ import annotations

from pathlib import Path

import torch

from runtime.tiny.model import save_safetensors_atomically

__all__ = ["write_tiny_embedding"]

_TOKEN_EMBEDDING_STD = 0.02  # CLIP's initializer_range for token embeddings


def write_tiny_embedding(path: Path, *, width: int, n_vectors: int = 2, seed: int = 0) -> Path:
    """Write a random ``[n_vectors, width]`` embedding to ``path`` (atomically); returns ``path``.

    The global torch RNG is untouched.
    """
    if width < 1 or n_vectors < 1:
        raise ValueError(f"width and n_vectors must be positive, not {width} and {n_vectors}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    vectors = torch.randn(n_vectors, width, generator=generator, dtype=torch.float32) * _TOKEN_EMBEDDING_STD
    return save_safetensors_atomically({"emb_params": vectors.contiguous()}, path)
