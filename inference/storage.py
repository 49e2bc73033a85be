"""The one way files are written into, and read from, a member's working directory
(`users/<name>/…` keys).

A member owns their working directory and may put symbolic links in it (a workspace shell, a
synced folder). A write that followed such a link could land outside the directory: in
another member's `outputs/`, or anywhere the server may write. So on local storage every write

- resolves the key's final path and refuses it (`UnsafeOutputPath`) unless it is still inside
  the member's own directory (as model folders ignore links that point out, `model_registry`);
- then walks that resolved path from the member's directory one folder at a time with
  `O_NOFOLLOW` file descriptors, creating missing folders owner-only (0700), and writes the file
  owner-only (0600) under a temporary name renamed over the final one: a link swapped in after
  the check is refused by the kernel, not followed, and a half-written file is never seen.

Reads (`member_file_open`, and `member_file_read` / `member_image_open` on top of it) are held to the same rule: a key whose file resolves outside the
member's directory (an output replaced by a link to another member's render) reads as missing.

Object storage (S3, OSS, MinIO) has no links: keys are written and read as they are, and a
write never replaces anything: a taken name gets a suffix from the storage (`file_overwrite=False`)
and `member_file_save` returns the key it chose, which its callers store. `member_file_url` is a
short-lived signed URL of a stored key (None on local storage, where the platform streams it).
"""

from __future__ import annotations

import io
import os
import secrets
from pathlib import Path
from typing import IO

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image

FOLDER_MODE = 0o700
FILE_MODE = 0o600


class UnsafeOutputPath(ValueError):
    """The key leads outside the member's working directory (through a symbolic link); the
    message says so without naming any server path."""


def _local_path(key: str) -> Path | None:
    try:
        return Path(default_storage.path(key))
    except NotImplementedError:  # object storage
        return None


def _member_root(key: str) -> str:
    parts = key.split("/")
    if len(parts) < 3 or parts[0] != "users" or not parts[1]:
        raise ValueError(f"{key!r} is not a key inside a member's working directory")
    return f"users/{parts[1]}"


def member_file_save(key: str, data: bytes, *, skip_if_stored: bool = False) -> str:
    """Write `data` at `key` (`users/<name>/…`); returns the key it was stored under.

    Object storage never overwrites: a taken key gets a suffix and the new key is returned (callers
    keep what this returns, never `key`). `skip_if_stored` (content-named keys, the same bytes
    whatever the name holds): object storage skips the upload when the key exists and returns it.
    Local storage always writes at `key`, since what is there may be a link the member put in its
    place (replaced, never followed).
    """
    root_key = _member_root(key)
    path = _local_path(key)
    if path is None:
        if skip_if_stored and default_storage.exists(key):
            return key
        return default_storage.save(key, ContentFile(data))  # a taken key: a suffixed one, returned
    root_path = _local_path(root_key)
    assert root_path is not None
    root_path.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    root = root_path.resolve()
    resolved = path.resolve()  # follows every link that exists now
    if not resolved.is_relative_to(root) or resolved == root:
        where = key[len(root_key) + 1:].rsplit("/", 1)[0]
        raise UnsafeOutputPath(
            f"the folder {where!r} leads outside your working directory (a symbolic link?): "
            "remove the link or choose another alwayson_scripts.save_dir"
        )
    _write_beneath(root, resolved.relative_to(root).parts, data)
    return key


def _write_beneath(root: Path, parts: tuple[str, ...], data: bytes) -> None:
    """Create `root/parts…` without following any link below `root` (see the module docstring)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    folder = os.open(root, flags)
    try:
        for name in parts[:-1]:
            try:
                os.mkdir(name, FOLDER_MODE, dir_fd=folder)
            except FileExistsError:
                pass
            try:
                inner = os.open(name, flags, dir_fd=folder)
            except OSError:  # a link (or a file) where a folder should be: swapped in after the check
                raise UnsafeOutputPath(
                    "a folder of this job's output path was replaced by a link or a file while writing: "
                    "remove it or choose another alwayson_scripts.save_dir"
                ) from None
            os.close(folder)
            folder = inner
        temporary = f".{parts[-1]}.{secrets.token_hex(6)}.tmp"
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE, dir_fd=folder)
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            os.replace(temporary, parts[-1], src_dir_fd=folder, dst_dir_fd=folder)  # replaces a link, never follows it
        except BaseException:
            try:
                os.unlink(temporary, dir_fd=folder)
            except FileNotFoundError:
                pass
            raise
    finally:
        os.close(folder)


def storage_error(exc: BaseException) -> str:
    """What a member may read of a storage failure: the kind of failure, never an address or a key."""
    text = str(exc).lower()
    if "could not connect" in text or "connection" in text or "timed out" in text or "timeout" in text:
        return "the storage server could not be reached"
    if "access denied" in text or "forbidden" in text or "credentials" in text or "signature" in text:
        return "the storage refused the worker's credentials"
    if "nosuchbucket" in text or "no such bucket" in text:
        return "the storage bucket does not exist"
    return f"the storage answered {type(exc).__name__}"


def member_file_discard(keys: list[str]) -> None:
    """Remove what a worker stored for a job that turned out not to be its own any more (a stale
    attempt: its worker was declared dead and the job re-ran elsewhere), so no image is left that
    no job names. Object storage only: there each save has a key of its own (a taken key gets a
    suffix), so these keys are this attempt's alone. Local storage writes at the job's own name,
    which the attempt that won names too: nothing there is this attempt's alone, nothing is removed."""
    for key in keys:
        _member_root(key)  # only ever inside a member's working directory
        if _local_path(key) is None:
            default_storage.delete(key)


def member_file_open(key: str) -> IO[bytes]:
    """Open the file at `key` (`users/<name>/…`) for reading; FileNotFoundError when it is gone,
    or when it resolves (through a link) outside the member's working directory."""
    root_key = _member_root(key)
    path = _local_path(key)
    if path is None:
        return default_storage.open(key, "rb")
    root_path = _local_path(root_key)
    assert root_path is not None
    resolved = path.resolve()
    if not resolved.is_relative_to(root_path.resolve()) or not resolved.is_file():
        raise FileNotFoundError(key)
    return open(resolved, "rb")  # noqa: SIM115 (the caller closes it)


def member_file_url(key: str, *, download_name: str | None = None) -> str | None:
    """A short-lived signed URL of the member's stored `key` on object storage (None on local
    storage: the platform streams the file itself); FileNotFoundError when nothing is stored there.

    `download_name`: the URL answers `application/octet-stream` as an attachment of that name
    (the FileBrowser's downloads); without it, the object's own type (`image/png` for images).
    The caller has checked that the key is the caller's own: the URL is a bearer credential
    until it expires (`ATELIER_S3_SIGNED_URL_SECONDS`).
    """
    _member_root(key)
    if _local_path(key) is not None:
        return None
    if not default_storage.exists(key):
        raise FileNotFoundError(key)
    parameters = None
    if download_name is not None:
        from django.utils.http import content_disposition_header

        parameters = {"ResponseContentType": "application/octet-stream",
                      "ResponseContentDisposition": content_disposition_header(True, download_name)}
    return default_storage.url(key, parameters=parameters)


def member_file_read(key: str) -> bytes:
    """The bytes of the file at `key`; FileNotFoundError as `member_file_open`."""
    with member_file_open(key) as handle:
        return handle.read()


def member_image_open(key: str) -> Image.Image:
    """The image at `key`, fully loaded (a PNG's text chunks kept), its file closed;
    FileNotFoundError as `member_file_open`."""
    image = Image.open(io.BytesIO(member_file_read(key)))
    image.load()
    return image


# --- model files: storage-relative keys ----------------------------------------------------------
#
# A job names its model files by key (`inference/jobspec.py`), not by path: a worker on another
# machine mounts DATA_DIR (and the public model folders) somewhere else. `public/models/<kind>/…`
# maps to this machine's public folder of that kind (`ATELIER_PUBLIC_MODEL_DIRS`, each
# overridable like A1111's --lora-dir); any other key lives under DATA_DIR. As for members'
# files above, a key whose file resolves (through `..` or a link) outside its root is refused.


class UnsafeModelKey(ValueError):
    """A model key that is malformed or leads outside DATA_DIR / its public model folder."""


def _model_roots() -> list[tuple[str, Path]]:
    """(key prefix, folder on this machine), most specific first: the public folders, then DATA_DIR."""
    from django.conf import settings

    roots = [(f"public/models/{kind}", Path(folder)) for kind, folder in settings.ATELIER_PUBLIC_MODEL_DIRS.items()]
    return [*roots, ("", Path(settings.DATA_DIR))]


def model_file_key(path: str | Path) -> str:
    """The storage-relative key of a model file on this machine (`UnsafeModelKey` if it lies
    outside DATA_DIR and every public model folder)."""
    resolved = Path(path).resolve()
    for prefix, folder in _model_roots():
        root = folder.resolve()
        if resolved.is_relative_to(root) and resolved != root:
            relative = resolved.relative_to(root).as_posix()
            return f"{prefix}/{relative}" if prefix else relative
    raise UnsafeModelKey(f"the model file {Path(path).name!r} lies outside the data and model folders")


def model_file_path(key: str) -> Path:
    """The file a model key names on this machine; `UnsafeModelKey` for a key that is not a plain
    relative key or whose file resolves outside its folder (DATA_DIR, or the public one of its kind)."""
    from inference.jobspec import JobSpecError, check_model_key

    try:
        check_model_key(key)
    except JobSpecError as exc:
        raise UnsafeModelKey(str(exc)) from None
    for prefix, folder in _model_roots():
        if prefix and not key.startswith(prefix + "/"):
            continue
        root = folder.resolve()
        resolved = (root / key.removeprefix(prefix + "/" if prefix else "")).resolve()
        if not resolved.is_relative_to(root) or resolved == root:
            raise UnsafeModelKey(f"the model key {key!r} leads outside its folder")
        return resolved
    raise UnsafeModelKey(f"the model key {key!r} names no model folder")  # unreachable: DATA_DIR takes any key
