"""`manage.py sweeper`: the dispatcher, the one place the periodic scheduler pass runs.

Every `ATELIER_HEARTBEAT_SECONDS` it reaps dead workers (requeueing their jobs) and places
queued jobs (`inference.dispatch.sweep`). Workers do not sweep (see `inference/dispatch.py`
for why); `manage.py serve` and the end-to-end harness start this process beside them.
A failed pass (the database away) is logged and retried on the next beat instead of ending the
process; each beat touches the liveness file `manage.py probe sweeper --live` reads.
Beside its loop it runs the model downloader thread (`inference/model_downloads.py`), one
download at a time, so a multi-GB model never holds up a scheduler pass (not with `--once`).
"""

import logging
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections

from inference.dispatch import sweep
from inference.health import sweeper_name, touch_heartbeat
from inference.model_downloads import ModelDownloader

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Reap dead workers and dispatch queued jobs, every few seconds, until interrupted."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true")

    def handle(self, *args, once: bool, **options):
        name = sweeper_name()
        if not once:
            ModelDownloader().start()  # a daemon thread: it ends with the process
        while True:
            touch_heartbeat("sweeper", name)  # `manage.py probe sweeper --live` reads it
            close_old_connections()
            try:
                sweep()
            except Exception:  # noqa: BLE001 - a database hiccup: the next pass retries
                if once:
                    raise
                logger.exception("sweep failed; retrying in %s s", settings.ATELIER_HEARTBEAT_SECONDS)
            if once:
                return
            time.sleep(settings.ATELIER_HEARTBEAT_SECONDS)
