"""The Celery app. Workers start with `celery -A config worker` (see inference/runner/lifecycle.py
for how each worker registers itself and listens on its own queue)."""

import logging
import logging.config
import os

from celery import Celery
from celery.signals import setup_logging

from config import filebroker

filebroker.register()  # the embedded default's broker URL, atelier-files://, before any connection
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("atelier")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# The run_batch task lives in inference/runner/tasks.py, not <app>/tasks.py: name the package
# (settings.CELERY_IMPORTS imports it too). Its name, "atelier.run_batch", is explicit
# (inference.dispatch.RUN_BATCH_TASK), so queued messages survive module moves.
app.autodiscover_tasks(["inference.runner"])


@setup_logging.connect
def use_the_platform_logging(loglevel: int | str | None = None, **kwargs) -> None:
    """A worker logs as every other process does (`LOGGING`: `LOG_FORMAT`, the job/worker fields of
    `config/logcontext.py`) instead of Celery's own format: connecting this signal stops Celery from
    configuring the root logger itself. `--loglevel` still sets the root level."""
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
    if loglevel:
        logging.getLogger().setLevel(loglevel)
