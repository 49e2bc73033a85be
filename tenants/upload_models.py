"""The `FileUpload` row: one resumable upload session (`tenants/uploads.py` writes it).

A session names its target as an area and a path inside it (`tenants.filespace`), never a server
path, and the size and SHA-256 the client declared. The bytes received so far live in a part file
in the member's staging folder (`DATA_DIR/uploads/<user>/<public_id>.part`, owner-only); `offset`
is how many of them are safely written, so a client resumes from it. Imported by `tenants.models`
so Django registers it with the app.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models


def new_upload_id() -> str:
    return "up_" + secrets.token_urlsafe(12)


class FileUpload(models.Model):
    class State(models.TextChoices):
        OPEN = "open"  # receiving chunks
        VERIFYING = "verifying"  # the last byte came: size and SHA-256 being checked, then placed
        COMPLETE = "complete"  # verified and placed at its target
        FAILED = "failed"  # verification or placement refused it (`message` says why); the part is gone
        ABORTED = "aborted"  # cancelled by its owner, or expired; the part is gone

    public_id = models.CharField(max_length=32, unique=True, default=new_upload_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="file_uploads")
    area = models.CharField(max_length=16)
    path = models.CharField(max_length=4096)  # the cleaned relative path inside the area
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    offset = models.BigIntegerField(default=0)
    state = models.CharField(max_length=16, choices=State.choices, default=State.OPEN)
    message = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "tenants"
        indexes = [models.Index(fields=["state", "updated_at"], name="tenants_upload_state_idx")]

    def __str__(self) -> str:
        return f"{self.public_id} {self.area}/{self.path} ({self.state}, {self.offset}/{self.size})"
