"""The FileBrowser's object-storage side: a member's `outputs` folder when members' files live in
a bucket (`ATELIER_S3_BUCKET`, `config/object_storage.py`).

Which side serves a place is decided in one place, `bucket_key(place)`: the home area's
`outputs/…` while the default storage is object storage (it has `bucket_key`, as
`inference.object_storage.MemberObjectStorage`); everything else (models, team, public, and
outputs on local storage) stays on the file system (`reading.py`, `writes.py`, `zips.py`).

Every key here is derived from a `Place` that `tenants.filespace.resolve_place` checked (plain
names only, the caller's own home), never from the request's text: `users/<home folder>/<relative>`,
which the storage puts under the member's tenant in the bucket.

S3 has no folders: a folder is a prefix that holds objects. `folder_create` writes a zero-byte
`.keep` marker (`FOLDER_MARKER`) so an empty folder exists; listings, zips and sizes hide it.
A move is a copy then a delete of each object, refused when anything lies at the target
already (checked just before: S3's copy has no "if none match"); a taken name is never replaced.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import IO, Any

from botocore.exceptions import ClientError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from a1111.errors import Conflict, InvalidField, NotFound
from inference.storage import member_file_url
from tenants.filespace import Area, Place

OUTPUTS = "outputs"
FOLDER_MARKER = ".keep"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class StoredObject:
    """One object below a folder: its path inside the folder, size and time."""

    relative: PurePosixPath
    size: int
    modified: datetime  # aware


def object_storage() -> Any | None:
    """The members' object storage, or None when members' files are on the local file system."""
    return default_storage if hasattr(default_storage, "bucket_key") else None


def bucket_key(place: Place) -> str | None:
    """The storage key of a home `outputs/…` place on object storage (`users/<name>/outputs/…`);
    None when the place is served from the file system."""
    parts = place.relative.parts
    if place.area != Area.HOME or not parts or parts[0] != OUTPUTS or object_storage() is None:
        return None
    return f"users/{place.root.name}/{place.relative}"


def _full(key: str) -> str:
    """Where the storage key lies in the bucket (tenant folder and the storage's location added)."""
    return object_storage()._normalize_name(key)  # type: ignore[union-attr]


def _summaries(prefix: str) -> Iterator[Any]:
    """Every object whose bucket key starts with `prefix` (a full bucket key prefix)."""
    storage = object_storage()
    assert storage is not None
    return iter(storage.bucket.objects.filter(Prefix=prefix))


def objects_below(key: str) -> list[StoredObject]:
    """The objects inside the folder `key`, markers included, by path."""
    prefix = _full(key).rstrip("/") + "/"
    found = [StoredObject(PurePosixPath(item.key[len(prefix):]), int(item.size), item.last_modified)
             for item in _summaries(prefix) if item.key[len(prefix):]]
    return sorted(found, key=lambda item: str(item.relative))


def _object_exists(key: str) -> bool:
    return bool(object_storage().exists(key))  # type: ignore[union-attr]


def _folder_exists(key: str) -> bool:
    if key.count("/") == 2:  # users/<name>/outputs: always there
        return True
    prefix = _full(key).rstrip("/") + "/"
    return next(_summaries(prefix), None) is not None


def prefix_bytes(prefix: str) -> int:
    """The bytes stored under a storage prefix (`users/<name>/`, `tenants/<slug>/`)."""
    return sum(int(item.size) for item in _summaries(_full(prefix)))


def kind_of(place: Place, key: str) -> bool:
    """True for a folder, False for a file; NotFound when nothing is stored at the place."""
    if _object_exists(key):
        return False
    if _folder_exists(key):
        return True
    raise NotFound(f"{place.display} does not exist", field="path")


def folder_entries(place: Place, key: str) -> list[tuple[str, bool, int | None, datetime]]:
    """(name, is folder, size, modified) of a folder's direct entries; a folder's time is its newest object's."""
    if not _folder_exists(key):
        if _object_exists(key):
            raise InvalidField(f"{place.display} is a file, not a folder", field="path")
        raise NotFound(f"{place.display} does not exist", field="path")
    files: dict[str, tuple[int, datetime]] = {}
    folders: dict[str, datetime] = {}
    for item in objects_below(key):
        first, rest = item.relative.parts[0], item.relative.parts[1:]
        if rest:
            folders[first] = max(folders.get(first, _EPOCH), item.modified)
        elif first != FOLDER_MARKER:
            files[first] = (item.size, item.modified)
    return ([(name, True, None, when) for name, when in folders.items()]
            + [(name, False, size, when) for name, (size, when) in files.items()])


def download_url(place: Place, key: str) -> str:
    """A short-lived signed URL that downloads the file as an octet-stream attachment."""
    try:
        url = member_file_url(key, download_name=place.relative.name)
    except FileNotFoundError:
        raise NotFound(f"{place.display} does not exist", field="path") from None
    assert url is not None
    return url


def object_open(key: str) -> IO[bytes] | None:
    """The stored object's bytes as a stream read straight from the store (a chunk at a time, never
    spooled whole); None when it is gone since it was listed."""
    storage = object_storage()
    assert storage is not None
    try:
        return storage.bucket.Object(_full(key)).get()["Body"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
            return None
        raise


def folder_make(place: Place, key: str) -> datetime:
    """An empty folder: its `.keep` marker; Conflict when the name is taken, NotFound without a parent."""
    if _object_exists(key) or _folder_exists(key):
        raise Conflict(f"{place.display} exists already: choose another name", field="path")
    parent = key.rsplit("/", 1)[0]
    if not _folder_exists(parent):
        raise NotFound(f"no folder {place.display.rsplit('/', 1)[0]!r}: create it first", field="path")
    object_storage().save(f"{key}/{FOLDER_MARKER}", ContentFile(b""))  # type: ignore[union-attr]
    return datetime.now(tz=UTC)


def entry_remove(place: Place, key: str) -> None:
    """Delete the file, or every object of the folder; NotFound when nothing is there."""
    storage = object_storage()
    assert storage is not None
    if _object_exists(key):
        storage.delete(key)
        return
    below = objects_below(key)
    if not below:
        raise NotFound(f"{place.display} does not exist", field="path")
    for item in below:
        storage.delete(f"{key}/{item.relative}")


def _copy(source: str, target: str) -> None:
    storage = object_storage()
    assert storage is not None
    storage.bucket.Object(_full(target)).copy_from(CopySource={"Bucket": storage.bucket_name, "Key": _full(source)})


def entry_relocate(source_place: Place, source: str, target_place: Place, target: str) -> None:
    """Move a file or folder within the bucket: copy, then delete; never onto anything stored."""
    if _object_exists(target) or _folder_exists(target):
        raise Conflict(f"{target_place.display} exists already: choose another name", field="to")
    parent = target.rsplit("/", 1)[0]
    if not _folder_exists(parent):
        raise NotFound(f"no folder {target_place.display.rsplit('/', 1)[0]!r}: create it first", field="to")
    storage = object_storage()
    assert storage is not None
    if _object_exists(source):
        _copy(source, target)
        storage.delete(source)
        return
    below = objects_below(source)
    if not below:
        raise NotFound(f"{source_place.display} does not exist", field="path")
    for item in below:
        _copy(f"{source}/{item.relative}", f"{target}/{item.relative}")
    for item in below:
        storage.delete(f"{source}/{item.relative}")
