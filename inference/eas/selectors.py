"""Reads for the services page (`/services/`): which EAS services a user may see and manage.

One rule, in one place: a member sees and manages the services they own; a tenant admin also
every service of their tenant. Nobody else (another member of the tenant, another tenant's admin,
an operator outside the tenant) reaches a service here: `eas_service_get_for_user` answers 404,
exactly as for a service that does not exist. Operators manage every service in Django admin.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractUser
from django.db.models import Q, QuerySet
from django.http import Http404

from inference.eas.models import EasItem, EasService, EasServiceToken
from inference.eas.queues import INPUT, SINK, queue_depths
from tenants.models import Membership
from tenants.selectors import membership_for_user


def _admin_tenant_id(user: AbstractUser) -> int | None:
    membership = membership_for_user(user)
    if membership is not None and membership.role == Membership.Role.ADMIN:
        return membership.tenant_id
    return None


def eas_services_for_user(user: AbstractUser) -> QuerySet[EasService]:
    """The services `user` may see and manage: their own, and as a tenant admin their tenant's."""
    if not user.is_authenticated:
        return EasService.objects.none()
    visible = Q(owner=user)
    tenant_id = _admin_tenant_id(user)
    if tenant_id is not None:
        visible |= Q(tenant_id=tenant_id)
    return EasService.objects.filter(visible).select_related("owner", "tenant").order_by("name")


def eas_service_get_for_user(user: AbstractUser, public_id: str) -> EasService:
    """The service `public_id` if `user` may manage it; `Http404` otherwise (no existence oracle)."""
    service = eas_services_for_user(user).filter(public_id=public_id).first()
    if service is None:
        raise Http404("no such service")
    return service


def eas_token_get_for_user(user: AbstractUser, public_id: str, token_id: int) -> EasServiceToken:
    """A token of a service `user` may manage; `Http404` for any other token."""
    service = eas_service_get_for_user(user, public_id)
    token = EasServiceToken.objects.filter(service=service, pk=token_id).first()
    if token is None:
        raise Http404("no such token")
    return token


@dataclass(frozen=True)
class ServiceRow:
    """One line of the services page."""

    service: EasService
    input_depth: int  # input items not finished yet
    input_waiting: int  # of those, not yet submitted as jobs (back-pressure, the owner's cap)
    sink_depth: int  # results not committed yet
    tokens: list[EasServiceToken]

    @property
    def input_running(self) -> int:
        return self.input_depth - self.input_waiting


def eas_service_row(service: EasService) -> ServiceRow:
    """`service` with its queue depths and active tokens (call it for a service already scoped)."""
    depths = queue_depths(service=service)
    waiting = EasItem.objects.filter(service=service, queue=INPUT, status=EasItem.Status.WAITING).count()
    tokens = list(service.tokens.filter(revoked_at__isnull=True).order_by("-created_at"))
    return ServiceRow(service, depths[INPUT], min(waiting, depths[INPUT]), depths[SINK], tokens)


def eas_service_rows_for_user(user: AbstractUser) -> list[ServiceRow]:
    return [eas_service_row(service) for service in eas_services_for_user(user)]


def eas_endpoint(*, scheme: str, host: str, service: EasService) -> dict[str, str]:
    """What a client needs: the SDK's endpoint (host[:port]) and queue names, and the HTTP URL."""
    return {
        "endpoint": host,
        "url": f"{scheme}://{host}/api/predict/{service.name}",
        "input_queue": service.name,
        "sink_queue": f"{service.name}/sink",
    }
