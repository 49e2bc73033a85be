"""`manage.py sweeper`: the dispatcher, the one place scheduler passes run.

Every `ATELIER_HEARTBEAT_SECONDS` it reaps dead workers (requeueing their jobs), pumps the EAS
queues and places queued jobs (`inference.dispatch.sweep`). Between those beats it waits to be
woken (`inference/dispatch_wake.py`: a `NOTIFY` on PostgreSQL, a datagram on SQLite) by a
submission, a finished batch or a worker coming or going, and then runs a dispatch-only pass at
once; wakes that arrive during a pass make one more pass, not one each. Workers and the web
process never run a pass (see `inference/dispatch.py` for why); `manage.py serve`, docker/ and
the end-to-end harness start this process beside them. Two of them may run (failover): the one
holding the leadership lock (`DispatchWaiter.lead`) decides, the other waits for it; a killed
leader's lock goes with its connection. A failed pass (the database away) is logged and retried on the next beat instead of
ending the process; each beat touches the liveness file `manage.py probe sweeper --live` reads.
Beside its loop it runs the model downloader thread (`inference/model_downloads.py`), one
download at a time, so a multi-GB model never holds up a scheduler pass (not with `--once`).
"""

import logging
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections

from inference.dispatch import sweep
from inference.dispatch_memory import QueueMemory
from inference.dispatch_wake import DispatchWaiter
from inference.health import sweeper_name, touch_heartbeat
from inference.model_downloads import ModelDownloader

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Reap dead workers and dispatch queued jobs, every few seconds and when woken, until interrupted."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true")

    def handle(self, *args, once: bool, **options):
        name = sweeper_name()
        if once:
            touch_heartbeat("sweeper", name)
            sweep()
            return
        ModelDownloader().start()  # a daemon thread: it ends with the process
        waiter = DispatchWaiter()  # listening before the first pass: no wake falls between
        memory = QueueMemory()  # the queued window between passes (inference/dispatch_memory.py)
        period = settings.ATELIER_HEARTBEAT_SECONDS
        next_beat = 0.0  # the first pass is a full one
        while True:
            now = time.monotonic()
            full = now >= next_beat
            if full:
                touch_heartbeat("sweeper", name)  # `manage.py probe sweeper --live` reads it
                next_beat = now + period
            close_old_connections()
            try:
                if waiter.lead():  # a standby (failover) only waits for the leader's lock
                    sweep(reap=full, memory=memory)
            except Exception:  # noqa: BLE001 - a database hiccup: the next pass retries
                logger.exception("sweep failed; retrying in %s s", period)
                time.sleep(max(0.0, next_beat - time.monotonic()))
                continue
            # Until the next beat, or a wake (every wake so far drained: one pass for them all).
            waiter.wait(max(0.0, next_beat - time.monotonic()))
