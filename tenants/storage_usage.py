"""Storage quotas of the file areas: what a member and a team use, and the check an upload's start runs.

Keys (`tenants/limits.py` STORAGE_KEYS): `user_storage_bytes` against the bytes under the member's
working directory plus their unfinished uploads into it; `tenant_storage_bytes` against every
member's working directory, the team folder and the team's unfinished uploads into them. Usage is
measured by walking the folders at check time (no counter to drift; links are neither followed nor
counted). Members' files kept in object storage (`ATELIER_S3_BUCKET`) count too: the sizes of the
objects under the member's prefix (`users/<name>/`), and under the tenant's (`tenants/<slug>/`) for
the team: one listing each, at check time. Operators' uploads into the public
folders have no quota. A refusal is `StorageQuotaExceeded` (413, with the used and limit figures).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db.models import Sum

from a1111.errors import TooLarge
from tenants.files.objects import object_storage, prefix_bytes
from tenants.filespace import Area
from tenants.models import Membership, Tenant
from tenants.upload_models import FileUpload
from tenants.workdirs import user_workdir

_UNFINISHED = (FileUpload.State.OPEN, FileUpload.State.VERIFYING)


class StorageQuotaExceeded(TooLarge):
    """An upload that would take a member or a team past its storage limit (413)."""

    def __init__(self, message: str, *, key: str, used: int, limit: int) -> None:
        super().__init__(message, field="size")
        self.key, self.used, self.limit = key, used, limit


@dataclasses.dataclass(frozen=True)
class StorageUsage:
    """A member's storage used and their limit in force (None: none); the team's, when it has one."""

    used_bytes: int
    limit_bytes: int | None
    tenant_used_bytes: int | None = None
    tenant_limit_bytes: int | None = None

    def as_json(self) -> dict[str, int | None]:
        return {"used_bytes": self.used_bytes, "limit_bytes": self.limit_bytes,
                "tenant_used_bytes": self.tenant_used_bytes, "tenant_limit_bytes": self.tenant_limit_bytes}


def tree_bytes(root: Path) -> int:
    """The bytes of the regular files under `root` (links neither followed nor counted)."""
    total, folders = 0, [root]
    while folders:
        try:
            entries = os.scandir(folders.pop())
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue
    return total


def _open_bytes(uploads) -> int:
    return int(uploads.filter(state__in=_UNFINISHED).aggregate(total=Sum("size"))["total"] or 0)


def user_storage_used(user: AbstractUser) -> int:
    """The member's working directory plus their unfinished uploads into it."""
    home = user_workdir(user.get_username())
    stored = prefix_bytes(f"users/{home.name}/") if object_storage() is not None else 0
    return tree_bytes(home) + stored + _open_bytes(FileUpload.objects.filter(owner=user, area=Area.HOME))


def tenant_storage_used(tenant: Tenant) -> int:
    """Every member's working directory, the team folder, and the team's unfinished uploads into them."""
    usernames = Membership.objects.filter(tenant=tenant).values_list("user__username", flat=True)
    folders = [user_workdir(name) for name in usernames] + [settings.DATA_DIR / "tenants" / tenant.slug]
    pending = FileUpload.objects.filter(owner__membership__tenant=tenant, area__in=(Area.HOME, Area.TEAM))
    stored = prefix_bytes(f"tenants/{tenant.slug}/") if object_storage() is not None else 0
    return sum(tree_bytes(folder) for folder in folders) + stored + _open_bytes(pending)


def _limits(membership: Membership):
    from tenants.quotas import terms_for_membership

    return terms_for_membership(membership).limits


def _bound(value: float | None) -> int | None:
    return None if value is None else int(value)


def storage_usage(user: AbstractUser) -> StorageUsage:
    """What the FileBrowser shows: the member's use and limit (the team's only where it has a limit:
    measuring a whole team is a walk of every member's folder)."""
    membership = Membership.objects.select_related("tenant").filter(user=user).first()
    if membership is None:
        return StorageUsage(used_bytes=0, limit_bytes=None)
    limits = _limits(membership)
    tenant_limit = _bound(limits.get("tenant_storage_bytes"))
    return StorageUsage(
        used_bytes=user_storage_used(user), limit_bytes=_bound(limits.get("user_storage_bytes")),
        tenant_used_bytes=tenant_storage_used(membership.tenant) if tenant_limit is not None else None,
        tenant_limit_bytes=tenant_limit,
    )


def _refusal(key: str, who: str, used: int, limit: int, size: int) -> StorageQuotaExceeded:
    return StorageQuotaExceeded(
        f"storage limit reached ({key}): {who} {used:,} of {limit:,} bytes, and this upload needs {size:,} "
        f"more; delete files or ask {'an operator' if key.startswith('tenant_') else 'your team admin'} for more",
        key=key, used=used, limit=limit,
    )


def check_storage(user: AbstractUser, membership: Membership, area: Area, size: int) -> None:
    """Refuse (`StorageQuotaExceeded`) an upload of `size` bytes into `area` that would pass a limit in force;
    the caller holds the tenant's row lock, so two starts of one team are checked one after the other."""
    limits = _limits(membership)
    user_limit = _bound(limits.get("user_storage_bytes")) if area == Area.HOME else None
    if user_limit is not None:
        used = user_storage_used(user)
        if used + size > user_limit:
            raise _refusal("user_storage_bytes", "you use", used, user_limit, size)
    tenant_limit = _bound(limits.get("tenant_storage_bytes"))
    if tenant_limit is not None:
        used = tenant_storage_used(membership.tenant)
        if used + size > tenant_limit:
            raise _refusal("tenant_storage_bytes", "your team uses", used, tenant_limit, size)
