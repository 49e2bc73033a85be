"""One download's bytes: fetched into a locked part file (resumed where one is kept), verified, placed without overwriting."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.utils import timezone

from a1111.errors import InvalidField
from a1111.images import ImageInputError
from inference.inputs.fetch import Fetcher
from inference.model_blobs import model_file_placed
from inference.model_files import model_file_check
from inference.models import ModelDownload, ModelFileHash
from tenants.filespace import open_dir_nofollow
from tenants.workdirs import public_model_dir, tenant_model_dir

STAGING_FOLDER = ".atelier-downloads"

State = ModelDownload.State
ACTIVE = (State.DOWNLOADING, State.VERIFYING)


class DownloadFailed(Exception):
    """A download that cannot complete; the message is shown to operators."""


class DownloadStopped(Exception):
    """The download was cancelled (or taken over by another downloader) while it ran."""


class DownloadBusy(Exception):
    """Another downloader still holds the part file (a download wrongly thought stale)."""


class DownloadTooLarge(ImageInputError):
    """Over `ATELIER_MODEL_DOWNLOAD_MAX_BYTES`: refused, and the part is not kept for a retry."""


class ModelFetcher(Fetcher):
    subject = "model"
    accept = "*/*"
    user_agent = "atelier-model-download/1"

    def _too_large(self) -> ImageInputError:
        return DownloadTooLarge(
            f"the model at the URL is larger than the limit of {settings.ATELIER_MODEL_DOWNLOAD_MAX_BYTES} bytes")


def target_folder(download: ModelDownload) -> Path:
    """The model folder the file is placed in."""
    if download.area == ModelDownload.Area.TEAM:
        assert download.tenant is not None
        return tenant_model_dir(download.tenant.slug, download.kind)
    return public_model_dir(download.kind)


def folder_display(download: ModelDownload) -> str:
    """How operators see the folder (never a server path)."""
    if download.area == ModelDownload.Area.TEAM:
        return f"team {download.tenant.slug if download.tenant else '?'}/models/{download.kind}"
    return f"public/{download.kind}"



@dataclass
class _Progress:
    download: ModelDownload
    every_s: float
    done: int = 0
    last_report: float = 0.0

    def report(self, *, force: bool = False) -> None:
        """Write the bytes done (about once a second); stop if the download was cancelled or taken over."""
        now = time.monotonic()
        if not force and now - self.last_report < self.every_s:
            return
        self.last_report = now
        still_ours = ModelDownload.objects.filter(
            pk=self.download.pk, runner=self.download.runner, state__in=ACTIVE, cancel_requested=False,
        ).update(bytes_done=self.done, updated_at=timezone.now())
        if not still_ours:
            raise DownloadStopped()


def download_into_place(download: ModelDownload, *, progress_every_s: float) -> None:
    """Fetch, verify and place one claimed download (see the package's docstring); raises on failure."""
    folder = target_folder(download)
    folder.mkdir(parents=True, exist_ok=True)
    root = folder.resolve()
    fetcher = ModelFetcher(
        max_bytes=settings.ATELIER_MODEL_DOWNLOAD_MAX_BYTES,
        timeout_s=settings.ATELIER_MODEL_DOWNLOAD_TIMEOUT_SECONDS,
        max_redirects=5,
        allowed_hosts=settings.ATELIER_MODEL_DOWNLOAD_ALLOWED_HOSTS,
    )
    part_name = f"{download.public_id}.part"
    folder_fd = open_dir_nofollow(root, PurePosixPath("."))
    staging_fd = None
    keep_part = False  # a part another downloader holds, or one a retry resumes
    try:
        staging_fd = open_dir_nofollow(root, PurePosixPath(STAGING_FOLDER), create=True)
        part_fd = os.open(part_name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644, dir_fd=staging_fd)
        try:
            try:
                fcntl.flock(part_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when closed (or the process ends)
            except BlockingIOError:
                keep_part = True
                raise DownloadBusy() from None
            try:
                digest = _fetch_into(download, fetcher, part_fd, progress_every_s)
            except DownloadStopped:
                keep_part = not ModelDownload.objects.filter(pk=download.pk, cancel_requested=True).exists()
                raise
            except DownloadTooLarge:
                raise
            except ImageInputError:
                keep_part = os.fstat(part_fd).st_size > 0  # cut off halfway: a retry resumes it
                raise
            os.fsync(part_fd)
        finally:
            os.close(part_fd)
        _verify(download, digest, staging_fd, part_name)
        _place(download, staging_fd, part_name, folder_fd)
        _remember_hash(root / download.file_name, download.actual_sha256)
        model_file_placed(root / download.file_name, download.actual_sha256)  # for workers elsewhere
    finally:
        if staging_fd is not None:
            if not keep_part:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(part_name, dir_fd=staging_fd)
            os.close(staging_fd)
            with contextlib.suppress(OSError):  # not left in the folder's listing (unless another download uses it)
                os.rmdir(STAGING_FOLDER, dir_fd=folder_fd)
        os.close(folder_fd)


_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def _fetch_into(download: ModelDownload, fetcher: Fetcher, part_fd: int, progress_every_s: float) -> str:
    """Fetch into the part file, resuming after the bytes it already holds (Range) where the
    server allows; returns the whole file's SHA-256."""
    hashing = [hashlib.sha256()]  # replaced when the server sends the whole file again
    have = _hash_existing(part_fd, hashing[0])
    progress = _Progress(download, progress_every_s, done=have, last_report=time.monotonic())
    expected_total: list[int | None] = [None]

    def on_answer(status: int, headers) -> None:
        length = headers.get("content-length", "").strip()
        declared = int(length) if length.isdigit() else None
        match = _CONTENT_RANGE.match(headers.get("content-range", "").strip())
        if status == 206 and have and match and int(match.group(1)) == have:
            total = int(match.group(3)) if match.group(3) != "*" else None
            expected_total[0] = total if total is not None else (have + declared if declared is not None else None)
        elif status == 206:
            raise DownloadFailed("the server answered with a part of the file that was not asked for")
        else:  # the whole file (a server without ranges, or a first attempt): start over
            os.ftruncate(part_fd, 0)
            os.lseek(part_fd, 0, os.SEEK_SET)
            hashing[0] = hashlib.sha256()
            progress.done = 0
            expected_total[0] = declared
        ModelDownload.objects.filter(pk=download.pk, runner=download.runner).update(
            bytes_total=expected_total[0], bytes_done=progress.done)

    def write(chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            written = os.write(part_fd, view)
            view = view[written:]
        hashing[0].update(chunk)
        progress.done += len(chunk)
        progress.report()

    fetcher.max_bytes = max(settings.ATELIER_MODEL_DOWNLOAD_MAX_BYTES - have, 0)  # the cap is on the whole file
    fetcher.stream(download.url, write, on_answer=on_answer,
                   headers={"Range": f"bytes={have}-"} if have else None)
    progress.report(force=True)
    size = os.fstat(part_fd).st_size
    if expected_total[0] is not None and expected_total[0] != size:
        raise DownloadFailed(f"the server announced {expected_total[0]} bytes but sent {size}")
    if size > settings.ATELIER_MODEL_DOWNLOAD_MAX_BYTES:
        raise DownloadTooLarge(f"the model at the URL is larger than the limit of "
                               f"{settings.ATELIER_MODEL_DOWNLOAD_MAX_BYTES} bytes")
    return hashing[0].hexdigest()


def _hash_existing(part_fd: int, digest) -> int:
    """Feed what the part file already holds (an earlier attempt's bytes) to `digest`; its size."""
    os.lseek(part_fd, 0, os.SEEK_SET)
    have = 0
    while chunk := os.read(part_fd, 1024 * 1024):
        digest.update(chunk)
        have += len(chunk)
    return have


def _verify(download: ModelDownload, digest: str, staging_fd: int, part_name: str) -> None:
    ModelDownload.objects.filter(pk=download.pk, runner=download.runner, state=State.DOWNLOADING).update(
        state=State.VERIFYING, actual_sha256=digest, updated_at=timezone.now())
    download.actual_sha256 = digest
    if download.sha256 and digest != download.sha256:
        raise DownloadFailed(
            f"the file's SHA-256 is {digest}, not the expected {download.sha256}: it was deleted "
            "(check the URL, or the hash you gave)")
    try:  # the platform's one gate on a model file's content, from its header (inference/model_files.py)
        model_file_check(Path(f"/proc/self/fd/{staging_fd}") / part_name, download.kind, name=download.file_name)
    except InvalidField as refusal:
        raise DownloadFailed(f"{refusal.message}: it was deleted") from None


def _place(download: ModelDownload, staging_fd: int, part_name: str, folder_fd: int) -> None:
    """Give the part file its name in the folder, never replacing a file that has it."""
    try:
        os.link(part_name, download.file_name, src_dir_fd=staging_fd, dst_dir_fd=folder_fd, follow_symlinks=False)
    except FileExistsError:
        raise DownloadFailed(
            f"a file named {download.file_name!r} already exists in {folder_display(download)}: nothing was "
            "overwritten (delete that file, or register the download under another name)") from None


def _remember_hash(path: Path, sha256: str) -> None:
    stat = path.stat()
    ModelFileHash.objects.update_or_create(
        path=str(path.resolve()), defaults={"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256})


