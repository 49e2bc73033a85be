"""The FileBrowser's services: list, download, zip, mkdir, move/rename and delete in a file area.

Every name reaches this module as an *area* and a *relative path* and is turned into a place by
`tenants.filespace.resolve_place` (the one path-resolution helper: who may read or write where,
plain names only, links out of the area refused). Then every file operation here walks from the
area's root with `O_NOFOLLOW` descriptors (`open_dir_nofollow`) and acts on the last name relative
to its parent's descriptor, so a symbolic link is never followed: not one put there before the
check, not one swapped in after it. Links are not listed, not zipped, not downloaded; deleting
one removes the link itself.

- `folder_list`: a folder's entries (folders first, then files, by name); the public area's root
  lists its model folders (`ATELIER_PUBLIC_MODEL_DIRS`), each a folder of its own.
- `file_open`: an open binary file to stream as a download (the caller closes it).
- `zip_plan` / `zip_chunks`: a folder as a zip, planned (sizes summed, `ATELIER_ZIP_MAX_BYTES`
  checked: a 413 before anything is sent) and then written by a generator, one chunk at a time,
  never the whole zip in memory (stored, not deflated: images and weights are compressed already).
- `folder_create`, `entry_move` (rename and move within one area, never onto an existing name:
  `renameat2(RENAME_NOREPLACE)` where the kernel has it), `entry_delete` (folders recursively,
  `shutil.rmtree` on descriptors, which never follows a link).

The built-in folders of home and team (`models`, `models/<kind>`, `outputs`) and an area's own
root cannot be renamed, moved or deleted. Refusals are `a1111.errors` with a message that names
the place as its user sees it (`Place.display`), never a server path.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import IO

from django.conf import settings
from django.contrib.auth.models import AbstractUser

from a1111.errors import Conflict, Forbidden, InvalidField, NotFound, TooLarge
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


def _modified(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _link_refused(place: Place) -> Forbidden:
    return Forbidden(f"{place.display}: a symbolic link (or a file) is on the way, and links are not followed",
                     field="path")


def _open_parent(place: Place, *, what: str = "") -> tuple[int, str]:
    """The parent folder's descriptor (links refused) and the last name of `place`."""
    relative = place.relative
    try:
        return open_dir_nofollow(place.root, relative.parent), relative.name
    except FileNotFoundError:
        raise NotFound(f"no folder {_parent_display(place)!r}{what}", field="path") from None
    except (NotADirectoryError, OSError) as exc:
        if isinstance(exc, NotADirectoryError) or exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _link_refused(place) from None
        raise


def _parent_display(place: Place) -> str:
    return place.display.rsplit("/", 1)[0] if "/" in place.display else place.display


def _lstat(parent: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _stat_place(place: Place) -> tuple[int, str, os.stat_result]:
    """(parent descriptor, name, the entry's own lstat) of an existing place; NotFound otherwise."""
    parent, name = _open_parent(place)
    info = _lstat(parent, name)
    if info is None:
        os.close(parent)
        raise NotFound(f"{place.display} does not exist", field="path")
    if stat.S_ISLNK(info.st_mode):
        os.close(parent)
        raise _link_refused(place)
    return parent, name, info


def _open_folder(place: Place) -> int:
    """A descriptor of the folder at `place` (links refused); NotFound when there is none."""
    try:
        return open_dir_nofollow(place.root, place.relative)
    except FileNotFoundError:
        raise NotFound(f"{place.display} does not exist", field="path") from None
    except NotADirectoryError:
        raise InvalidField(f"{place.display} is a file, not a folder", field="path") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _link_refused(place) from None
        raise


def _scan(descriptor: int) -> Iterator[tuple[str, os.stat_result]]:
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
        entries.append(Entry(kind, True, None, _modified(folder.stat().st_mtime)))
    return Listing(Area.PUBLIC, "", "public", False, sorted(entries, key=lambda entry: entry.name.lower()))


def _is_public_root(area: str, relative: str) -> bool:
    return area == Area.PUBLIC and str(clean_relative(relative)) == "."


def place_get(user: AbstractUser, area: str, relative: str, *, write: bool = False) -> Place:
    """The checked place (the one helper, `resolve_place`); the public root is not a place."""
    if _is_public_root(area, relative):
        if write:
            raise Forbidden("the public area's model folders are fixed: work inside one of them", field="path")
        raise InvalidField("the public area's root lists its folders only", field="path")
    return resolve_place(user, area, relative, write=write)


def is_folder(user: AbstractUser, area: str, relative: str) -> bool:
    """Whether the place is a folder (True for an area's root); NotFound when it does not exist."""
    if _is_public_root(area, relative):
        return True
    place = resolve_place(user, area, relative)
    if str(place.relative) == ".":
        return True
    parent, _, info = _stat_place(place)
    os.close(parent)
    return stat.S_ISDIR(info.st_mode)


def folder_list(user: AbstractUser, area: str, relative: str) -> Listing:
    """The folders and files in a folder the caller may read."""
    if _is_public_root(area, relative):
        resolve_place(user, area, next(iter(settings.ATELIER_PUBLIC_MODEL_DIRS)))  # signed in: everyone may read
        return _public_root_listing()
    place = resolve_place(user, area, relative)
    descriptor = _open_folder(place)
    try:
        entries = [Entry(name, stat.S_ISDIR(info.st_mode), None if stat.S_ISDIR(info.st_mode) else info.st_size,
                         _modified(info.st_mtime)) for name, info in _scan(descriptor)]
    finally:
        os.close(descriptor)
    entries.sort(key=lambda entry: (not entry.is_folder, entry.name.lower(), entry.name))
    return Listing(place.area, place_path(place), place.display, place.writable, entries)


def file_open(user: AbstractUser, area: str, relative: str) -> tuple[IO[bytes], str, int]:
    """An open regular file the caller may read, its name and size (the caller closes it)."""
    place = place_get(user, area, relative)
    if str(place.relative) == ".":
        raise InvalidField(f"{place.display} is a folder: add ?zip=1 to download it as a zip", field="path")
    parent, name, info = _stat_place(place)
    try:
        if stat.S_ISDIR(info.st_mode):
            raise InvalidField(f"{place.display} is a folder: add ?zip=1 to download it as a zip", field="path")
        if not stat.S_ISREG(info.st_mode):
            raise NotFound(f"{place.display} is not a file", field="path")
        try:
            descriptor = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=parent)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _link_refused(place) from None
            raise NotFound(f"{place.display} does not exist", field="path") from None
    finally:
        os.close(parent)
    return os.fdopen(descriptor, "rb"), name, info.st_size


# --- folders as zips --------------------------------------------------------------------------

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


def _walk(descriptor: int, prefix: PurePosixPath) -> Iterator[ZipMember]:
    """Every folder and regular file below the open folder, depth first, links neither listed nor entered."""
    for name, info in sorted(_scan(descriptor)):
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
    descriptor = _open_folder(place)
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
    return ZipPlan(place, f"{stem}.zip", members, total)


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
            descriptor = _member_open(plan, member)
            if descriptor is None:
                continue
            info = zipfile.ZipInfo(str(top / member.name), date_time=moment)
            info.external_attr = 0o100644 << 16
            info.file_size = member.size
            with os.fdopen(descriptor, "rb") as source, archive.open(info, "w", force_zip64=member.size > 2**31) as target:
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


# --- writes -------------------------------------------------------------------------------------

def builtin_folders() -> set[PurePosixPath]:
    """The folders of home and team that the platform itself relies on."""
    folders = {PurePosixPath("models"), PurePosixPath("outputs")}
    folders |= {PurePosixPath("models") / kind for kind in settings.ATELIER_MODEL_KINDS}
    return folders


def _refuse_fixed(place: Place, verb: str) -> None:
    if str(place.relative) == ".":
        raise Forbidden(f"{place.display} is the area's own folder: it cannot be {verb}", field="path")
    if place.area != Area.PUBLIC and place.relative in builtin_folders():
        raise Forbidden(f"{place.display} is one of the built-in folders the platform uses: it cannot be {verb}",
                        field="path")


def folder_create(user: AbstractUser, area: str, relative: str) -> tuple[Place, Entry]:
    """A new, empty folder (owner-only in home) inside an existing one; Conflict when the name is taken."""
    place = place_get(user, area, relative, write=True)
    if str(place.relative) == ".":
        raise Conflict(f"{place.display} exists already", field="path")
    parent, name = _open_parent(place, what=": create it first")
    try:
        try:
            os.mkdir(name, 0o700 if place.area == Area.HOME else 0o755, dir_fd=parent)
        except FileExistsError:
            raise Conflict(f"{place.display} exists already: choose another name", field="path") from None
        info = os.stat(name, dir_fd=parent, follow_symlinks=False)
    finally:
        os.close(parent)
    return place, Entry(name, True, None, _modified(info.st_mtime))


_RENAME_NOREPLACE = 1


def _renameat2_function():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_renameat2 = _renameat2_function()


def _rename_no_replace(source_dir: int, source: str, target_dir: int, target: str) -> None:
    """Rename without ever replacing what is at the target (FileExistsError instead)."""
    if _renameat2 is not None:
        result = _renameat2(source_dir, os.fsencode(source), target_dir, os.fsencode(target), _RENAME_NOREPLACE)
        if result == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS):  # EINVAL/ENOSYS: this file system cannot; check, then rename
            raise OSError(code, os.strerror(code))
    if _lstat(target_dir, target) is not None:
        raise FileExistsError(errno.EEXIST, "exists")
    os.rename(source, target, src_dir_fd=source_dir, dst_dir_fd=target_dir)


def entry_move(user: AbstractUser, area: str, relative: str, *, to: str, to_area: str | None = None) -> Place:
    """Rename or move a file or folder within its area (the public area: within one model folder)."""
    if to_area is not None and to_area != area:
        raise InvalidField("files move within one area: download and upload them to copy to another", field="to_area")
    if not isinstance(to, str) or not to.strip("/"):
        raise InvalidField("name where to move it: a path in the same area", field="to")
    source = place_get(user, area, relative, write=True)
    try:
        target = place_get(user, area, to, write=True)
    except InvalidField as exc:
        raise InvalidField(str(exc).removeprefix("path: "), field="to") from None
    _refuse_fixed(source, "renamed or moved")
    if target.root != source.root:
        raise InvalidField("a public file moves within its own model folder", field="to")
    if target.relative == source.relative:
        raise Conflict(f"{target.display} is where it is already", field="to")
    if target.relative.is_relative_to(source.relative):
        raise InvalidField(f"{source.display} cannot move into itself ({target.display})", field="to")
    source_parent, source_name, _ = _stat_place(source)
    try:
        try:
            target_parent = open_dir_nofollow(target.root, target.relative.parent)
        except FileNotFoundError:
            raise NotFound(f"no folder {_parent_display(target)!r}: create it first", field="to") from None
        except OSError:
            raise InvalidField(f"{_parent_display(target)} is not a folder (or a link, not followed)", field="to") from None
        try:
            _rename_no_replace(source_parent, source_name, target_parent, target.relative.name)
        except FileExistsError:
            raise Conflict(f"{target.display} exists already: choose another name", field="to") from None
        finally:
            os.close(target_parent)
    finally:
        os.close(source_parent)
    return target


def entry_delete(user: AbstractUser, area: str, relative: str) -> Place:
    """Delete a file, or a folder with everything in it; a link is removed itself, never followed."""
    place = place_get(user, area, relative, write=True)
    _refuse_fixed(place, "deleted")
    parent, name = _open_parent(place)
    try:
        info = _lstat(parent, name)
        if info is None:
            raise NotFound(f"{place.display} does not exist", field="path")
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(name, dir_fd=parent)  # descriptor-based: links inside are unlinked, not followed
        else:
            os.unlink(name, dir_fd=parent)
    finally:
        os.close(parent)
    return place
