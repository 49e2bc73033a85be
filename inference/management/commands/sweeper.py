"""`manage.py sweeper`: the periodic scheduler pass, for clusters that want one outside the workers.

Every worker already sweeps on its heartbeat; run this too so that jobs held by dead
workers are reaped even while no worker is alive.
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
