"""Model files published to object storage by content, for workers that share no file system with
the web process (the web side of issue 17; the worker side is `inference/model_cache.py`).

With a "models" storage configured (`config/object_storage.py`: `ATELIER_S3_BUCKET`), every model
file a job names is in the bucket before the job is dispatched: a single file as `<sha256>`, each
file of a diffusers/transformers folder as `<sha256>/<relative path>` (a folder's sha256 is its
weights file's, as `model_registry` and `interrogate_models` compute it). A `ModelBlob` row is
written once every file of a blob is stored, so a submit whose models are all published costs one
query (`model_blobs_publish`). Uploads are streamed (django-storages' multipart upload from the
open file), verified by size (the sha256 is the name) and never overwrite: a blob already in the
bucket is kept as it is.

Without a "models" storage (the embedded default, or workers that mount DATA_DIR) nothing is
published and every function here returns at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.files import File
from django.core.files.storage import Storage, storages

from a1111.errors import Conflict, Unavailable
from inference.jobspec import JobSpecError, ModelRef, check_model_key
from inference.models import ModelBlob
from inference.storage import model_file_path

logger = logging.getLogger(__name__)

MODELS_STORAGE = "models"


class ModelBlobError(Conflict):
    """A model file could not be published (a 409 at submit); the message names the model, never a
    server path."""


def models_storage() -> Storage | None:
    """The model blob store, or None when model files are read from this machine's folders only."""
    if MODELS_STORAGE not in settings.STORAGES:
        return None
    return storages[MODELS_STORAGE]


def model_refs_in(params: Any) -> list[ModelRef]:
    """Every model a job's stored params name: any mapping with a model `key` and a `sha256`, at
    any depth (a generation's `models`, an Extras job's `resolved_models`, promptgen's
    `resolved_model`, interrogate's folders and category files), each sha256 once."""
    found: dict[str, ModelRef] = {}

    def walk(value: Any) -> None:
        if isinstance(value, Mapping):
            key, sha256 = value.get("key"), value.get("sha256")
            if isinstance(key, str) and isinstance(sha256, str) and sha256:
                try:
                    found.setdefault(sha256, ModelRef(check_model_key(key), sha256))
                except JobSpecError:
                    pass
            for inner in value.values():
                walk(inner)
        elif isinstance(value, list | tuple):
            for inner in value:
                walk(inner)

    walk(params)
    return list(found.values())


def model_blobs_publish(refs: Iterable[ModelRef]) -> None:
    """Store every model of `refs` in the blob store that is not there yet (one query when all are)."""
    storage = models_storage()
    if storage is None:
        return
    wanted = {ref.sha256: ref for ref in refs}
    if not wanted:
        return
    published = set(ModelBlob.objects.filter(sha256__in=list(wanted)).values_list("sha256", flat=True))
    for sha256, ref in wanted.items():
        if sha256 not in published:
            name = ref.key.rsplit("/", 1)[-1]
            try:
                model_blob_publish(model_file_path(ref.key), sha256, storage=storage, name=name)
            except (BotoCoreError, ClientError, OSError) as exc:  # the store is down, or refuses us
                logger.warning("model blob %s (%s) not published: %s", sha256, name, exc)
                raise Unavailable(
                    f"the model store does not answer, so {name!r} cannot reach the workers yet: try again shortly"
                ) from None


def model_params_publish(params: Any) -> None:
    """`model_blobs_publish` for the models a job's params name (what every submit path calls)."""
    if models_storage() is not None:
        model_blobs_publish(model_refs_in(params))


def model_blob_publish(path: Path, sha256: str, *, storage: Storage | None = None, name: str = "") -> ModelBlob | None:
    """Store the file (or folder) at `path` as the blob `sha256`; its `ModelBlob` row (None without
    a blob store). `name` is how messages call the model."""
    storage = storage or models_storage()
    if storage is None:
        return None
    name = name or path.name
    existing = ModelBlob.objects.filter(sha256=sha256).first()
    if existing is not None:
        return existing
    if path.is_dir():
        files = sorted(
            (file.relative_to(path).as_posix(), file) for file in path.rglob("*")
            if file.is_file() and file.resolve().is_relative_to(path.resolve())
        )
        if not files:
            raise ModelBlobError(f"the model folder {name!r} holds no files")
        objects = [(f"{sha256}/{relative}", file) for relative, file in files]
    elif path.is_file():
        from inference.model_registry import cached_sha256

        if cached_sha256(path) != sha256:  # replaced since the job named it: never store it under the old name
            raise ModelBlobError(f"the model {name!r} changed after it was chosen: submit the job again")
        files, objects = [], [(sha256, path)]
    else:
        raise ModelBlobError(f"the model {name!r} is missing from the model folders")
    total = 0
    for object_name, file in objects:
        total += _store_once(storage, object_name, file, name)
    blob, _ = ModelBlob.objects.get_or_create(
        sha256=sha256, defaults={"size": total, "files": [relative for relative, _ in files]}
    )
    logger.info("model blob %s published (%s, %d bytes, %d files)", sha256, name, total, max(len(files), 1))
    return blob


def _store_once(storage: Storage, object_name: str, file: Path, name: str) -> int:
    """Upload `file` as `object_name` unless an object of that name and size is there; its size."""
    size = file.stat().st_size
    if storage.exists(object_name):
        if storage.size(object_name) != size:  # never overwritten: the operator must look at it
            raise ModelBlobError(f"the model store holds another object under {name!r}'s hash: not replaced")
        return size
    with file.open("rb") as handle:
        saved = storage.save(object_name, File(handle, name=file.name))
    if saved != object_name:  # another process stored it meanwhile: ours got a suffix, drop it
        storage.delete(saved)
    if storage.size(object_name) != size:
        raise ModelBlobError(f"the model store's copy of {name!r} has the wrong size")
    return size


def model_file_placed(path: Path, sha256: str) -> None:
    """A new file in a model folder (an upload, a ModelZoo download): published now, so its first
    job does not wait for the upload. A failure is logged, not raised: the file is in place, and
    the first submit that names it publishes it again (and says why if that fails too)."""
    if models_storage() is None:
        return
    try:
        model_blob_publish(path, sha256)
    except Exception:  # noqa: BLE001 - the blob store's trouble must not undo a finished upload
        logger.exception("model blob %s (%s) not published yet: the first job naming it will retry", sha256, path.name)
