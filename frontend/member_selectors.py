"""Reads for the workspace and the home page: a member's preferences, extensions and images.

Every read here is scoped to the member passed in; nothing returns another member's rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractUser

from frontend.preferences import Extension, ExtensionChoice, Language, WorkspacePreferences
from frontend.workspace.tab_ids import HIDEABLE_TABS
from inference.limits import generation_limits
from inference.models import Job
from tenants.models import Tenant

# What the workspace opens with when the member saved nothing (A1111's UI defaults, not its API's).
GENERATION_DEFAULTS: dict[str, Any] = {
    "prompt": "",
    "negative_prompt": "",
    "sampler_name": "Euler a",
    "scheduler": "Automatic",
    "steps": 20,
    "cfg_scale": 7.0,
    "width": 512,
    "height": 512,
    "seed": -1,
    "n_iter": 1,
    "batch_size": 1,
    "checkpoint": None,
    "vae": "Automatic",
    "denoising_strength": 0.75,
    "styles": [],
    "tiling": False,
    "restore_faces": False,
}


def language_for_user(user: AbstractUser) -> str:
    language = WorkspacePreferences.objects.filter(user=user).values_list("language", flat=True).first()
    return language if language in Language.values else Language.ENGLISH


def generation_defaults_for_user(user: AbstractUser) -> dict[str, Any]:
    """The built-in defaults, overlaid with what the member saved (unknown keys dropped)."""
    stored = WorkspacePreferences.objects.filter(user=user).values_list("generation_defaults", flat=True).first() or {}
    defaults = {**GENERATION_DEFAULTS, **{k: v for k, v in stored.items() if k in GENERATION_DEFAULTS}}
    # within this deployment's limits (they may have been lowered since the member saved)
    limits = generation_limits()
    for name, lo, hi in (("steps", 1, limits.max_steps), ("width", limits.min_size, limits.max_size),
                         ("height", limits.min_size, limits.max_size), ("n_iter", 1, limits.max_n_iter),
                         ("batch_size", 1, limits.max_batch_size)):
        if isinstance(defaults.get(name), (int, float)):
            defaults[name] = min(max(defaults[name], lo), hi)
    return defaults


def hidden_tabs_for_user(user: AbstractUser) -> frozenset[str]:
    """The workspace tabs this member does not get: the platform's `ATELIER_HIDDEN_TABS` and
    their tenant's `hidden_workspace_tabs`. Read on every call (a workspace checks it before each
    of a tab's functions runs), so an operator's change applies to workspaces already running."""
    hidden = set(settings.ATELIER_HIDDEN_TABS)
    stored = Tenant.objects.filter(memberships__user=user).values_list("hidden_workspace_tabs", flat=True).first()
    if isinstance(stored, list):
        hidden.update(tab for tab in stored if tab in HIDEABLE_TABS)  # an id a later version dropped: ignored
    return frozenset(hidden)


@dataclass(frozen=True)
class ExtensionState:
    name: str
    title: str
    description: str
    enabled: bool  # the member's choice, else the operator's default
    available: bool  # this platform has code for it (frontend/workspace/extensions.py)


def extensions_for_user(user: AbstractUser) -> list[ExtensionState]:
    from frontend.workspace.extensions import BUILTIN_EXTENSIONS

    choices = dict(ExtensionChoice.objects.filter(user=user).values_list("extension_id", "enabled"))
    return [
        ExtensionState(
            name=extension.name,
            title=extension.title,
            description=extension.description,
            enabled=choices.get(extension.pk, extension.enabled_by_default),
            available=extension.name in BUILTIN_EXTENSIONS,
        )
        for extension in Extension.objects.order_by("name")
    ]


def extension_enabled_for_user(user: AbstractUser, name: str) -> bool:
    return any(e.name == name and e.enabled and e.available for e in extensions_for_user(user))


def promptgen_history_for_user(user: AbstractUser, limit: int = 20) -> list[Job]:
    """The member's own finished prompt expansions with results, newest first (never a teammate's:
    a tenant admin's history is their own too)."""
    jobs = Job.objects.filter(owner=user, kind=Job.Kind.PROMPTGEN, status=Job.Status.SUCCEEDED)
    return list(jobs.order_by("-created_at").only("public_id", "params", "texts", "created_at", "kind")[:limit])


@dataclass(frozen=True)
class GalleryImage:
    job_id: str
    index: int
    storage_key: str
    infotext: str
    prompt: str
    created_at: Any


def gallery_for_user(user: AbstractUser, limit: int = 60) -> list[GalleryImage]:
    """The member's own finished images, newest first. Owner only: a tenant admin's gallery
    holds their own images, not their team's (they see those in administration)."""
    images: list[GalleryImage] = []
    jobs = Job.objects.filter(owner=user, status=Job.Status.SUCCEEDED).order_by("-finished_at", "-created_at")
    for job in jobs.only("public_id", "outputs", "infotexts", "params", "created_at")[:limit]:
        for index, key in enumerate(job.outputs):
            infotext = job.infotexts[index] if index < len(job.infotexts) else ""
            images.append(GalleryImage(job.public_id, index, key, infotext, job.params.get("prompt", ""), job.created_at))
            if len(images) >= limit:
                return images
    return images
