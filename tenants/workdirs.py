"""Where each user's, each tenant's and the public model folders and outputs live on disk.

    DATA_DIR/public/models/<kind>/          shared by everyone (each kind overridable in settings)
    DATA_DIR/tenants/<tenant>/models/<kind>/ shared by one team
    DATA_DIR/users/<user>/models/<kind>/     private to one member
    DATA_DIR/users/<user>/outputs/           the member's generated images
    DATA_DIR/users/<user>/inputs/            img2img init images and masks they sent
    DATA_DIR/users/<user>/<save_dir>/        images of requests with PAI's `save_dir`
"""

from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,149}$")


def _safe(name: str) -> str:
    """Refuse a name that is not a plain folder name ('..', '/', empty)."""
    if not _SAFE_NAME.match(name) or ".." in name:
        raise ValueError(f"{name!r} cannot be used as a folder name")
    return name


def user_workdir(username: str) -> Path:
    return settings.DATA_DIR / "users" / _safe(username)


def user_model_dir(username: str, kind: str) -> Path:
    return user_workdir(username) / "models" / kind


def user_outputs_key(username: str) -> str:
    """The storage key prefix of a user's outputs (relative to the default storage)."""
    return f"users/{_safe(username)}/outputs"


def user_inputs_key(username: str) -> str:
    """The storage key prefix of the init images and masks a user sent."""
    return f"users/{_safe(username)}/inputs"


def user_save_dir_key(username: str, save_dir: str) -> str:
    """The storage key prefix of a validated (relative, normalised) PAI `save_dir`."""
    return f"users/{_safe(username)}/{save_dir}"


def tenant_model_dir(tenant_slug: str, kind: str) -> Path:
    return settings.DATA_DIR / "tenants" / _safe(tenant_slug) / "models" / kind


def public_model_dir(kind: str) -> Path:
    return settings.ATELIER_PUBLIC_MODEL_DIRS[kind]


def workdir_ensure(*, username: str, tenant_slug: str | None) -> Path:
    """Create a member's working directory (idempotent) and return it."""
    for kind in settings.ATELIER_MODEL_KINDS:
        user_model_dir(username, kind).mkdir(parents=True, exist_ok=True)
        if tenant_slug:
            tenant_model_dir(tenant_slug, kind).mkdir(parents=True, exist_ok=True)
        public_model_dir(kind).mkdir(parents=True, exist_ok=True)
    (user_workdir(username) / "outputs").mkdir(parents=True, exist_ok=True)
    return user_workdir(username)
