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


class PromptStyle(models.Model):
    """A saved prompt style (A1111's Styles, `a1111/styles.py` merges them): public (every member,
    managed by operators), a team's (a tenant's members, managed by operators in admin) or one
    member's own (saved from the workspace's 💾). A name is unique within its scope; where names
    clash, the most personal one is the one a member sees and uses (own, then team, then public:
    `tenants.selectors.prompt_styles_for_user`)."""

    class Scope(models.TextChoices):
        PUBLIC = "public", "Public"
        TENANT = "tenant", "Team"
        USER = "user", "Member's own"

    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    name = models.CharField(max_length=100)
    prompt = models.TextField(blank=True, max_length=10_000, help_text="`{prompt}` marks where the member's prompt goes; "
                              "without it the style is appended after ', '.")
    negative_prompt = models.TextField(blank=True, max_length=10_000)
    scope = models.CharField(max_length=16, choices=Scope.choices, default=Scope.PUBLIC)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, null=True, blank=True, related_name="prompt_styles",
                               help_text="For a team style only.")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True,
                              related_name="prompt_styles", help_text="For a member's own style only.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["scope", "name"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(scope="public", tenant__isnull=True, owner__isnull=True)
                    | models.Q(scope="tenant", tenant__isnull=False, owner__isnull=True)
                    | models.Q(scope="user", tenant__isnull=True, owner__isnull=False)
                ),
                name="prompt_style_scope_matches_its_owner",
            ),
            models.UniqueConstraint(fields=["name"], condition=models.Q(scope="public"), name="prompt_style_public_name"),
            models.UniqueConstraint(fields=["tenant", "name"], condition=models.Q(scope="tenant"),
                                    name="prompt_style_tenant_name"),
            models.UniqueConstraint(fields=["owner", "name"], condition=models.Q(scope="user"),
                                    name="prompt_style_owner_name"),
        ]

    def __str__(self) -> str:
        where = {"tenant": f" ({self.tenant})", "user": f" ({self.owner})"}.get(self.scope, "")
        return f"{self.name}{where}"

    def clean(self) -> None:
        errors = {}
        if self.scope == self.Scope.TENANT and self.tenant_id is None:
            errors["tenant"] = "a team style needs its tenant"
        if self.scope != self.Scope.TENANT and self.tenant_id is not None:
            errors["tenant"] = "only a team style has a tenant"
        if self.scope == self.Scope.USER and self.owner_id is None:
            errors["owner"] = "a member's style needs its owner"
        if self.scope != self.Scope.USER and self.owner_id is not None:
            errors["owner"] = "only a member's own style has an owner"
        if not self.name.strip():
            errors["name"] = "give the style a name"
        if errors:
            raise ValidationError(errors)
