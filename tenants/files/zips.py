"""A folder as a zip: planned (sizes summed, `ATELIER_ZIP_MAX_BYTES` checked: a 413 before anything
is sent), then written by a generator a chunk at a time, never the whole zip in memory; stored,
not deflated (images and weights are compressed already); links neither listed nor entered."""

from __future__ import annotations

import os
from contextlib import closing
import stat
import zipfile
from collections.abc import Iterator
from typing import IO
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath

from django.conf import settings
from django.contrib.auth.models import AbstractUser

from a1111.errors import InvalidField, TooLarge
from tenants.files import objects
from tenants.filespace import Area, Place, open_dir_nofollow
from tenants.files.reading import COPY_CHUNK_BYTES, open_folder, place_get, scan

@dataclass(frozen=True)
class ZipMember:
    name: PurePosixPath  # inside the zipped folder
    is_folder: bool
    size: int
    modified: float


@dataclass(frozen=True)
class ZipPlan:
    """What a folder's zip will hold, checked against the size cap before anything is sent."""

    place: Place
    archive_name: str  # the download's file name
    members: list[ZipMember]
    total_bytes: int
    bucket_key: str | None = None  # the folder's storage key when it lies in object storage


def _walk(descriptor: int, prefix: PurePosixPath) -> Iterator[ZipMember]:
    """Every folder and regular file below the open folder, depth first, links neither listed nor entered."""
    for name, info in sorted(scan(descriptor)):
        path = prefix / name
        if stat.S_ISREG(info.st_mode):
            yield ZipMember(path, False, info.st_size, info.st_mtime)
            continue
        yield ZipMember(path, True, 0, info.st_mtime)
        try:
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=descriptor)
        except OSError:  # gone, or swapped for a link since the scan
            continue
        try:
            yield from _walk(child, path)
        finally:
            os.close(child)


def zip_plan(user: AbstractUser, area: str, relative: str) -> ZipPlan:
    """The folder's zip, planned: `TooLarge` (413) past `ATELIER_ZIP_MAX_BYTES`, before any byte is sent."""
    place = place_get(user, area, relative)
    key = objects.bucket_key(place)
    if key is not None:
        if not objects.kind_of(place, key):
            raise InvalidField(f"{place.display} is a file: leave zip out to download it", field="zip")
        members = _bucket_members(key)
    else:
        descriptor = open_folder(place)
        try:
            members = list(_walk(descriptor, PurePosixPath(".")))
        finally:
            os.close(descriptor)
    total = sum(member.size for member in members)
    limit = settings.ATELIER_ZIP_MAX_BYTES
    if total > limit:
        raise TooLarge(
            f"{place.display} holds {total:,} bytes, over the {limit:,}-byte limit of a zip download: "
            "download its subfolders or files one at a time", field="path")
    stem = place.relative.name if str(place.relative) != "." else place.root.name if place.area == Area.PUBLIC else str(place.area)
    return ZipPlan(place, f"{stem}.zip", members, total, key)


def _bucket_members(key: str) -> list[ZipMember]:
    """The objects below a folder in the bucket as zip members, their folders first (markers left out)."""
    folders: dict[PurePosixPath, float] = {}
    files: list[ZipMember] = []
    for item in objects.objects_below(key):
        when = item.modified.timestamp()
        for folder in item.relative.parents[:-1]:
            folders[folder] = max(folders.get(folder, 0.0), when)
        if item.relative.name != objects.FOLDER_MARKER:
            files.append(ZipMember(item.relative, False, item.size, when))
    members = [ZipMember(folder, True, 0, when) for folder, when in folders.items()] + files
    return sorted(members, key=lambda member: str(member.name))


class _ChunkSink:
    """A write-only, unseekable stream that `zipfile` writes into and the generator drains."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0  # bytes written so far: zipfile asks, for its offsets
        self.pending = 0  # bytes not drained yet

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.position += len(data)
        self.pending += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        data, self.parts, self.pending = b"".join(self.parts), [], 0
        return data


def _member_open(plan: ZipPlan, member: ZipMember) -> int | None:
    """The member's file, opened again without following any link; None when it is gone or changed."""
    inside = plan.place.relative / member.name
    try:
        parent = open_dir_nofollow(plan.place.root, inside.parent)
    except OSError:
        return None
    try:
        return os.open(inside.name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=parent)
    except OSError:
        return None
    finally:
        os.close(parent)


def _source_open(plan: ZipPlan, member: ZipMember) -> IO[bytes] | None:
    """The member's bytes, from the bucket or the file system; None when it is gone or changed."""
    if plan.bucket_key is not None:
        return objects.object_open(f"{plan.bucket_key}/{member.name}")
    descriptor = _member_open(plan, member)
    return None if descriptor is None else os.fdopen(descriptor, "rb")


def zip_chunks(plan: ZipPlan) -> Iterator[bytes]:
    """The zip of `plan`, a chunk at a time (about 1 MiB each); each file holds at most the bytes
    it had when planned, and a file gone or swapped for a link since is left out."""
    top = PurePosixPath(plan.archive_name.removesuffix(".zip"))
    sink = _ChunkSink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:  # type: ignore[arg-type]
        for member in plan.members:
            moment = datetime.fromtimestamp(max(member.modified, 315532800)).timetuple()[:6]  # zip starts in 1980
            if member.is_folder:
                info = zipfile.ZipInfo(f"{top / member.name}/", date_time=moment)
                info.external_attr = (0o40755 << 16) | 0x10
                archive.writestr(info, b"")
                continue
            source = _source_open(plan, member)
            if source is None:
                continue
            info = zipfile.ZipInfo(str(top / member.name), date_time=moment)
            info.external_attr = 0o100644 << 16
            info.file_size = member.size
            with closing(source), archive.open(info, "w", force_zip64=member.size > 2**31) as target:
                left = member.size
                while left > 0:
                    data = source.read(min(COPY_CHUNK_BYTES, left))
                    if not data:
                        break
                    target.write(data)
                    left -= len(data)
                    if sink.pending >= COPY_CHUNK_BYTES:
                        yield sink.drain()
            if sink.pending >= COPY_CHUNK_BYTES:
                yield sink.drain()
    yield sink.drain()  # the rest, and the central directory written on close
