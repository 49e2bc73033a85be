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
from a1111.errors import Forbidden, InvalidField, NotFound
from a1111.styles import MAX_STYLE_NAME_CHARS
from tenants.models import ApiToken, Membership, PromptStyle, Tenant, UsageRecord, username_validator
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


def usage_record(*, job) -> None:
    """The one usage record of a finished job: one INSERT that a record already there leaves as it
    is (the unique key on `job`), so a second call changes nothing. The finish transaction
    (`transitions._finish`) calls it right after its compare-and-set made this the job's ending."""
    ended = job.finished_at or timezone.now()
    started = job.started_at
    UsageRecord.objects.bulk_create(
        [UsageRecord(
            job=job, user_id=job.owner_id, tenant_id=job.tenant_id, kind=job.kind,
            checkpoint_title=job.checkpoint_title, checkpoint_sha256=job.checkpoint_sha256,
            gpu_seconds=job.gpu_seconds, images=len(job.outputs), texts=len(job.texts), status=job.status,
            queue_wait_seconds=max(((started or ended) - job.created_at).total_seconds(), 0.0) if job.created_at else 0.0,
            started_at=started, ended_at=ended,
        )],
        ignore_conflicts=True,
    )


STYLE_TEXT_MAX = PromptStyle._meta.get_field("prompt").max_length


def _style_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise InvalidField("give the style a name", field="style_name")
    if len(name) > MAX_STYLE_NAME_CHARS:
        raise InvalidField(f"use at most {MAX_STYLE_NAME_CHARS} characters", field="style_name")
    if any(ord(char) < 32 for char in name):
        raise InvalidField("a style name is one line of text", field="style_name")
    return name


def prompt_style_save(*, user: AbstractUser, name: str, prompt: str, negative_prompt: str) -> PromptStyle:
    """Save the member's own style `name` (A1111's 💾: a style of the same name of theirs is
    replaced). A team or public style of that name stays as it is; theirs shadows it for them.
    `InvalidField` naming `style_name`, `prompt` or `negative_prompt`."""
    name = _style_name(name)
    for field_name, value in (("prompt", prompt), ("negative_prompt", negative_prompt)):
        if not isinstance(value, str):
            raise InvalidField("must be text", field=field_name)
        if len(value) > STYLE_TEXT_MAX:
            raise InvalidField(f"use at most {STYLE_TEXT_MAX} characters", field=field_name)
    if not (prompt.strip() or negative_prompt.strip()):
        raise InvalidField("write a prompt or a negative prompt to save as a style", field="prompt")
    style, _ = PromptStyle.objects.update_or_create(
        scope=PromptStyle.Scope.USER, owner=user, name=name,
        defaults={"prompt": prompt, "negative_prompt": negative_prompt},
    )
    return style


def prompt_style_delete(*, user: AbstractUser, name: str) -> None:
    """Delete the member's own style `name`. `Forbidden` for a team or public style they can see
    (operators manage those); `NotFound` for any other name (another member's style included: the
    same answer as for a name that does not exist)."""
    from tenants.selectors import prompt_style_own_get_for_user, prompt_styles_for_user

    style = prompt_style_own_get_for_user(user, (name or "").strip())
    if style is not None:
        style.delete()
        return
    if any(visible.name == name for visible in prompt_styles_for_user(user)):
        raise Forbidden(f"{name!r} is a team or public style: only your own styles can be deleted here "
                        "(operators manage the others)", field="style_name")
    raise NotFound(f"you have no style named {name!r}", field="style_name")


ADJUSTMENT_REASON_MAX = 2000


@transaction.atomic
def usage_adjust(*, actor: AbstractUser, tenant: Tenant, user: AbstractUser, gpu_seconds: float, images: int,
                 reason: str) -> UsageRecord:
    """A correction of `user`'s usage in `tenant`: a new `kind="adjustment"` record (no job; signed
    GPU-seconds and images; dated now, so it counts in the current period and is priced at the
    current price) and its `AuditEntry`, in one transaction. Records are never edited.
    `InvalidField` naming `reason`, `gpu_seconds`, `images` or `user`."""
    import math

    from tenants.audit import audit_record, snapshot

    reason = (reason or "").strip()
    if not reason:
        raise InvalidField("say why the usage is adjusted", field="reason")
    if len(reason) > ADJUSTMENT_REASON_MAX:
        raise InvalidField(f"use at most {ADJUSTMENT_REASON_MAX} characters", field="reason")
    try:
        gpu_seconds = float(gpu_seconds)
    except (TypeError, ValueError):
        raise InvalidField("must be a number of GPU-seconds (negative to take off)", field="gpu_seconds") from None
    if not math.isfinite(gpu_seconds) or abs(gpu_seconds) > 1e9:
        raise InvalidField("must be a finite number of GPU-seconds within ±1e9", field="gpu_seconds")
    if isinstance(images, bool) or not isinstance(images, int) or abs(images) > 10**9:
        raise InvalidField("must be a whole number of images within ±1e9", field="images")
    if gpu_seconds == 0 and images == 0:
        raise InvalidField("adjust the GPU-seconds, the images or both", field="gpu_seconds")
    if not (Membership.objects.filter(user=user, tenant=tenant).exists()
            or UsageRecord.objects.filter(user=user, tenant=tenant).exists()):
        raise InvalidField(f"{user.get_username()} is not a member of {tenant.slug}", field="user")
    record = UsageRecord.objects.create(
        user=user, tenant=tenant, kind=UsageRecord.ADJUSTMENT, gpu_seconds=gpu_seconds, images=images,
        status=UsageRecord.ADJUSTMENT, ended_at=timezone.now(), reason=reason, created_by=actor,
    )
    audit_record(
        actor=actor, action="usage.adjust", target=f"usage of {user.get_username()}", tenant=tenant,
        after=snapshot(record, ("pk", "kind", "gpu_seconds", "images", "ended_at")), reason=reason,
    )
    return record
