"""Which download runs, and where: claiming the oldest queued one, ending it, and the sweeper's downloader thread."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from a1111.images import ImageInputError
from inference.model_downloads.fetching import (
    ACTIVE,
    DownloadBusy,
    DownloadFailed,
    DownloadStopped,
    State,
    download_into_place,
)
from inference.models import ModelDownload

logger = logging.getLogger(__name__)

_CHUNK_PROGRESS_SECONDS = 1.0


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
        download_into_place(download, progress_every_s=progress_every_s)
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
