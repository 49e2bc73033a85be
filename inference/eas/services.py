"""Writes of the services page (`/services/`): a member or tenant admin creates and deletes EAS
services and issues tokens, within limits an operator sets (`ATELIER_EAS_MAX_*`).

Who may touch which service is decided by `inference.eas.selectors` (the views fetch the service
through `eas_service_get_for_user` first); here: who may *own* a new one. A member creates
services for themselves; a tenant admin also for any member of their tenant. Every refusal is a
`ValidationError` keyed by the form field to fix.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import transaction

from inference.eas.models import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_RESULT_RETENTION_HOURS,
    EasItem,
    EasService,
    EasServiceToken,
)
from inference.eas.queues import INPUT, service_create, service_token_create
from inference.model_registry import ModelNotFound, checkpoint_resolve_for_user
from inference.models import Job
from inference.services import job_cancel
from tenants.models import Membership
from tenants.selectors import membership_for_user

TOKEN_NAME_MAX = 100


def eas_owner_choices(actor: AbstractUser) -> list[AbstractUser]:
    """Whom `actor` may create a service for: themselves, and as a tenant admin every member."""
    membership = membership_for_user(actor)
    if membership is None:
        return []
    if membership.role != Membership.Role.ADMIN:
        return [actor]
    return [m.user for m in Membership.objects.filter(tenant=membership.tenant).select_related("user")
            .order_by("user__username")]


def _limit(field: str, value: int | str | None, *, default: int, maximum: int) -> int:
    if value is None or str(value).strip() == "":
        return min(default, maximum)
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValidationError({field: f"{value!r} is not a whole number"}) from None
    if not 1 <= number <= maximum:
        raise ValidationError({field: f"must be between 1 and {maximum}"})
    return number


def eas_service_create_for(
    *, actor: AbstractUser, name: str, owner_username: str = "", default_checkpoint: str = "",
    max_payload_bytes: int | str | None = None, result_retention_hours: int | str | None = None,
) -> EasService:
    """A service owned by `actor`, or (a tenant admin) by the member `owner_username`.
    The checkpoint must be one the owner may use; it is stored by its title."""
    allowed = {user.get_username(): user for user in eas_owner_choices(actor)}
    if not allowed:
        raise ValidationError({"owner": "only members of a team can create services"})
    owner_username = owner_username.strip() or actor.get_username()
    owner = allowed.get(owner_username)
    if owner is None:
        raise ValidationError({"owner": f"you cannot create a service for {owner_username!r}"})
    payload = _limit("max_payload_bytes", max_payload_bytes, default=DEFAULT_MAX_PAYLOAD_BYTES,
                     maximum=settings.ATELIER_EAS_MAX_PAYLOAD_BYTES)
    retention = _limit("result_retention_hours", result_retention_hours, default=DEFAULT_RESULT_RETENTION_HOURS,
                       maximum=settings.ATELIER_EAS_MAX_RESULT_RETENTION_HOURS)
    checkpoint = ""
    if default_checkpoint.strip():
        try:
            checkpoint = checkpoint_resolve_for_user(owner, default_checkpoint).title
        except ModelNotFound:
            raise ValidationError(
                {"default_checkpoint": f"{owner.get_username()} cannot use a checkpoint {default_checkpoint!r}"}
            ) from None
    return service_create(name=name.strip(), owner=owner, default_checkpoint=checkpoint,
                          max_payload_bytes=payload, result_retention_hours=retention)


def eas_token_issue(*, service: EasService, name: str = "") -> tuple[EasServiceToken, str]:
    """A new token of `service` (the raw token is returned once; only its hash is stored)."""
    name = name.strip() or "default"
    if len(name) > TOKEN_NAME_MAX:
        raise ValidationError({"token_name": f"use at most {TOKEN_NAME_MAX} characters"})
    return service_token_create(service=service, name=name)


def eas_service_delete(*, service: EasService) -> int:
    """Delete `service`, its tokens and every item of its queues; the jobs its input items started
    are cancelled (nobody will collect their results). Returns how many items went."""
    with transaction.atomic():
        job_ids = list(
            EasItem.objects.filter(service=service, queue=INPUT, status=EasItem.Status.SUBMITTED, job__isnull=False)
            .values_list("job_id", flat=True)
        )
        items = EasItem.objects.filter(service=service).count()
        service.delete()
    for job in Job.objects.filter(pk__in=job_ids, status__in=[Job.Status.QUEUED, Job.Status.DISPATCHED,
                                                                Job.Status.RUNNING]):
        job_cancel(job=job)
    return items
