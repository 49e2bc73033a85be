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
    (`transitions._finish`) calls it right after its compare-and-set made this the job's ending.

    It carries what a bill and a quota read: the job's kind, checkpoint, measured GPU-seconds
    (a shared batch's time split by pixel-steps, `inference/runner/batch.py`), images kept,
    texts, pixel-steps (`inference.metering.job_pixel_steps`), the time it waited in the queue,
    its start and end, and the EAS service it came through (one indexed query on its input item)."""
    from inference.metering import job_pixel_steps

    ended = job.finished_at or timezone.now()
    started = job.started_at
    UsageRecord.objects.bulk_create(
        [UsageRecord(
            job=job, user_id=job.owner_id, tenant_id=job.tenant_id, kind=job.kind,
            service_name=_eas_service_name(job),
            checkpoint_title=job.checkpoint_title, checkpoint_sha256=job.checkpoint_sha256,
            gpu_seconds=job.gpu_seconds, images=len(job.outputs), texts=len(job.texts), status=job.status,
            pixel_steps=job_pixel_steps(job.kind, job.params),
            queue_wait_seconds=max(((started or ended) - job.created_at).total_seconds(), 0.0) if job.created_at else 0.0,
            started_at=started, ended_at=ended,
        )],
        ignore_conflicts=True,
    )


def _eas_service_name(job) -> str:
    """The EAS service whose input item `job` ran (the item names the job, or the job's group for a
    script's cells); "" for a job submitted any other way."""
    from django.db.models import Q

    from inference.eas.models import EasItem

    which = Q(job_id=job.pk)
    if job.group_id:
        which |= Q(job_group_id=job.group_id)
    name = EasItem.objects.filter(which, queue=EasItem.Queue.INPUT).values_list("service__name", flat=True).first()
    return name or ""


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
