"""`manage.py sweeper`: the dispatcher, the one place the periodic scheduler pass runs.

Every `ATELIER_HEARTBEAT_SECONDS` it reaps dead workers (requeueing their jobs) and places
queued jobs (`inference.dispatch.sweep`). Workers do not sweep (see `inference/dispatch.py`
for why); `manage.py serve` and the end-to-end harness start this process beside them.
"""

import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections

from inference.dispatch import sweep


class Command(BaseCommand):
    help = "Reap dead workers and dispatch queued jobs, every few seconds, until interrupted."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true")

    def handle(self, *args, once: bool, **options):
        while True:
            close_old_connections()
            sweep()
            if once:
                return
            time.sleep(settings.ATELIER_HEARTBEAT_SECONDS)
