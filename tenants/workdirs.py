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


PRIVATE_FOLDER_MODE = 0o700  # a member's working directory: owner only


def _private_mkdir(root: Path, folder: Path) -> None:
    """Create `folder` and any missing parents below `root` owner-only (`mkdir -p -m 700` for each)."""
    root.mkdir(mode=PRIVATE_FOLDER_MODE, parents=True, exist_ok=True)
    current = root
    for part in folder.relative_to(root).parts:
        current = current / part
        current.mkdir(mode=PRIVATE_FOLDER_MODE, exist_ok=True)


def workdir_ensure(*, username: str, tenant_slug: str | None) -> Path:
    """Create a member's working directory (idempotent, owner-only: 0700) and return it.

    The directory itself is set to 0700 even when it exists (made before this rule), so no other
    account on the host can enter it; the folders in it are created 0700 too.
    """
    workdir = user_workdir(username)
    for kind in settings.ATELIER_MODEL_KINDS:
        _private_mkdir(workdir, user_model_dir(username, kind))
        if tenant_slug:
            tenant_model_dir(tenant_slug, kind).mkdir(parents=True, exist_ok=True)
        public_model_dir(kind).mkdir(parents=True, exist_ok=True)
    _private_mkdir(workdir, workdir / "outputs")
    workdir.chmod(PRIVATE_FOLDER_MODE)
    return workdir
