"""Writes for the workspace and the home page: a member's language, defaults and extensions."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractUser

from frontend.member_selectors import GENERATION_DEFAULTS
from frontend.preferences import Extension, ExtensionChoice, Language, WorkspacePreferences


class UnknownExtension(LookupError):
    pass


def language_set(*, user: AbstractUser, language: str) -> str:
    if language not in Language.values:
        raise ValueError(f"unknown language {language!r}; choose one of {', '.join(Language.values)}")
    preferences, _ = WorkspacePreferences.objects.get_or_create(user=user)
    preferences.language = language
    preferences.save(update_fields=["language", "updated_at"])
    return language


def generation_defaults_save(*, user: AbstractUser, values: dict[str, Any]) -> dict[str, Any]:
    """Store the member's defaults; keys the workspace does not know are dropped."""
    known = {key: value for key, value in values.items() if key in GENERATION_DEFAULTS}
    preferences, _ = WorkspacePreferences.objects.get_or_create(user=user)
    preferences.generation_defaults = {**preferences.generation_defaults, **known}
    preferences.save(update_fields=["generation_defaults", "updated_at"])
    return preferences.generation_defaults


def extension_set_enabled(*, user: AbstractUser, name: str, enabled: bool) -> None:
    extension = Extension.objects.filter(name=name).first()
    if extension is None:
        raise UnknownExtension(f"no extension {name!r} is installed on this platform")
    ExtensionChoice.objects.update_or_create(user=user, extension=extension, defaults={"enabled": enabled})


def extensions_set_enabled(*, user: AbstractUser, enabled_names: list[str]) -> None:
    """Enable exactly `enabled_names` for the member; every other installed extension off."""
    wanted = set(enabled_names)
    unknown = wanted - set(Extension.objects.values_list("name", flat=True))
    if unknown:
        raise UnknownExtension(f"no extension {sorted(unknown)[0]!r} is installed on this platform")
    for extension in Extension.objects.all():
        ExtensionChoice.objects.update_or_create(
            user=user, extension=extension, defaults={"enabled": extension.name in wanted}
        )
