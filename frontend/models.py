"""The per-member Gradio workspace process, as operators see it in Django admin.

The live state (the child process, its secret) is held by the session manager in the
web process; this row mirrors it so that operators can see who has a workspace running.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class WorkspaceSession(models.Model):
    class Status(models.TextChoices):
        STARTING = "starting", "Starting"
        RUNNING = "running", "Running"
        STOPPED = "stopped", "Stopped"
        CRASHED = "crashed", "Crashed"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="workspace_session"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.STARTING)
    pid = models.IntegerField(null=True, blank=True)
    port = models.IntegerField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True, help_text="When the process first answered.")
    last_seen_at = models.DateTimeField(null=True, blank=True, help_text="Last request through the proxy.")
    stopped_at = models.DateTimeField(null=True, blank=True)
    restarts = models.PositiveIntegerField(default=0, help_text="Restarts after a crash.")
    stop_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-last_seen_at"]

    def __str__(self) -> str:
        return f"{self.user} workspace ({self.status}, pid {self.pid})"


# The workspace's preferences and extensions live in their own module (frontend/preferences.py).
from frontend.preferences import Extension, ExtensionChoice, WorkspacePreferences  # noqa: E402,F401
