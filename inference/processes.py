"""The command lines of the platform's processes: web (daphne), workers (Celery), sweeper.

`manage.py serve` starts them together; the end-to-end tests start the very same commands.
"""

from __future__ import annotations

import os
import socket
import sys

from django.conf import settings


def web_command(host: str, port: int) -> list[str]:
    """daphne, through config/webserver.py: it adds timeouts for half-sent requests."""
    return [sys.executable, "-m", "config.webserver", "-b", host, "-p", str(port), "config.asgi:application"]


def worker_command(name: str, loglevel: str = "INFO", *, app: str = "config") -> list[str]:
    """A Celery worker of `app` (the end-to-end tests pass their own, which wraps this one)."""
    return [
        sys.executable, "-m", "celery", "-A", app, "worker",
        "-n", name, "--loglevel", loglevel, "--without-mingle", "--without-gossip",
    ]


def sweeper_command() -> list[str]:
    return [sys.executable, "manage.py", "sweeper"]


def worker_name(index: int) -> str:
    return f"worker{index}@{socket.gethostname()}"


def child_env(web_port: int) -> dict[str, str]:
    """Environment for child processes: the parent's, plus where to relay job events."""
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings"))
    env["DATA_DIR"] = str(settings.DATA_DIR)
    if settings.ATELIER_EVENT_TRANSPORT == "http":
        env["ATELIER_EVENTS_URL"] = f"http://127.0.0.1:{web_port}/internal/events"
    return env
