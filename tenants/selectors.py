"""Reads for tenants, members and API tokens."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.models import AbstractUser
from django.db.models import Q
from django.http import Http404
from django.utils import timezone

from a1111.styles import StyleText
from tenants.models import ApiToken, Membership, PromptStyle, Tenant, UsageRecord
from tenants.money import validate_time_zone
from tenants.services import token_digest

_LAST_USED_RESOLUTION = timedelta(minutes=1)


def token_user(raw_token: str) -> AbstractUser | None:
    """The active user an API token belongs to, or None for an unknown or revoked token."""
    if not raw_token:
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(digest=token_digest(raw_token), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > _LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user


def api_tokens_for_user(user: AbstractUser) -> list[ApiToken]:
    """The caller's own API tokens, newest first, revoked ones included (the tokens page lists them)."""
    return list(ApiToken.objects.filter(user=user).order_by("-created_at", "-pk"))


def api_token_get_for_user(user: AbstractUser, public_id: str) -> ApiToken:
    """`user`'s own token `public_id`; `Http404` for anyone else's (a tenant admin's included) or none."""
    token = ApiToken.objects.filter(user=user, public_id=public_id).first()
    if token is None:
        raise Http404("no such token")
    return token


def membership_for_user(user: AbstractUser) -> Membership | None:
    return Membership.objects.select_related("tenant").filter(user=user).first()


def tenant_for_user(user: AbstractUser) -> Tenant | None:
    membership = membership_for_user(user)
    return membership.tenant if membership else None


def is_tenant_admin(user: AbstractUser, tenant: Tenant) -> bool:
    return Membership.objects.filter(user=user, tenant=tenant, role=Membership.Role.ADMIN).exists()


def _this_month(tenant: Tenant | None) -> tuple:
    """This month's bounds in the tenant's time zone (UTC without a tenant): what bills count."""
    from tenants.money import month_bounds

    zone = tenant.time_zone if tenant else "UTC"
    now = timezone.localtime(timezone.now(), validate_time_zone(zone))
    return month_bounds(f"{now.year:04d}-{now.month:02d}", zone)


def usage_this_month(user: AbstractUser) -> list[UsageRecord]:
    """The member's usage records (adjustments included) of this month in their tenant's time zone,
    by end time: the records their bill counts."""
    start, end = _this_month(tenant_for_user(user))
    return list(UsageRecord.objects.filter(user=user, ended_at__gte=start, ended_at__lt=end).select_related("job"))


def tenant_usage_this_month(tenant: Tenant) -> list[dict]:
    """Per member of `tenant`: images, GPU-seconds and jobs billed this month (every member, zeros included)."""
    from django.db.models import Count, Sum

    start, end = _this_month(tenant)
    totals = {
        row["user"]: row
        for row in UsageRecord.objects.filter(tenant=tenant, ended_at__gte=start, ended_at__lt=end)
        .values("user")
        .annotate(images=Sum("images"), gpu_seconds=Sum("gpu_seconds"), jobs=Count("job"))
    }
    return [
        {
            "username": m.user.get_username(),
            "role": m.get_role_display(),
            "images": totals.get(m.user_id, {}).get("images") or 0,
            "gpu_seconds": totals.get(m.user_id, {}).get("gpu_seconds") or 0.0,
            "jobs": totals.get(m.user_id, {}).get("jobs") or 0,
        }
        for m in Membership.objects.filter(tenant=tenant).select_related("user").order_by("user__username")
    ]


_STYLE_PRECEDENCE = {PromptStyle.Scope.USER: 0, PromptStyle.Scope.TENANT: 1, PromptStyle.Scope.PUBLIC: 2}


def prompt_styles_for_user(user: AbstractUser) -> list[PromptStyle]:
    """The styles `user` may use, one per name, sorted by name: their own, their team's and the
    public ones. Where names clash the most personal wins (own, then team, then public): a member
    who saves "Cinematic" gets theirs, and a team's "Cinematic" hides the public one. Never another
    member's or another team's styles."""
    tenant = tenant_for_user(user)
    visible = Q(scope=PromptStyle.Scope.PUBLIC) | Q(scope=PromptStyle.Scope.USER, owner=user)
    if tenant is not None:
        visible |= Q(scope=PromptStyle.Scope.TENANT, tenant=tenant)
    chosen: dict[str, PromptStyle] = {}
    for style in sorted(PromptStyle.objects.filter(visible), key=lambda s: _STYLE_PRECEDENCE[s.scope]):
        chosen.setdefault(style.name, style)
    return [chosen[name] for name in sorted(chosen, key=str.casefold)]


def prompt_style_texts_for_user(user: AbstractUser) -> dict[str, StyleText]:
    """`prompt_styles_for_user` as the pure merge takes them (`a1111.styles.apply_styles`)."""
    return {
        style.name: StyleText(style.name, style.prompt, style.negative_prompt)
        for style in prompt_styles_for_user(user)
    }


def prompt_style_own_get_for_user(user: AbstractUser, name: str) -> PromptStyle | None:
    """`user`'s own style `name`, or None (a team or public style of that name is not theirs)."""
    return PromptStyle.objects.filter(scope=PromptStyle.Scope.USER, owner=user, name=name).first()
