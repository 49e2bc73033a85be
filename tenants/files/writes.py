"""Writes in a file area: a new folder, a rename or move within the area (never onto an existing
name: `renameat2(RENAME_NOREPLACE)` where the kernel has it), a delete (folders recursively with
`shutil.rmtree` on descriptors, which never follows a link). Built-in folders and an area's root stay."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
from pathlib import PurePosixPath

from django.conf import settings
from django.contrib.auth.models import AbstractUser

from a1111.errors import Conflict, Forbidden, InvalidField, NotFound
from tenants.files import objects
from tenants.filespace import Area, Place, open_dir_nofollow
from tenants.files.reading import Entry, lstat_entry, modified_at, open_parent, parent_display, place_get, stat_place

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
    key = objects.bucket_key(place)
    if key is not None:
        return place, Entry(place.relative.name, True, None, objects.folder_make(place, key))
    parent, name = open_parent(place, what=": create it first")
    try:
        try:
            os.mkdir(name, 0o700 if place.area == Area.HOME else 0o755, dir_fd=parent)
        except FileExistsError:
            raise Conflict(f"{place.display} exists already: choose another name", field="path") from None
        info = os.stat(name, dir_fd=parent, follow_symlinks=False)
    finally:
        os.close(parent)
    return place, Entry(name, True, None, modified_at(info.st_mtime))


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
    if lstat_entry(target_dir, target) is not None:
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
    source_key, target_key = objects.bucket_key(source), objects.bucket_key(target)
    if (source_key is None) != (target_key is None):
        raise InvalidField("outputs are kept in object storage: move files within outputs, or download and "
                           "upload them to copy them elsewhere", field="to")
    if source_key is not None and target_key is not None:
        objects.entry_relocate(source, source_key, target, target_key)
        return target
    source_parent, source_name, _ = stat_place(source)
    try:
        try:
            target_parent = open_dir_nofollow(target.root, target.relative.parent)
        except FileNotFoundError:
            raise NotFound(f"no folder {parent_display(target)!r}: create it first", field="to") from None
        except OSError:
            raise InvalidField(f"{parent_display(target)} is not a folder (or a link, not followed)", field="to") from None
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
    key = objects.bucket_key(place)
    if key is not None:
        objects.entry_remove(place, key)
        return place
    parent, name = open_parent(place)
    try:
        info = lstat_entry(parent, name)
        if info is None:
            raise NotFound(f"{place.display} does not exist", field="path")
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(name, dir_fd=parent)  # descriptor-based: links inside are unlinked, not followed
        else:
            os.unlink(name, dir_fd=parent)
    finally:
        os.close(parent)
    return place
