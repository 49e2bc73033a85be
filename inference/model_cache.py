"""A worker's local copies of model files from the blob store, keyed by sha256 (issue 17).

A worker on another machine shares no file system with the web process: it reads each model a
job names (`ModelRef(key, sha256)`) from

1. the file at `model_file_path(key)` when this machine has it and its sha256 matches (a worker
   that mounts DATA_DIR, or the public folders baked into its image), else
2. its cache, `<root>/<sha256>/<file name>` (a folder: `<root>/<sha256>/<folder name>/…`), filled
   from the "models" storage (`inference/model_blobs.py` publishes there; the bucket's listing
   says whether a blob is a file or a folder, so a worker needs no table for it) once per machine:
   downloaded under a temporary name, its sha256 verified, renamed into place. A per-sha256 file
   lock (`fcntl.flock`) makes two worker processes on one host fetch it once.

Every use touches the entry; past `max_bytes` the least recently used entries are evicted, never
one that a batch of any worker process on this host is using (each holds a shared lock on the
entries it uses for the batch's length, `ModelFiles.batch`; eviction takes that lock exclusively
without waiting, and skips the entry when it cannot).

`ModelFiles` is what the runner asks: with no "models" storage it is exactly `model_file_path`.
The objects are owned by the worker process (`inference/runner/tasks.py`); their state is the cache
folder itself, so no module holds any.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.core.files.storage import Storage
from storages.utils import clean_name

from inference.jobspec import ModelRef
from inference.storage import model_file_path

logger = logging.getLogger(__name__)

LOCKS = ".locks"
_CHUNK = 1 << 20
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx")


class ModelUnavailable(RuntimeError):
    """A model this worker cannot get: the message names the model (for the job's owner)."""


@dataclass(frozen=True)
class BlobListing:
    """A blob as the store lists it: a folder's relative paths (none: a single file), its bytes."""

    files: tuple[str, ...]
    size: int


def _model_name(ref: ModelRef) -> str:
    return ref.key.rsplit("/", 1)[-1]


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _size_of(entry: Path) -> int:
    if entry.is_file():
        return entry.stat().st_size
    return sum(file.stat().st_size for file in entry.rglob("*") if file.is_file() and not file.is_symlink())


@dataclass
class ModelCache:
    """The blob cache of one host, in `root` (see the module docstring)."""

    root: Path
    max_bytes: int
    storage: Storage
    fetches: int = 0  # blobs this object downloaded (what tests, the worker's log and its report count)
    fetched_bytes: int = 0  # their bytes
    hits: int = 0  # uses answered by an entry already in the cache (fetched earlier, or by another process)
    _held: dict[str, int] = field(default_factory=dict)  # sha256 → the use lock's descriptor, this batch
    _in_batch: bool = False

    def __post_init__(self) -> None:
        (self.root / LOCKS).mkdir(parents=True, exist_ok=True)

    # --- use --------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Every entry `local_path` answers within is kept (never evicted) until the block ends."""
        self._in_batch = True
        try:
            yield
        finally:
            self._in_batch = False
            for descriptor in self._held.values():
                os.close(descriptor)
            self._held.clear()

    def local_path(self, ref: ModelRef) -> Path:
        """This machine's copy of `ref` (see the module docstring); `ModelUnavailable` naming it."""
        here = self._verified_here(ref)
        if here is not None:
            return here
        use_lock = self._lock(ref.sha256, "use", fcntl.LOCK_SH)  # before looking: eviction waits for no one
        try:
            entry = self.root / ref.sha256
            if entry.is_dir():
                self.hits += 1
            else:
                self._fetch_once(ref)
            os.utime(entry)  # touched: the most recently used
        except BaseException:
            os.close(use_lock)
            raise
        if self._in_batch and ref.sha256 not in self._held:
            self._held[ref.sha256] = use_lock
        else:
            os.close(use_lock)
        return self._entry_path(entry)

    def cached(self) -> list[str]:
        """The sha256 of every entry in the cache, least recently used first."""
        return [entry.name for entry in self._entries()]

    def _verified_here(self, ref: ModelRef) -> Path | None:
        from inference.model_registry import cached_sha256

        try:
            path = model_file_path(ref.key)
        except ValueError:
            return None
        if path.is_file():
            return path if cached_sha256(path) == ref.sha256 else None
        if path.is_dir():
            weights = [file for file in path.rglob("*") if file.is_file() and file.suffix in _WEIGHT_SUFFIXES]
            return path if any(cached_sha256(file) == ref.sha256 for file in weights) else None
        return None

    @staticmethod
    def _entry_path(entry: Path) -> Path:
        inside = [child for child in entry.iterdir() if not child.name.startswith(".")]
        return inside[0] if len(inside) == 1 else entry

    # --- fetch ------------------------------------------------------------------------------------

    def _fetch_once(self, ref: ModelRef) -> None:
        fetch_lock = self._lock(ref.sha256, "fetch", fcntl.LOCK_EX)  # one fetcher per host
        try:
            if (self.root / ref.sha256).is_dir():  # another process fetched it while we waited
                self.hits += 1
                return
            blob = self._blob(ref)
            if blob is None:
                raise ModelUnavailable(
                    f"the model {_model_name(ref)!r} is not on this worker and not in the model store "
                    "(it was never published: submit the job again, or ask an operator)"
                )
            self._evict(room_for=blob.size)
            staging = self.root / f".fetch-{ref.sha256}-{secrets.token_hex(4)}"
            staging.mkdir()
            try:
                self._download(ref, blob, staging)
                os.rename(staging, self.root / ref.sha256)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            self.fetches += 1
            self.fetched_bytes += blob.size
            logger.info("model cache fetched %s (%s, %d bytes)", ref.sha256, _model_name(ref), blob.size)
        finally:
            os.close(fetch_lock)

    def _object_key(self, object_name: str) -> str:
        return self.storage._normalize_name(clean_name(object_name))  # type: ignore[attr-defined]

    def _blob(self, ref: ModelRef) -> BlobListing | None:
        """What the store holds under `ref.sha256` (one LIST request), or None."""
        try:
            prefix = self._object_key(ref.sha256)
            objects = list(self.storage.bucket.objects.filter(Prefix=prefix))  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - boto's errors, said in the job's words
            raise ModelUnavailable(
                f"the model store could not be reached for {_model_name(ref)!r} ({type(exc).__name__})"
            ) from exc
        for item in objects:
            if item.key == prefix:
                return BlobListing(files=(), size=item.size)
        inside = [item for item in objects if item.key.startswith(prefix + "/")]
        if not inside:
            return None
        return BlobListing(files=tuple(item.key[len(prefix) + 1:] for item in inside), size=sum(i.size for i in inside))

    def _download(self, ref: ModelRef, blob: BlobListing, staging: Path) -> None:
        name = _model_name(ref)
        if blob.files:  # a folder: its files under its own name, the weights among them by sha256
            matched = False
            for relative in blob.files:
                target = staging / name / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                self._download_object(f"{ref.sha256}/{relative}", target, name)
                matched = matched or (target.suffix in _WEIGHT_SUFFIXES and _sha256_of(target) == ref.sha256)
            if not matched:
                raise ModelUnavailable(f"the model store's copy of {name!r} does not match its sha256: refused")
            return
        target = staging / name
        self._download_object(ref.sha256, target, name)
        if _sha256_of(target) != ref.sha256:
            raise ModelUnavailable(f"the model store's copy of {name!r} does not match its sha256: refused")

    def _download_object(self, object_name: str, target: Path, name: str) -> None:
        try:
            with target.open("wb") as handle:
                self.storage.bucket.Object(self._object_key(object_name)).download_fileobj(handle)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - boto's errors, said in the job's words
            raise ModelUnavailable(f"the model {name!r} could not be fetched from the model store ({type(exc).__name__})") from exc

    # --- eviction ---------------------------------------------------------------------------------

    def _entries(self) -> list[Path]:
        entries = [entry for entry in self.root.iterdir() if entry.is_dir() and len(entry.name) == 64]
        return sorted(entries, key=lambda entry: entry.stat().st_mtime_ns)

    def _evict(self, *, room_for: int) -> None:
        """Evict least recently used entries until `room_for` more bytes fit in `max_bytes`."""
        entries = [(entry, _size_of(entry)) for entry in self._entries()]
        total = sum(size for _, size in entries)
        for entry, size in entries:
            if total + room_for <= self.max_bytes:
                return
            if entry.name in self._held:
                continue
            try:
                lock = self._lock(entry.name, "use", fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a batch of some worker process on this host uses it
                continue
            try:
                doomed = self.root / f".evict-{entry.name}-{secrets.token_hex(4)}"
                os.rename(entry, doomed)
                shutil.rmtree(doomed, ignore_errors=True)
                total -= size
                logger.info("model cache evicted %s (%d bytes)", entry.name, size)
            finally:
                os.close(lock)

    def _lock(self, sha256: str, purpose: str, operation: int) -> int:
        descriptor = os.open(self.root / LOCKS / f"{sha256}.{purpose}", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, operation)
        except BaseException:
            os.close(descriptor)
            raise
        return descriptor


class ModelFiles:
    """How a worker finds the files a job names: its `ModelCache` when a blob store is configured,
    else this machine's folders (`model_file_path`), exactly as without object storage."""

    def __init__(self, cache: ModelCache | None) -> None:
        self.cache = cache

    @classmethod
    def from_settings(cls) -> ModelFiles:
        from django.conf import settings

        from inference.model_blobs import models_storage

        storage = models_storage()
        if storage is None:
            return cls(None)
        root = Path(settings.ATELIER_MODEL_CACHE_DIR) / "models"
        return cls(ModelCache(root=root, max_bytes=settings.ATELIER_MODEL_CACHE_MAX_BYTES, storage=storage))

    def counts(self) -> dict[str, int]:
        """The blob cache's `blob_hits`, `blob_fetches` and `blob_fetched_bytes` since this process
        made it (all zero without a blob store)."""
        if self.cache is None:
            return {"blob_hits": 0, "blob_fetches": 0, "blob_fetched_bytes": 0}
        return {"blob_hits": self.cache.hits, "blob_fetches": self.cache.fetches,
                "blob_fetched_bytes": self.cache.fetched_bytes}

    def path(self, ref: ModelRef) -> str:
        if self.cache is None:
            return str(model_file_path(ref.key))
        return str(self.cache.local_path(ref))

    def path_of(self, model: dict) -> str:
        """`path` of a resolved-model dict ({"key", "sha256"}) as Extras/interrogate params hold them."""
        return self.path(ModelRef(str(model["key"]), str(model["sha256"])))

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        if self.cache is None:
            yield
            return
        with self.cache.batch():
            yield
