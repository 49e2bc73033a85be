"""Resumable chunked uploads into the file areas, and the storage quotas they are checked against.

An upload is a session (`FileUpload`): the client declares the target (an area and a path in it,
resolved by `tenants.filespace`, the one path helper), the size and the SHA-256, then sends the
bytes in chunks (`PUT` with `Content-Range: bytes a-b/size`), each written at exactly the session's
`offset` into a part file in the member's staging folder (`DATA_DIR/uploads/<user>/<id>.part`,
owner-only, outside every area, so a half-sent file is never listed nor loaded). A chunk that does
not start at `offset` is a `Conflict` naming the offset to resume from; after an interruption the
client reads the session and goes on from its `offset`.

At the last byte the part's size and SHA-256 are checked (a mismatch: the part is deleted,
`VerificationFailed`, 422), the target is resolved again for writing, its folders are walked with
`open_dir_nofollow` (created if missing) and the part is hard-linked under its name: `link` never
replaces a name, so of two uploads of one name the first to finish wins and the other is a
`Conflict` (409); nothing that exists is ever overwritten.

Locking: a chunk takes an exclusive `flock` on its part file, then its session row `FOR UPDATE`,
so two chunks of one session never interleave (on SQLite, where rows are not locked, the file
lock alone does it on one machine). Sessions not written to for `ATELIER_UPLOAD_EXPIRY_HOURS`
are expired (part deleted) whenever an upload starts (`uploads_expire`).

Quotas: an upload's start is checked, with its declared size and before any byte is stored, under
the tenant's row lock, by `tenants.storage_usage` (re-exported here: `storage_usage(user)` is what
the FileBrowser shows).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import transaction
from django.utils import timezone

from a1111.errors import Conflict, Forbidden, InvalidField, NotFound, RequestError, TooLarge, TooMany
from inference.model_blobs import model_file_placed
from inference.model_files import model_kind_for, model_upload_check
from tenants.filespace import Area, Place, open_dir_nofollow, resolve_place
from tenants.models import Membership, Tenant
from tenants.storage_usage import (  # noqa: F401  (re-exported: the FileBrowser shows `storage_usage(user)`)
    StorageQuotaExceeded,
    StorageUsage,
    check_storage,
    storage_usage,
)
from tenants.upload_models import FileUpload
from tenants.workdirs import PRIVATE_FOLDER_MODE, user_workdir

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_CONTENT_RANGE = re.compile(r"^bytes ([0-9]{1,20})-([0-9]{1,20})/([0-9]{1,20})$")
_PIECE = 1024 * 1024
_UNFINISHED = (FileUpload.State.OPEN, FileUpload.State.VERIFYING)


class VerificationFailed(InvalidField):
    """The bytes received are not the file declared (size or SHA-256): the part is deleted (422)."""


class OffsetConflict(Conflict):
    """A chunk that does not start where the session stands; `offset` is where to resume."""

    def __init__(self, message: str, *, offset: int) -> None:
        super().__init__(message, field="Content-Range")
        self.offset = offset


# --- sessions -----------------------------------------------------------------------------------

def staging_dir(username: str) -> Path:
    """The member's staging folder for part files (owner-only), created on demand."""
    user_workdir(username)  # refuses a name that is not a plain folder name
    folder = settings.DATA_DIR / "uploads" / username
    (settings.DATA_DIR / "uploads").mkdir(mode=PRIVATE_FOLDER_MODE, exist_ok=True)
    folder.mkdir(mode=PRIVATE_FOLDER_MODE, exist_ok=True)
    return folder


def part_path(upload: FileUpload) -> Path:
    return staging_dir(upload.owner.get_username()) / f"{upload.public_id}.part"


def upload_get_for_user(user: AbstractUser, public_id: str) -> FileUpload:
    """The caller's own upload session; anyone else's, or none, is the same `NotFound`."""
    upload = FileUpload.objects.select_related("owner").filter(owner=user, public_id=str(public_id)).first()
    if upload is None:
        raise NotFound("no such upload", field="id")
    return upload


def upload_json(upload: FileUpload) -> dict[str, object]:
    return {"id": upload.public_id, "area": upload.area, "path": upload.path, "size": upload.size,
            "sha256": upload.sha256, "offset": upload.offset, "chunk_size": settings.ATELIER_UPLOAD_CHUNK_BYTES,
            "state": upload.state, "message": upload.message}


def uploads_expire(*, now: dt.datetime | None = None) -> int:
    """Abort every unfinished session untouched for `ATELIER_UPLOAD_EXPIRY_HOURS`, deleting its part."""
    cutoff = (now or timezone.now()) - dt.timedelta(hours=settings.ATELIER_UPLOAD_EXPIRY_HOURS)
    expired = 0
    for upload in FileUpload.objects.select_related("owner").filter(state__in=_UNFINISHED, updated_at__lt=cutoff):
        with contextlib.suppress(FileNotFoundError):
            part_path(upload).unlink()
        expired += FileUpload.objects.filter(pk=upload.pk, state__in=_UNFINISHED).update(
            state=FileUpload.State.ABORTED, updated_at=timezone.now(),
            message=f"expired: no chunk came for {settings.ATELIER_UPLOAD_EXPIRY_HOURS:g} hours")
    return expired


def _target(user: AbstractUser, area: str, path: str) -> Place:
    place = resolve_place(user, area, path, write=True)
    if str(place.relative) == ".":
        raise InvalidField("name the file to create, e.g. models/Stable-diffusion/my-model.safetensors", field="path")
    return place


def upload_start(*, user: AbstractUser, area: object, path: object, size: object, sha256: object) -> FileUpload:
    """Open an upload session of `size` bytes with SHA-256 `sha256` to `path` in `area` (see the
    module's docstring): refused before anything is stored when the name exists, the size is over
    `ATELIER_UPLOAD_MAX_BYTES` or a storage limit, or the member has too many open uploads."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidField("must be the file's size in bytes (a whole number, 0 or more)", field="size")
    if size > settings.ATELIER_UPLOAD_MAX_BYTES:
        raise TooLarge(f"a file may be at most {settings.ATELIER_UPLOAD_MAX_BYTES:,} bytes", field="size")
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise InvalidField("must be the file's SHA-256 as 64 hexadecimal digits", field="sha256")
    if not isinstance(area, str):
        raise InvalidField("must be home, team or public", field="area")
    place = _target(user, area, path if isinstance(path, str) else None)  # type: ignore[arg-type]
    model_upload_check(area, str(place.relative))  # a pickle into a model folder: refused before any byte
    if place.path.exists() or place.path.is_symlink():
        raise Conflict(f"{place.display} already exists: upload under another name, or delete it first", field="path")
    uploads_expire()
    membership = Membership.objects.select_related("tenant").filter(user=user).first()
    with transaction.atomic():
        if membership is not None and place.area != Area.PUBLIC:
            Tenant.objects.select_for_update().filter(pk=membership.tenant_id).first()
            check_storage(user, membership, place.area, size)
        if FileUpload.objects.filter(owner=user, state__in=_UNFINISHED).count() >= settings.ATELIER_UPLOAD_MAX_OPEN_PER_USER:
            raise TooMany(f"you have {settings.ATELIER_UPLOAD_MAX_OPEN_PER_USER} unfinished uploads: finish or "
                          "cancel one first", field="size")
        upload = FileUpload.objects.create(owner=user, area=place.area, path=str(place.relative), size=size,
                                           sha256=sha256.lower())
    descriptor = os.open(part_path(upload), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    os.close(descriptor)
    if size == 0:
        FileUpload.objects.filter(pk=upload.pk).update(state=FileUpload.State.VERIFYING)
        upload.state = FileUpload.State.VERIFYING
        _finish(upload)
    return upload


def parse_content_range(header: str) -> tuple[int, int, int]:
    """`bytes first-last/size` → (first, last, size), `last` inclusive; `InvalidField` otherwise."""
    match = _CONTENT_RANGE.match(header.strip())
    if not match:
        raise InvalidField("send 'Content-Range: bytes <first>-<last>/<size>' with each chunk", field="Content-Range")
    first, last, total = (int(group) for group in match.groups())
    if last < first:
        raise InvalidField("the range's last byte comes before its first", field="Content-Range")
    return first, last, total


@contextlib.contextmanager
def _part_locked(upload: FileUpload) -> Iterator[int]:
    """The part file, open for writing under an exclusive `flock` (one writer per session)."""
    try:
        descriptor = os.open(part_path(upload), os.O_WRONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise Conflict(f"this upload is {upload.state}: start a new one", field="id") from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield descriptor
    finally:
        os.close(descriptor)


def _write_chunk(descriptor: int, first: int, body: BinaryIO, length: int) -> None:
    """Write exactly `length` bytes of `body` at `first`; anything else is refused and undone."""
    os.ftruncate(descriptor, first)  # a chunk cut off earlier may have left bytes past the offset
    written = 0
    while written < length:
        piece = body.read(min(_PIECE, length - written))
        if not piece:
            break
        os.pwrite(descriptor, piece, first + written)
        written += len(piece)
    if written != length or body.read(1):
        os.ftruncate(descriptor, first)
        raise InvalidField(f"the body does not hold the {length:,} bytes the Content-Range names", field="Content-Range")
    os.fdatasync(descriptor)


def upload_append(*, user: AbstractUser, public_id: str, content_range: str, body: BinaryIO,
                  content_length: int | None) -> FileUpload:
    """Write one chunk at the session's offset; at the last byte, verify and place the file."""
    first, last, total = parse_content_range(content_range)
    length = last - first + 1
    if length > settings.ATELIER_UPLOAD_CHUNK_BYTES or (content_length or 0) > settings.ATELIER_UPLOAD_CHUNK_BYTES:
        raise TooLarge(f"a chunk may be at most {settings.ATELIER_UPLOAD_CHUNK_BYTES:,} bytes", field="Content-Range")
    if content_length is not None and content_length != length:
        raise InvalidField(f"Content-Length {content_length:,} is not the range's {length:,} bytes", field="Content-Range")
    upload = upload_get_for_user(user, public_id)
    if upload.state not in _UNFINISHED:
        raise Conflict(f"this upload is {upload.state}: start a new one", field="id")
    with _part_locked(upload) as descriptor, transaction.atomic():
        upload = FileUpload.objects.select_for_update().select_related("owner").get(pk=upload.pk)
        if upload.state != FileUpload.State.OPEN:
            raise Conflict(f"this upload is {upload.state}: start a new one", field="id")
        if total != upload.size:
            raise InvalidField(f"the range's size {total:,} is not the upload's {upload.size:,}", field="Content-Range")
        if last >= upload.size:
            raise InvalidField(f"the chunk ends past the upload's {upload.size:,} bytes", field="Content-Range")
        if first != upload.offset:
            raise OffsetConflict(f"this chunk starts at {first:,} but the upload stands at {upload.offset:,}: "
                                 "send from there", offset=upload.offset)
        _write_chunk(descriptor, first, body, length)
        upload.offset = last + 1
        if upload.offset == upload.size:
            upload.state = FileUpload.State.VERIFYING
        upload.save(update_fields=["offset", "state", "updated_at"])
    if upload.state == FileUpload.State.VERIFYING:
        _finish(upload)
    return upload


def upload_abort(*, user: AbstractUser, public_id: str) -> FileUpload:
    """Cancel an unfinished upload (its part deleted); a finished one is a `Conflict`, an aborted one stays so."""
    upload = upload_get_for_user(user, public_id)
    if upload.state == FileUpload.State.ABORTED:
        return upload
    if upload.state not in _UNFINISHED:
        raise Conflict(f"this upload is {upload.state}: there is nothing to cancel", field="id")
    with _part_locked(upload), transaction.atomic():
        upload = FileUpload.objects.select_for_update().select_related("owner").get(pk=upload.pk)
        if upload.state == FileUpload.State.OPEN:
            part_path(upload).unlink(missing_ok=True)
            upload.state, upload.message = FileUpload.State.ABORTED, "cancelled by its owner"
            upload.save(update_fields=["state", "message", "updated_at"])
    if upload.state != FileUpload.State.ABORTED:
        raise Conflict(f"this upload is {upload.state}: there is nothing to cancel", field="id")
    return upload


def _verify(upload: FileUpload, part: Path) -> None:
    received = part.stat().st_size
    if received != upload.size:
        raise VerificationFailed(f"received {received:,} bytes, not the {upload.size:,} declared: upload it again",
                                 field="size")
    with part.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    if digest != upload.sha256:
        raise VerificationFailed(f"the bytes received have SHA-256 {digest}, not the {upload.sha256} declared: "
                                 "the file changed or was damaged on the way; upload it again", field="sha256")
    try:  # into a models/<kind> folder: the platform's one gate on a model file's content
        model_upload_check(upload.area, upload.path, received=part)
    except InvalidField as refusal:
        raise VerificationFailed(refusal.message, field="path") from None


def _link_into(part: Path, descriptor: int, name: str, upload: FileUpload, display: str) -> None:
    """Hard-link `part` as `name` in the folder `descriptor` (never replacing a name); across file
    systems, through a copy in that folder first."""
    try:
        os.link(part, name, dst_dir_fd=descriptor, follow_symlinks=False)
        return
    except FileExistsError:
        raise Conflict(f"{display} already exists (another upload finished first): upload under another name",
                       field="path") from None
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    temporary = f".{upload.public_id}.uploading"
    copy = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=descriptor)
    try:
        with os.fdopen(copy, "wb") as target, part.open("rb") as source:
            shutil.copyfileobj(source, target, _PIECE)
            target.flush()
            os.fsync(target.fileno())
        try:
            os.link(temporary, name, src_dir_fd=descriptor, dst_dir_fd=descriptor, follow_symlinks=False)
        except FileExistsError:
            raise Conflict(f"{display} already exists (another upload finished first): upload under another name",
                           field="path") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=descriptor)


def _place(upload: FileUpload, part: Path) -> None:
    place = _target(upload.owner, upload.area, upload.path)  # resolved again: rights and links may have changed
    try:
        descriptor = open_dir_nofollow(place.root, place.relative.parent, create=True)
    except (NotADirectoryError, FileExistsError) as exc:
        raise Conflict(f"a name on the way to {place.display} is a file, not a folder", field="path") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Forbidden(f"a folder on the way to {place.display} is a symbolic link: it cannot be used",
                            field="path") from exc
        raise
    try:
        _link_into(part, descriptor, place.relative.name, upload, place.display)
    finally:
        os.close(descriptor)


def _finish(upload: FileUpload) -> None:
    """Verify the part and place it; on a refusal the part is deleted and the session `failed`."""
    part = part_path(upload)
    try:
        _verify(upload, part)
        _place(upload, part)
    except RequestError as exc:
        part.unlink(missing_ok=True)
        upload.state, upload.message = FileUpload.State.FAILED, str(exc)
        upload.save(update_fields=["state", "message", "updated_at"])
        raise
    part.unlink(missing_ok=True)
    upload.state, upload.message = FileUpload.State.COMPLETE, ""
    upload.save(update_fields=["state", "message", "updated_at"])
    if model_kind_for(upload.area, upload.path) is not None:  # for workers on other machines
        model_file_placed(_target(upload.owner, upload.area, upload.path).path, upload.sha256)
