"""Tenants, memberships and API tokens.

A user belongs to exactly one tenant (as PAI-EAS's Cluster Edition gives each member one
workspace); platform operators are Django staff and need no membership.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

from frontend.workspace.tab_ids import UnknownTab, hidden_tab_ids

# Usernames become folder names under DATA_DIR/users: keep them path-safe.
username_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
    "Use 1–64 letters, digits, '.', '_' or '-', starting with a letter or digit.",
)


def new_public_id() -> str:
    return secrets.token_urlsafe(12)


def validate_hidden_tabs(value: object) -> None:
    """A list of workspace tab ids that may be hidden (`frontend/workspace/tab_ids.py`)."""
    if not isinstance(value, list):
        raise ValidationError("expected a list of workspace tab ids")
    try:
        hidden_tab_ids(value)
    except UnknownTab as exc:
        raise ValidationError(str(exc)) from None


class Tenant(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    share_weight = models.FloatField(
        default=1.0, help_text="The tenant's weight in fair share (its plan's share of the GPUs)."
    )
    hidden_workspace_tabs = models.JSONField(
        default=list, blank=True, validators=[validate_hidden_tabs],
        help_text="Workspace tabs this tenant's members do not get (besides the platform's ATELIER_HIDDEN_TABS): "
        "they are not built and their functions are refused.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    class Role(models.TextChoices):
        ADMIN = "admin", "Tenant admin"
        MEMBER = "member", "Member"

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership")
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["tenant__slug", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} ({self.role})"


class ApiToken(models.Model):
    """A bearer token. Only its SHA-256 is stored; the token itself is shown once."""

    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, default="default")
    prefix = models.CharField(max_length=16, editable=False, help_text="First characters, to recognise a token.")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name}, {self.user})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class UsageRecord(models.Model):
    """GPU time one job used. Exactly one per job (the unique key makes recording idempotent);
    bills are queries over these rows, never a separate counter."""

    job = models.OneToOneField("inference.Job", on_delete=models.PROTECT, related_name="usage")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="usage_records")
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="usage_records")
    gpu_seconds = models.FloatField()
    images = models.PositiveIntegerField()
    texts = models.PositiveIntegerField(default=0, help_text="Prompts a promptgen job generated.")
    status = models.CharField(max_length=16)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.job_id}: {self.gpu_seconds:.1f} GPU-s"
