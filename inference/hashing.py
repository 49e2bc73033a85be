"""Hashing shared by the model registry, the job services and the worker (pure; imports no torch)."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, streamed in 1 MB chunks (A1111's short model hash is ``[:10]``)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def bounded_key(key: str, limit: int) -> str:
    """`key` itself when it fits in `limit` characters, else a fixed-length digest of it.

    Derived keys (the set of extra networks a batch shares) are compared for equality only, so a
    digest keeps their meaning; short ones stay readable. Stored in columns of `limit`, they can
    then never overflow them, whatever a prompt names (PostgreSQL refuses an overlong value).
    """
    if len(key) <= limit:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()
