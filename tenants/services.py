"""Writes for tenants, members and API tokens."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from frontend.workspace.tab_ids import UnknownTab, hidden_tab_ids
from tenants.models import ApiToken, Membership, Tenant, UsageRecord, username_validator
from tenants.workdirs import workdir_ensure

TOKEN_PREFIX = "atl_"
TOKEN_NAME_MAX = ApiToken._meta.get_field("name").max_length


def token_digest(raw_token: str) -> str:
    # Tokens carry 256 bits of randomness, so a plain SHA-256 is as strong as a slow hash.
    return hashlib.sha256(raw_token.encode()).hexdigest()


def tenant_create(*, slug: str, name: str = "") -> Tenant:
    tenant, _ = Tenant.objects.get_or_create(slug=slug, defaults={"name": name or slug})
    return tenant


@transaction.atomic
def tenant_hidden_tabs_set(*, tenant: Tenant, tabs: Iterable[str]) -> Tenant:
    """Hide these workspace tabs for the tenant's members (replacing the list; empty: none).
    `ValidationError` naming the unknown tab (`frontend/workspace/tab_ids.py` has the ids)."""
    try:
        tenant.hidden_workspace_tabs = list(hidden_tab_ids(tabs))
    except UnknownTab as exc:
        raise ValidationError({"hidden_workspace_tabs": str(exc)}) from None
    tenant.save(update_fields=["hidden_workspace_tabs"])
    return tenant


def member_create(
    *,
    tenant: Tenant,
    username: str,
    password: str | None = None,
    role: str = Membership.Role.MEMBER,
    email: str = "",
) -> AbstractUser:
    """Create a user in a tenant with their working directory. Idempotent for the same tenant."""
    username_validator(username)
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username=username, defaults={"email": email})
    if password is not None:
        user.set_password(password)
        user.save(update_fields=["password"])
    elif created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    membership = Membership.objects.filter(user=user).first()
    if membership is None:
        Membership.objects.create(user=user, tenant=tenant, role=role)
    elif membership.tenant_id != tenant.pk:
        raise ValidationError(f"{username} already belongs to tenant {membership.tenant.slug}")
    elif membership.role != role:
        membership.role = role
        membership.save(update_fields=["role"])
    workdir_ensure(username=username, tenant_slug=tenant.slug)  # idempotent mkdirs
    return user


def operator_create(*, username: str, password: str, email: str = "") -> AbstractUser:
    """A platform operator: Django staff and superuser, no tenant."""
    username_validator(username)
    user, _ = get_user_model().objects.get_or_create(username=username, defaults={"email": email})
    user.is_staff = True
    user.is_superuser = True
    user.set_password(password)
    user.save()
    return user


def token_create(*, user: AbstractUser, name: str = "default") -> tuple[ApiToken, str]:
    """Issue a token. The raw token is returned once and never stored.

    `name` (stripped) must be 1 to `TOKEN_NAME_MAX` characters: `ValidationError` on "name" otherwise.
    """
    name = name.strip()
    if not name:
        raise ValidationError({"name": "give the token a name (what it is for, e.g. 'laptop' or 'ci')"})
    if len(name) > TOKEN_NAME_MAX:
        raise ValidationError({"name": f"use at most {TOKEN_NAME_MAX} characters"})
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name, prefix=raw[:12], digest=token_digest(raw))
    return token, raw


def token_revoke(*, token: ApiToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])


def usage_record(*, job) -> UsageRecord:
    """The one usage record of a finished job (idempotent: a second call returns the first)."""
    record, _ = UsageRecord.objects.get_or_create(
        job=job,
        defaults={
            "user_id": job.owner_id,
            "tenant_id": job.tenant_id,
            "gpu_seconds": job.gpu_seconds,
            "images": len(job.outputs),
            "texts": len(job.texts),
            "status": job.status,
        },
    )
    return record
