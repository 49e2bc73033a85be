"""The one path-resolution helper every file route uses (the FileBrowser, uploads, downloads).

A file route names a place as an *area* and a *relative path* inside it, never a server path:

| area | its root | who reads | who writes |
|---|---|---|---|
| `home` | the member's working directory (`DATA_DIR/users/<name>/`) | the member | the member |
| `team` | the team's shared folder (`DATA_DIR/tenants/<slug>/`: `models/<kind>/…`) | the team's members | its tenant admins |
| `public` | the public model folders: the first component is a kind (`Stable-diffusion`, `Lora`, …), each its own folder (`ATELIER_PUBLIC_MODEL_DIRS`, overridable like A1111's `--lora-dir`) | everyone signed in | operators |

`resolve_place(user, area, relative, write=…)` refuses, with a message that says what to fix and
never names a server path:

- a path that is not plain: NUL or control characters, a backslash, an absolute path, `.` or `..`
  components, percent-encoded ones (`%2e%2e`, `%2f`: the route has decoded its URL once; a second
  encoding is an attack, not a name), a component over 255 bytes, a path over 4096 bytes;
- a path that resolves (through symbolic links that exist now) outside the area's root;
- a write by anyone but the area's writers, a read of an area the caller has none of (`NotFound`:
  another team's folder does not exist for them).

Resolution happens against the file system as it is now; a route that writes must also walk the
path with `open_dir_nofollow` (each folder opened with `O_NOFOLLOW` from the root), so a link
swapped in after the check is refused by the kernel instead of followed. This module is the only
place file routes turn names into paths; test it on its own (`tests/tenants/test_filespace.py`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.contrib.auth.models import AbstractUser

from a1111.errors import Forbidden, InvalidField, NotFound
from tenants.models import Membership
from tenants.workdirs import PRIVATE_FOLDER_MODE, user_workdir

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


class Area(StrEnum):
    HOME = "home"
    TEAM = "team"
    PUBLIC = "public"


@dataclass(frozen=True)
class Place:
    """A checked place: `path` is inside `root` (links resolved) and the caller may do what they asked."""

    area: Area
    root: Path  # the area's root (for public: the kind's folder), resolved
    relative: PurePosixPath  # inside `root`; "." for the root itself
    path: Path  # root / relative, resolved
    writable: bool  # whether the caller may write here

    @property
    def display(self) -> str:
        """How the place is named to its user: `home/models/Lora/x.safetensors`, never a server path."""
        prefix = f"{self.area}/{self.root.name}" if self.area == Area.PUBLIC else str(self.area)
        return prefix if str(self.relative) == "." else f"{prefix}/{self.relative}"


def clean_relative(relative: str, *, field: str = "path") -> PurePosixPath:
    """`relative` as a plain relative path ("" or "/" is the root); `InvalidField` naming what is wrong."""
    if not isinstance(relative, str):
        raise InvalidField("must be a path as text", field=field)
    if len(relative.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise InvalidField(f"a path may be at most {MAX_PATH_BYTES} bytes", field=field)
    if any(ord(char) < 32 or ord(char) == 127 for char in relative):
        raise InvalidField("a path may not hold NUL or control characters", field=field)
    if "\\" in relative:
        raise InvalidField("use '/' between folders, not '\\'", field=field)
    if relative.startswith("/") and relative.strip("/"):
        raise InvalidField("give a path relative to the folder, not an absolute one", field=field)
    parts = [part for part in relative.split("/") if part]
    for part in parts:
        if part in (".", ".."):
            raise InvalidField("'.' and '..' are not allowed in a path: name the folder itself", field=field)
        if _PERCENT_ESCAPE.search(part):
            raise InvalidField(f"{part!r} holds a percent-encoded character: send the name itself, encoded once",
                               field=field)
        try:
            size = len(part.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidField("a name must be valid Unicode text", field=field) from None
        if size > MAX_NAME_BYTES:
            raise InvalidField(f"a file or folder name may be at most {MAX_NAME_BYTES} bytes", field=field)
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _membership(user: AbstractUser) -> Membership | None:
    return Membership.objects.select_related("tenant").filter(user=user).first()


def area_root(user: AbstractUser, area: str, relative: PurePosixPath) -> tuple[Area, Path, PurePosixPath, bool]:
    """The root of `area` for `user`, the path left inside it, and whether `user` may write there."""
    try:
        chosen = Area(area)
    except ValueError:
        raise NotFound(f"no file area {area!r}: use home, team or public", field="area") from None
    if chosen == Area.PUBLIC:
        if str(relative) == ".":
            raise InvalidField("name a public folder: " + ", ".join(settings.ATELIER_PUBLIC_MODEL_DIRS), field="path")
        kind, *rest = relative.parts
        if kind not in settings.ATELIER_PUBLIC_MODEL_DIRS:
            raise NotFound(f"no public folder {kind!r}: use one of {', '.join(settings.ATELIER_PUBLIC_MODEL_DIRS)}",
                           field="path")
        inside = PurePosixPath(*rest) if rest else PurePosixPath(".")
        return chosen, Path(settings.ATELIER_PUBLIC_MODEL_DIRS[kind]), inside, bool(user.is_staff)
    membership = _membership(user)
    if membership is None:
        raise NotFound("operators have no home or team folder: use the public area", field="area")
    if chosen == Area.HOME:
        return chosen, user_workdir(user.get_username()), relative, True
    root = settings.DATA_DIR / "tenants" / membership.tenant.slug
    return chosen, root, relative, membership.role == Membership.Role.ADMIN


def resolve_place(user: AbstractUser, area: str, relative: str, *, write: bool = False) -> Place:
    """The place `relative` names in `area` for `user` (see the module's docstring for every refusal)."""
    cleaned = clean_relative(relative)
    chosen, root, inside, writable = area_root(user, area, cleaned)
    if write and not writable:
        who = {Area.TEAM: "the team's admins", Area.PUBLIC: "operators"}.get(chosen, "its owner")
        raise Forbidden(f"only {who} may change the {chosen} folders", field="path")
    if chosen == Area.HOME:
        root.mkdir(mode=PRIVATE_FOLDER_MODE, parents=True, exist_ok=True)
    else:
        root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    path = (root / inside).resolve()
    if not path.is_relative_to(root):
        raise Forbidden("this path leads outside the folder (a symbolic link?): it cannot be used", field="path")
    return Place(chosen, root, inside, path, writable)


def open_dir_nofollow(root: Path, relative: PurePosixPath, *, create: bool = False) -> int:
    """A file descriptor of the folder `relative` below `root`, each component opened with
    `O_NOFOLLOW | O_DIRECTORY` from the root (created owner-only with `create`): a symbolic link
    anywhere on the way is refused (`OSError`, ELOOP/ENOTDIR) instead of followed. The caller closes it."""
    descriptor = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in ([] if str(relative) == "." else relative.parts):
            if create:
                try:
                    os.mkdir(part, PRIVATE_FOLDER_MODE, dir_fd=descriptor)
                except FileExistsError:
                    pass
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=descriptor)
            os.close(descriptor)
            descriptor = child
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor
