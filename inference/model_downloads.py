"""The ModelZoo: models registered by URL, downloaded in the background, verified and placed.

An operator registers a download in Django admin (`ModelDownloadAdmin`), into a public model
folder or a team's; a tenant admin may register one into their own team's folder
(`model_download_register` checks who may). Nothing is fetched in a request: the sweeper
(`manage.py sweeper`, which `manage.py serve` runs in the embedded default) starts one
`ModelDownloader` thread, which takes the oldest queued download, one at a time per sweeper, and:

1. fetches it through the platform's SSRF-safe fetcher (`inference/inputs/fetch.py`): http(s)
   only, public addresses only, except hosts on `ATELIER_MODEL_DOWNLOAD_ALLOWED_HOSTS` (internal
   mirrors); each redirect hop is checked again; at most `ATELIER_MODEL_DOWNLOAD_MAX_BYTES`;
2. streams it to a part file in the target folder's staging folder (`.atelier-downloads/`, on
   the same file system as the target, removed again when empty), hashing as it goes and writing its progress (and reading
   a cancel) about once a second;
3. verifies it: the size the server declared, the expected SHA-256 when one was given, and that a
   `.safetensors` file is one (its header parses); pickled formats (`.ckpt`, `.pt`, `.pth`,
   `.bin`) are refused at registration unless `ATELIER_ALLOW_PICKLED_MODELS` (upscalers' and face
   models' `.pth` always pass: workers read them weights-only);
4. places it with a hard link from the part file, which never replaces an existing name (a name
   already taken fails the download, saying so), every folder opened without following links
   (`tenants.filespace.open_dir_nofollow`); the hash is remembered in `ModelFileHash`, so the
   registry, which scans folders per request, lists it at once without hashing it again.

A failure records a message an operator can act on and deletes the part file, except when the
connection broke off halfway: the part (`<public id>.part`) is kept and a retry resumes it with
a `Range` request (a server that ignores it sends the whole file, which replaces the part; the
hash covers the whole file either way). A download whose downloader stopped reporting (its
sweeper died) for `ATELIER_MODEL_DOWNLOAD_STALE_SECONDS` is queued again and resumes the same way;
the downloader holds an exclusive `flock` on the part while it writes, so a downloader wrongly
thought dead is never written over (the download goes back to the queue until it lets go).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import close_old_connections, connection
from django.utils import timezone

from a1111.errors import Forbidden, InvalidField
from a1111.images import ImageInputError
from inference.inputs.fetch import Fetcher
from inference.model_registry import MODEL_SUFFIXES, SUFFIXES_BY_KIND
from inference.models import ModelDownload, ModelFileHash
from tenants.filespace import clean_relative, open_dir_nofollow
from tenants.models import Membership, Tenant
from tenants.workdirs import public_model_dir, tenant_model_dir

logger = logging.getLogger(__name__)

STAGING_FOLDER = ".atelier-downloads"
PICKLED_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"})
# A1111's upscalers and face models ship as .pth and are read weights-only by workers: always allowed.
WEIGHTS_ONLY_PICKLE_KINDS = frozenset({"ESRGAN", "GFPGAN", "Codeformer"})
# Folders whose models are folders (transformers layouts), not single files: not downloadable here.
FOLDER_KINDS = frozenset({"promptgen", "BLIP", "CLIP", "interrogate", "deepbooru"})
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
_CHUNK_PROGRESS_SECONDS = 1.0

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


# --- registering ----------------------------------------------------------------------------


def download_kinds() -> list[str]:
    """The model folders a download may go to (single-file kinds)."""
    return [kind for kind in settings.ATELIER_MODEL_KINDS if kind not in FOLDER_KINDS]


def model_download_check(*, actor: AbstractUser, download: ModelDownload) -> None:
    """Refuse a registration that is malformed (`InvalidField` naming the field) or that `actor`
    may not make (`Forbidden`): operators anywhere, a tenant admin into their own team's folder."""
    if not (download.url.startswith("http://") or download.url.startswith("https://")):
        raise InvalidField("give an http:// or https:// URL", field="url")
    if download.area not in ModelDownload.Area.values:
        raise InvalidField("the area is public or team", field="area")
    if download.area == ModelDownload.Area.TEAM and download.tenant_id is None:
        raise InvalidField("name the team whose folder receives the model", field="tenant")
    if download.area == ModelDownload.Area.PUBLIC and download.tenant_id is not None:
        raise InvalidField("a public model has no team: leave the team empty", field="tenant")
    if download.kind not in download_kinds():
        raise InvalidField(f"the model folder is one of {', '.join(download_kinds())}", field="kind")
    name = clean_relative(download.file_name, field="file_name")
    if len(name.parts) != 1 or str(name) == ".":
        raise InvalidField("give a plain file name, without folders", field="file_name")
    suffix = PurePosixPath(download.file_name).suffix.lower()
    allowed = SUFFIXES_BY_KIND.get(download.kind, MODEL_SUFFIXES)
    pickles_allowed = settings.ATELIER_ALLOW_PICKLED_MODELS or download.kind in WEIGHTS_ONLY_PICKLE_KINDS
    if suffix in PICKLED_SUFFIXES and not pickles_allowed:
        raise InvalidField(
            f"{suffix} files are pickled and can run code when loaded; this platform does not allow them "
            "(ATELIER_ALLOW_PICKLED_MODELS): download the .safetensors version", field="file_name",
        )
    if suffix not in allowed:
        raise InvalidField(f"a {download.kind} model is a {' or '.join(allowed)} file", field="file_name")
    download.sha256 = download.sha256.strip().lower()
    if download.sha256 and not _SHA256.match(download.sha256):
        raise InvalidField("the SHA-256 is 64 hexadecimal digits (or leave it empty)", field="sha256")
    if actor.is_staff:
        return
    admin_of = Membership.objects.filter(user=actor, role=Membership.Role.ADMIN).values_list("tenant_id", flat=True)
    if download.area != ModelDownload.Area.TEAM or download.tenant_id not in set(admin_of):
        raise Forbidden("only operators, and a team's admins for their team's folder, may register model downloads")


def model_download_register(
    *, actor: AbstractUser, url: str, kind: str, file_name: str, area: str = ModelDownload.Area.PUBLIC,
    tenant: Tenant | None = None, sha256: str = "",
) -> ModelDownload:
    """Queue a download (checked by `model_download_check`); the sweeper's downloader takes it."""
    download = ModelDownload(url=url.strip(), area=area, tenant=tenant, kind=kind, file_name=file_name,
                             sha256=sha256, created_by=actor)
    model_download_check(actor=actor, download=download)
    download.save()
    return download


def model_download_cancel(*, download: ModelDownload) -> None:
    """A queued download is cancelled now; a running one at its next progress report."""
    ModelDownload.objects.filter(pk=download.pk, state=State.QUEUED).update(
        state=State.CANCELLED, error="cancelled", finished_at=timezone.now(), updated_at=timezone.now())
    ModelDownload.objects.filter(pk=download.pk, state__in=ACTIVE).update(cancel_requested=True)


def model_download_retry(*, download: ModelDownload) -> bool:
    """Queue a failed or cancelled download again (resuming a part kept from a broken connection);
    False for any other state."""
    return bool(ModelDownload.objects.filter(pk=download.pk, state__in=(State.FAILED, State.CANCELLED)).update(
        state=State.QUEUED, error="", bytes_done=0, bytes_total=None, actual_sha256="", cancel_requested=False,
        runner="", started_at=None, finished_at=None, updated_at=timezone.now(),
    ))


# --- downloading ----------------------------------------------------------------------------


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


def downloads_requeue_stale() -> int:
    """Queue again the downloads whose downloader stopped reporting (a sweeper that died)."""
    cutoff = timezone.now() - timedelta(seconds=settings.ATELIER_MODEL_DOWNLOAD_STALE_SECONDS)
    stale = ModelDownload.objects.filter(state__in=ACTIVE, updated_at__lt=cutoff)
    if not stale.exists():  # a read first: on SQLite an UPDATE takes the write lock even when it changes nothing
        return 0
    return stale.update(
        state=State.QUEUED, bytes_done=0, runner="", error="its downloader stopped reporting; started again",
        updated_at=timezone.now())


def model_download_claim_next() -> ModelDownload | None:
    """Take the oldest queued download for this process (a compare-and-set: two sweepers never take one)."""
    downloads_requeue_stale()
    runner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    for candidate in ModelDownload.objects.filter(state=State.QUEUED).order_by("created_at").values_list("pk", flat=True)[:5]:
        now = timezone.now()
        taken = ModelDownload.objects.filter(pk=candidate, state=State.QUEUED).update(
            state=State.DOWNLOADING, runner=runner, bytes_done=0, bytes_total=None, error="",
            cancel_requested=False, started_at=now, updated_at=now)
        if taken:
            return ModelDownload.objects.select_related("tenant").get(pk=candidate)
    return None


def model_download_run_next(*, progress_every_s: float = _CHUNK_PROGRESS_SECONDS) -> bool:
    """Download the oldest queued model, if any (False when none waits, or it is busy elsewhere)."""
    download = model_download_claim_next()
    if download is None:
        return False
    return model_download_run(download, progress_every_s=progress_every_s)


def model_download_run(download: ModelDownload, *, progress_every_s: float = _CHUNK_PROGRESS_SECONDS) -> bool:
    """Run a claimed download to its end: done, failed (with the reason) or cancelled. False if
    another downloader still holds its part file (it goes back to the queue)."""
    try:
        _download(download, progress_every_s)
    except DownloadBusy:
        ModelDownload.objects.filter(pk=download.pk, runner=download.runner).update(
            state=State.QUEUED, runner="", updated_at=timezone.now())
        return False
    except DownloadStopped:
        _finish(download, State.CANCELLED, "cancelled", from_states=(*ACTIVE,), stopped=True)
    except (DownloadFailed, ImageInputError) as exc:
        _finish(download, State.FAILED, str(exc))
    except Exception as exc:  # noqa: BLE001 - a disk or database error: the download fails, the thread goes on
        logger.exception("model download %s failed", download.public_id)
        _finish(download, State.FAILED, f"the download failed: {exc.__class__.__name__}")
    else:
        _finish(download, State.DONE, "")
    return True


def _finish(download: ModelDownload, state: str, error: str, *, from_states=ACTIVE, stopped: bool = False) -> None:
    rows = ModelDownload.objects.filter(pk=download.pk, runner=download.runner, state__in=from_states)
    if stopped:  # cancelled, or taken over by another downloader (whose row this no longer is)
        rows = rows.filter(cancel_requested=True)
    rows.update(state=state, error=error[:2000], finished_at=timezone.now(), updated_at=timezone.now(),
                cancel_requested=False)


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


def _download(download: ModelDownload, progress_every_s: float) -> None:
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
    if PurePosixPath(download.file_name).suffix.lower() == ".safetensors":
        problem = _safetensors_problem(staging_fd, part_name)
        if problem:
            raise DownloadFailed(f"the file is not a safetensors file ({problem}): it was deleted")


def _safetensors_problem(staging_fd: int, part_name: str) -> str:
    """Why the file is not a safetensors file ('' if its header parses): 8 bytes of header length, a JSON object."""
    fd = os.open(part_name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=staging_fd)
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, 8, 0)
        if len(head) < 8:
            return "too short"
        length = int.from_bytes(head, "little")
        if length < 2 or length > _MAX_SAFETENSORS_HEADER or 8 + length > size:
            return "no valid header length"
        try:
            header = json.loads(os.pread(fd, length, 8))
        except (UnicodeDecodeError, ValueError):
            return "its header is not JSON"
        if not isinstance(header, dict):
            return "its header is not a JSON object"
        return ""
    finally:
        os.close(fd)


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


# --- the sweeper's downloader thread ---------------------------------------------------------------


class ModelDownloader(threading.Thread):
    """The thread `manage.py sweeper` starts: downloads queued models one at a time, and waits
    `idle_s` between looks when none is queued. `stop()` ends it after the current download."""

    def __init__(self, *, idle_s: float | None = None, progress_every_s: float = _CHUNK_PROGRESS_SECONDS) -> None:
        super().__init__(name="model-downloader", daemon=True)
        self.idle_s = settings.ATELIER_HEARTBEAT_SECONDS if idle_s is None else idle_s
        self.progress_every_s = progress_every_s
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        while not self._stop_event.is_set():
            worked = False
            try:
                close_old_connections()
                worked = model_download_run_next(progress_every_s=self.progress_every_s)
            except Exception:  # noqa: BLE001 - the database away: look again on the next beat
                logger.exception("model downloader pass failed; retrying")
            finally:
                close_old_connections()
            if not worked:
                self._stop_event.wait(self.idle_s)
        connection.close()
