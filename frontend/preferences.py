"""The workspace's own models: member preferences, and the platform's extensions.

Imported by `frontend/models.py`, so Django registers them in the `frontend` app.

* `WorkspacePreferences`: one row per member: interface language and the generation
  defaults the workspace opens with (saved from the workspace's "Save as my defaults").
* `Extension`: an extension an operator installed for the whole platform (Django admin).
  Its `name` selects the code that implements it (`frontend/workspace/extensions.py`);
  a row whose name has no implementation is listed as unavailable.
* `ExtensionChoice`: a member's own on/off for one extension; without a row,
  `Extension.enabled_by_default` applies.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models


class Language(models.TextChoices):
    ENGLISH = "en", "English"
    JAPANESE = "ja", "日本語"


class WorkspacePreferences(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="workspace_preferences"
    )
    language = models.CharField(max_length=8, choices=Language.choices, default=Language.ENGLISH)
    generation_defaults = models.JSONField(
        default=dict, blank=True, help_text="Field values the workspace opens with (A1111 field names)."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "workspace preferences"
        verbose_name_plural = "workspace preferences"

    def __str__(self) -> str:
        return f"preferences of {self.user}"


extension_name_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9_-]{0,63}$", "Use 1–64 lower-case letters, digits, '_' or '-'."
)


class Extension(models.Model):
    name = models.CharField(max_length=64, unique=True, validators=[extension_name_validator])
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    enabled_by_default = models.BooleanField(
        default=False, help_text="On for every member who has not switched it off themselves."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ExtensionChoice(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="extension_choices")
    extension = models.ForeignKey(Extension, on_delete=models.CASCADE, related_name="choices")
    enabled = models.BooleanField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "extension"], name="one_choice_per_member_extension")]

    def __str__(self) -> str:
        return f"{self.extension} {'on' if self.enabled else 'off'} for {self.user}"
