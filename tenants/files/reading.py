"""Reading a file area: listings, one file opened for download, and the descriptor-walking
helpers the zips and the writes share (every one starts from the area's root with `O_NOFOLLOW`).
See `tenants/files/__init__.py` for the rules."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import IO

from django.conf import settings
from django.contrib.auth.models import AbstractUser

from a1111.errors import Forbidden, InvalidField, NotFound
from tenants.files import objects
from tenants.filespace import Area, Place, clean_relative, open_dir_nofollow, resolve_place

COPY_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Entry:
    """One row of a listing."""

    name: str
    is_folder: bool
    size: int | None  # bytes; None for a folder
    modified: datetime  # aware, UTC

    def as_json(self) -> dict:
        return {"name": self.name, "type": "folder" if self.is_folder else "file", "size": self.size,
                "modified": self.modified.isoformat()}


@dataclass(frozen=True)
class Listing:
    area: str
    path: str  # relative, "" for the root
    display: str  # how the user sees the place: `home/models/Lora`
    writable: bool
    entries: list[Entry]

    def as_json(self) -> dict:
        return {"area": self.area, "path": self.path, "writable": self.writable,
                "entries": [entry.as_json() for entry in self.entries]}


def _relative_text(relative: PurePosixPath) -> str:
    return "" if str(relative) == "." else str(relative)


def place_path(place: Place) -> str:
    """The path the API names `place` by (the public area's kind folder included)."""
    inside = _relative_text(place.relative)
    if place.area == Area.PUBLIC:
        return f"{place.root.name}/{inside}" if inside else place.root.name
    return inside


def _listable(name: str) -> bool:
    """Whether `name` can be named back through the API (valid UTF-8, no control characters)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not any(ord(char) < 32 or ord(char) == 127 for char in name)


def modified_at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def link_refused(place: Place) -> Forbidden:
    return Forbidden(f"{place.display}: a symbolic link (or a file) is on the way, and links are not followed",
                     field="path")


def open_parent(place: Place, *, what: str = "") -> tuple[int, str]:
    """The parent folder's descriptor (links refused) and the last name of `place`."""
    relative = place.relative
    try:
        return open_dir_nofollow(place.root, relative.parent), relative.name
    except FileNotFoundError:
        raise NotFound(f"no folder {parent_display(place)!r}{what}", field="path") from None
    except (NotADirectoryError, OSError) as exc:
        if isinstance(exc, NotADirectoryError) or exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise link_refused(place) from None
        raise


def parent_display(place: Place) -> str:
    return place.display.rsplit("/", 1)[0] if "/" in place.display else place.display


def lstat_entry(parent: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None


def stat_place(place: Place) -> tuple[int, str, os.stat_result]:
    """(parent descriptor, name, the entry's own lstat) of an existing place; NotFound otherwise."""
    parent, name = open_parent(place)
    info = lstat_entry(parent, name)
    if info is None:
        os.close(parent)
        raise NotFound(f"{place.display} does not exist", field="path")
    if stat.S_ISLNK(info.st_mode):
        os.close(parent)
        raise link_refused(place)
    return parent, name, info


def open_folder(place: Place) -> int:
    """A descriptor of the folder at `place` (links refused); NotFound when there is none."""
    try:
        return open_dir_nofollow(place.root, place.relative)
    except FileNotFoundError:
        raise NotFound(f"{place.display} does not exist", field="path") from None
    except NotADirectoryError:
        raise InvalidField(f"{place.display} is a file, not a folder", field="path") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise link_refused(place) from None
        raise


def scan(descriptor: int) -> Iterator[tuple[str, os.stat_result]]:
    """The listable folders and regular files in the folder open at `descriptor` (links skipped)."""
    with os.scandir(descriptor) as entries:
        for entry in entries:
            if not _listable(entry.name):
                continue
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode):
                yield entry.name, info


def _public_root_listing() -> Listing:
    entries = []
    for kind, folder in settings.ATELIER_PUBLIC_MODEL_DIRS.items():
        folder.mkdir(parents=True, exist_ok=True)
        entries.append(Entry(kind, True, None, modified_at(folder.stat().st_mtime)))
    return Listing(Area.PUBLIC, "", "public", False, sorted(entries, key=lambda entry: entry.name.lower()))


def is_public_root(area: str, relative: str) -> bool:
    return area == Area.PUBLIC and str(clean_relative(relative)) == "."


def place_get(user: AbstractUser, area: str, relative: str, *, write: bool = False) -> Place:
    """The checked place (the one helper, `resolve_place`); the public root is not a place."""
    if is_public_root(area, relative):
        if write:
            raise Forbidden("the public area's model folders are fixed: work inside one of them", field="path")
        raise InvalidField("the public area's root lists its folders only", field="path")
    return resolve_place(user, area, relative, write=write)


def is_folder(user: AbstractUser, area: str, relative: str) -> bool:
    """Whether the place is a folder (True for an area's root); NotFound when it does not exist."""
    if is_public_root(area, relative):
        return True
    place = resolve_place(user, area, relative)
    if str(place.relative) == ".":
        return True
    key = objects.bucket_key(place)
    if key is not None:
        return objects.kind_of(place, key)
    parent, _, info = stat_place(place)
    os.close(parent)
    return stat.S_ISDIR(info.st_mode)


def folder_list(user: AbstractUser, area: str, relative: str) -> Listing:
    """The folders and files in a folder the caller may read."""
    if is_public_root(area, relative):  # everyone signed in reads the public folders
        return _public_root_listing()
    place = resolve_place(user, area, relative)
    key = objects.bucket_key(place)
    if key is not None:
        entries = [Entry(*row) for row in objects.folder_entries(place, key) if _listable(row[0])]
    else:
        descriptor = open_folder(place)
        try:
            entries = [Entry(name, stat.S_ISDIR(info.st_mode), None if stat.S_ISDIR(info.st_mode) else info.st_size,
                             modified_at(info.st_mtime)) for name, info in scan(descriptor)]
        finally:
            os.close(descriptor)
        if place.area == Area.HOME and str(place.relative) == "." and objects.object_storage() is not None:
            if all(entry.name != objects.OUTPUTS for entry in entries):  # outputs lie in the bucket
                entries.append(Entry(objects.OUTPUTS, True, None, modified_at(0)))
    entries.sort(key=lambda entry: (not entry.is_folder, entry.name.lower(), entry.name))
    return Listing(place.area, place_path(place), place.display, place.writable, entries)


def file_url(user: AbstractUser, area: str, relative: str) -> str | None:
    """A short-lived signed URL that downloads the file when it lies in object storage (an
    attachment, octet-stream); None when the file is served from the file system (`file_open`)."""
    place = place_get(user, area, relative)
    key = objects.bucket_key(place)
    if key is None:
        return None
    if objects.kind_of(place, key):
        raise InvalidField(f"{place.display} is a folder: add ?zip=1 to download it as a zip", field="path")
    return objects.download_url(place, key)


def file_open(user: AbstractUser, area: str, relative: str) -> tuple[IO[bytes], str, int]:
    """An open regular file the caller may read, its name and size (the caller closes it)."""
    place = place_get(user, area, relative)
    if str(place.relative) == ".":
        raise InvalidField(f"{place.display} is a folder: add ?zip=1 to download it as a zip", field="path")
    parent, name, info = stat_place(place)
    try:
        if stat.S_ISDIR(info.st_mode):
            raise InvalidField(f"{place.display} is a folder: add ?zip=1 to download it as a zip", field="path")
        if not stat.S_ISREG(info.st_mode):
            raise NotFound(f"{place.display} is not a file", field="path")
        try:
            descriptor = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=parent)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise link_refused(place) from None
            raise NotFound(f"{place.display} does not exist", field="path") from None
    finally:
        os.close(parent)
    return os.fdopen(descriptor, "rb"), name, info.st_size
