"""Writes for tenants, members and API tokens, and the team administration (each audited)."""

from __future__ import annotations

import datetime as dt
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
from tenants.audit import audit_record, snapshot
from tenants.limits import MEMBER_KEYS, InvalidLimits, Limits
from tenants.models import (
    ApiToken,
    Invitation,
    Membership,
    ModelAccessRule,
    Plan,
    PromptStyle,
    Tenant,
    TenantPlan,
    UsageRecord,
    username_validator,
)
from tenants.money import InvalidPeriod, validate_time_zone
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
# --- team administration (issue 16): a tenant admin's writes on the Team page, an operator's onboarding ---
# Each checks that `actor` may do it (the tenant's admin, or a platform operator) and writes its
# `AuditEntry` (tenants/audit.py) in the same transaction, with the object before and after.
# Refusals are `a1111.errors` naming the form field at fault, so a page re-renders its form with it.

INVITATION_DAYS = 7
INVITATION_PREFIX = "inv_"
RULE_PATTERN_MAX = 200


def _may_administer(actor: AbstractUser, tenant: Tenant) -> None:
    """`Forbidden` unless `actor` is `tenant`'s admin or an active platform operator."""
    if actor is not None and actor.is_active and actor.is_staff:
        return
    if actor is None or not Membership.objects.filter(user=actor, tenant=tenant, role=Membership.Role.ADMIN).exists():
        raise Forbidden("only this team's admins may do this", field="")


def _member_of(tenant: Tenant, username: str, *, lock: bool = False) -> Membership:
    """The membership of `username` in `tenant`; `NotFound` (field "member") for anyone else."""
    memberships = Membership.objects.select_related("user", "tenant")
    if lock:
        memberships = memberships.select_for_update()
    membership = memberships.filter(tenant=tenant, user__username=username).first()
    if membership is None:
        raise NotFound(f"{username!r} is not a member of this team", field="member")
    return membership


def _one_line(value: object, *, field: str, max_chars: int, required: bool = True) -> str:
    if not isinstance(value, str):
        raise InvalidField("must be text", field=field)
    value = value.strip()
    if required and not value:
        raise InvalidField("this field is required", field=field)
    if len(value) > max_chars:
        raise InvalidField(f"use at most {max_chars} characters", field=field)
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise InvalidField("one line of text, without control characters", field=field)
    return value


def _role(value: object, *, field: str = "role") -> str:
    if value not in Membership.Role.values:
        raise InvalidField(f"choose one of {', '.join(Membership.Role.values)}", field=field)
    return str(value)


def _password(value: object, user: AbstractUser | None = None, *, field: str = "password") -> str:
    from django.contrib.auth.password_validation import validate_password

    if not isinstance(value, str) or not value:
        raise InvalidField("give a password", field=field)
    if "\x00" in value or len(value) > 256:
        raise InvalidField("use at most 256 characters, without NUL", field=field)
    try:
        validate_password(value, user)
    except ValidationError as exc:
        raise InvalidField(" ".join(exc.messages), field=field) from None
    return value


def _new_username(value: object) -> str:
    username = _one_line(value, field="username", max_chars=64)
    try:
        username_validator(username)
    except ValidationError as exc:
        raise InvalidField(" ".join(exc.messages), field="username") from None
    if get_user_model().objects.filter(username__iexact=username).exists():
        raise InvalidField(f"the username {username!r} is taken", field="username")
    return username


def _email(value: object, *, required: bool = False) -> str:
    from django.core.validators import validate_email

    email = _one_line(value if value is not None else "", field="email", max_chars=254, required=required)
    if email:
        try:
            validate_email(email)
        except ValidationError:
            raise InvalidField("not an email address", field="email") from None
    return email


def _member_snapshot(membership: Membership) -> dict:
    return {"username": membership.user.get_username(), "email": membership.user.email,
            "role": membership.role, "limits": membership.limits or {}}


def _admins_left_after(tenant: Tenant, leaving: Membership) -> int:
    admins = Membership.objects.select_for_update().filter(tenant=tenant, role=Membership.Role.ADMIN)
    return sum(1 for admin in admins if admin.pk != leaving.pk)


def plan_limits_for_tenant(tenant: Tenant) -> Limits:
    """The limits of the plan `tenant` is on now (none: no limits)."""
    from tenants.selectors import plan_for_tenant

    plan = plan_for_tenant(tenant)
    return Limits.from_json(plan.limits) if plan is not None else Limits({})


@transaction.atomic
def invitation_create(*, actor: AbstractUser, tenant: Tenant, username: str) -> tuple[Invitation, str]:
    """A link for member `username` to set their password, valid once for `INVITATION_DAYS` days.
    The raw token is returned once; only its SHA-256 is stored."""
    _may_administer(actor, tenant)
    membership = _member_of(tenant, username)
    raw = INVITATION_PREFIX + secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        tenant=tenant, user=membership.user, digest=token_digest(raw), created_by=actor,
        expires_at=timezone.now() + dt.timedelta(days=INVITATION_DAYS),
    )
    audit_record(actor=actor, tenant=tenant, action="invitation.create", target=f"member {username}",
                 after=snapshot(invitation, ("public_id", "expires_at")))
    return invitation, raw


def invitation_open(raw_token: str) -> Invitation | None:
    """The invitation `raw_token` opens: not accepted, not expired, its member still in its team."""
    if not isinstance(raw_token, str) or not raw_token.startswith(INVITATION_PREFIX) or len(raw_token) > 100:
        return None
    invitation = (Invitation.objects.select_related("user", "tenant")
                  .filter(digest=token_digest(raw_token), accepted_at__isnull=True, expires_at__gt=timezone.now(),
                          user__is_active=True).first())
    if invitation is None or not Membership.objects.filter(user=invitation.user, tenant=invitation.tenant).exists():
        return None
    return invitation


@transaction.atomic
def invitation_accept(*, raw_token: str, password: str) -> AbstractUser:
    """Set the invited member's password (once). `NotFound` (field "token") for an unknown, used
    or expired link; `InvalidField` (field "password") for a password the validators refuse."""
    invitation = invitation_open(raw_token)
    if invitation is None:
        raise NotFound("this invitation link is unknown, used or expired", field="token")
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.accepted_at is not None:
        raise NotFound("this invitation link is unknown, used or expired", field="token")
    user = invitation.user
    user.set_password(_password(password, user))
    user.save(update_fields=["password"])
    invitation.accepted_at = timezone.now()
    invitation.save(update_fields=["accepted_at"])
    audit_record(actor=user, tenant=invitation.tenant, action="invitation.accept",
                 target=f"member {user.get_username()}", after={"accepted_at": invitation.accepted_at.isoformat()})
    return user


@transaction.atomic
def member_add(
    *, actor: AbstractUser, tenant: Tenant, username: str, email: str = "", role: str = Membership.Role.MEMBER,
    password: str = "", invite: bool = False,
) -> tuple[AbstractUser, str | None]:
    """Add a new account to the team: with an initial `password`, or (`invite`) an unusable one and an
    invitation link, whose raw token is returned (once; None with a password)."""
    _may_administer(actor, tenant)
    username = _new_username(username)
    email = _email(email)
    role = _role(role)
    if not invite:
        password = _password(password, get_user_model()(username=username, email=email))
    user = member_create(tenant=tenant, username=username, password=None if invite else password, role=role,
                         email=email)
    audit_record(actor=actor, tenant=tenant, action="member.add", target=f"member {username}",
                 after={**_member_snapshot(user.membership), "invited": bool(invite)})
    raw = None
    if invite:
        _, raw = invitation_create(actor=actor, tenant=tenant, username=username)
    return user, raw


@transaction.atomic
def member_remove(*, actor: AbstractUser, tenant: Tenant, username: str) -> None:
    """Take `username` off the team: their membership goes, their account is deactivated and their API
    tokens and open invitations revoked. Their jobs and usage records stay (they still count in bills).
    `Forbidden` for removing oneself or the team's last admin."""
    _may_administer(actor, tenant)
    membership = _member_of(tenant, username, lock=True)
    if actor is not None and membership.user_id == actor.pk:
        raise Forbidden("you cannot remove yourself; ask another admin of the team", field="member")
    if membership.role == Membership.Role.ADMIN and _admins_left_after(tenant, membership) == 0:
        raise Forbidden("the team's last admin cannot be removed", field="member")
    before = _member_snapshot(membership)
    user = membership.user
    now = timezone.now()
    revoked = ApiToken.objects.filter(user=user, revoked_at__isnull=True).update(revoked_at=now)
    Invitation.objects.filter(user=user, accepted_at__isnull=True).update(expires_at=now)
    membership.delete()
    user.is_active = False
    user.save(update_fields=["is_active"])
    audit_record(actor=actor, tenant=tenant, action="member.remove", target=f"member {username}",
                 before=before, after={"is_active": False, "tokens_revoked": revoked})


@transaction.atomic
def member_role_set(*, actor: AbstractUser, tenant: Tenant, username: str, role: str) -> Membership:
    """Make `username` an admin or a member. `Forbidden` (field "role") for demoting the last admin."""
    _may_administer(actor, tenant)
    role = _role(role)
    membership = _member_of(tenant, username, lock=True)
    if membership.role == role:
        return membership
    if membership.role == Membership.Role.ADMIN and _admins_left_after(tenant, membership) == 0:
        raise Forbidden("the team's last admin cannot be made a member; make another member an admin first",
                        field="role")
    before = {"role": membership.role}
    membership.role = role
    membership.save(update_fields=["role"])
    audit_record(actor=actor, tenant=tenant, action="member.role", target=f"member {username}",
                 before=before, after={"role": role})
    return membership


@transaction.atomic
def member_limits_set(*, actor: AbstractUser, tenant: Tenant, username: str, limits: object) -> Membership:
    """Replace `username`'s own limits (keys of `tenants.limits.MEMBER_KEYS`; a blank one: the plan's).
    `InvalidField` naming the key that is malformed or above the tenant's plan."""
    _may_administer(actor, tenant)
    membership = _member_of(tenant, username, lock=True)
    try:
        parsed = Limits.from_json(limits, allowed=MEMBER_KEYS)
        parsed.check_within(plan_limits_for_tenant(tenant))
    except InvalidLimits as exc:
        raise InvalidField(str(exc), field=exc.key or "limits") from None
    before = {"limits": membership.limits or {}}
    membership.limits = parsed.to_json()
    membership.save(update_fields=["limits"])
    if before["limits"] != membership.limits:
        audit_record(actor=actor, tenant=tenant, action="limits.set", target=f"member {username}",
                     before=before, after={"limits": membership.limits})
    return membership


_RULE_FIELDS = ("public_id", "user", "role", "kind", "pattern", "effect")


@transaction.atomic
def model_rule_add(
    *, actor: AbstractUser, tenant: Tenant, kind: str, pattern: str, effect: str,
    username: str = "", role: str = "",
) -> ModelAccessRule:
    """Allow or deny checkpoints or LoRAs matching `pattern` (fnmatch) for one member (`username`)
    or for every member of a `role` (exactly one of the two). `tenants/access.py` evaluates them."""
    _may_administer(actor, tenant)
    if bool(username) == bool(role):
        raise InvalidField("name one member or one role", field="member" if not role else "role")
    user = _member_of(tenant, username).user if username else None
    role = _role(role) if role else ""
    if kind not in ModelAccessRule.Kind.values:
        raise InvalidField(f"choose one of {', '.join(ModelAccessRule.Kind.values)}", field="kind")
    if effect not in ModelAccessRule.Effect.values:
        raise InvalidField(f"choose one of {', '.join(ModelAccessRule.Effect.values)}", field="effect")
    pattern = _one_line(pattern, field="pattern", max_chars=RULE_PATTERN_MAX)
    rule = ModelAccessRule.objects.create(tenant=tenant, user=user, role=role, kind=kind, pattern=pattern,
                                          effect=effect)
    who = f"member {username}" if username else f"role {role}"
    audit_record(actor=actor, tenant=tenant, action="model_rule.add", target=f"{kind} rule {pattern!r} for {who}",
                 after=snapshot(rule, _RULE_FIELDS))
    return rule


@transaction.atomic
def model_rule_delete(*, actor: AbstractUser, rule: ModelAccessRule) -> None:
    _may_administer(actor, rule.tenant)
    before = snapshot(rule, _RULE_FIELDS)
    who = f"member {rule.user.get_username()}" if rule.user_id else f"role {rule.role}"
    rule.delete()
    audit_record(actor=actor, tenant=rule.tenant, action="model_rule.delete",
                 target=f"{rule.kind} rule {rule.pattern!r} for {who}", before=before)


_TOKEN_FIELDS = ("public_id", "name", "prefix", "user", "revoked_at")


@transaction.atomic
def token_create_for_member(*, actor: AbstractUser, tenant: Tenant, username: str, name: str) -> tuple[ApiToken, str]:
    """An API token of member `username`, made by their admin; the raw token is returned once."""
    _may_administer(actor, tenant)
    user = _member_of(tenant, username).user
    try:
        token, raw = token_create(user=user, name=name if isinstance(name, str) else "")
    except ValidationError as exc:
        raise InvalidField(" ".join(exc.messages), field="name") from None
    audit_record(actor=actor, tenant=tenant, action="token.create", target=f"token {token.prefix}… of {username}",
                 after=snapshot(token, _TOKEN_FIELDS))
    return token, raw


@transaction.atomic
def token_revoke_for_member(*, actor: AbstractUser, token: ApiToken) -> None:
    """Revoke a team member's token (again: nothing changes, nothing is logged)."""
    membership = Membership.objects.select_related("tenant").filter(user=token.user).first()
    if membership is None:
        raise NotFound("no such token", field="token")
    _may_administer(actor, membership.tenant)
    if token.revoked_at is not None:
        return
    before = snapshot(token, _TOKEN_FIELDS)
    token_revoke(token=token)
    audit_record(actor=actor, tenant=membership.tenant, action="token.revoke",
                 target=f"token {token.prefix}… of {token.user.get_username()}", before=before,
                 after=snapshot(token, _TOKEN_FIELDS))


@transaction.atomic
def tenant_onboard(
    *, actor: AbstractUser, slug: str, name: str, time_zone: str, plan: Plan | None,
    admin_username: str, admin_email: str, admin_password: str, with_token: bool = False,
) -> tuple[Tenant, AbstractUser, str | None]:
    """An operator's one form: a new tenant on `plan` from now, its first admin with an initial
    password and, optionally, an API token for them (the raw token returned once). All or nothing,
    with one audit entry. `InvalidField` naming the field at fault."""
    if actor is None or not (actor.is_active and actor.is_staff):
        raise Forbidden("only platform operators onboard tenants")
    slug = _one_line(slug, field="slug", max_chars=64)
    try:
        Tenant._meta.get_field("slug").run_validators(slug)
    except ValidationError as exc:
        raise InvalidField(" ".join(exc.messages), field="slug") from None
    if Tenant.objects.filter(slug__iexact=slug).exists():
        raise InvalidField(f"a tenant {slug!r} exists", field="slug")
    name = _one_line(name or slug, field="name", max_chars=200)
    try:
        validate_time_zone(time_zone)
    except InvalidPeriod as exc:
        raise InvalidField(str(exc), field="time_zone") from None
    try:
        username = _new_username(admin_username)
        email = _email(admin_email)
    except InvalidField as exc:
        raise InvalidField(exc.message, field=f"admin_{exc.field}") from None
    password = _password(admin_password, get_user_model()(username=username, email=email), field="admin_password")
    tenant = Tenant.objects.create(slug=slug, name=name, time_zone=time_zone)
    if plan is not None:
        TenantPlan.objects.create(tenant=tenant, plan=plan, effective_from=timezone.now())
    user = member_create(tenant=tenant, username=username, password=password, role=Membership.Role.ADMIN, email=email)
    raw = token_create(user=user, name="onboarding")[1] if with_token else None
    audit_record(actor=actor, tenant=tenant, action="tenant.onboard", target=f"tenant {slug}",
                 after={**snapshot(tenant, ("slug", "name", "time_zone")), "plan": plan.slug if plan else None,
                        "admin": username, "token": bool(with_token)})
    return tenant, user, raw
