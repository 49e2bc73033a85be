"""The services page (`/services/`): members and tenant admins manage their EAS async services.

Thin views: who may see which service is `inference.eas.selectors` (one scoped helper, 404 for
anyone else), the writes are `inference.eas.services` and `inference.eas.queues`. A form refused
for bad input is rendered again with the field's message (400), never a 500.

The pages answer the browser session (every POST CSRF-checked) or a member's API token in the
`Authorization` header (as the API does; a header a foreign page cannot send, so no CSRF check).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_http_methods, require_POST

from frontend.member_selectors import language_for_user
from frontend.workspace.i18n import strings
from inference.eas.models import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_RESULT_RETENTION_HOURS,
)
from inference.eas.queues import service_token_revoke
from inference.eas.selectors import (
    eas_endpoint,
    eas_service_get_for_user,
    eas_service_row,
    eas_service_rows_for_user,
    eas_token_get_for_user,
)
from inference.eas.services import (
    eas_owner_choices,
    eas_service_create_for,
    eas_service_delete,
    eas_token_issue,
)
from inference.model_registry import model_list_for_user
from tenants.auth import user_from_authorization
from tenants.models import Membership
from tenants.selectors import membership_for_user

CREATE_FIELDS = ("name", "owner", "default_checkpoint", "max_payload_bytes", "result_retention_hours")


def member_page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A signed-in member (session, CSRF-checked) or a member's API token; else the sign-in page
    (no credentials) or 401 (a wrong token)."""
    protected = csrf_protect(view)

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        header = request.headers.get("Authorization", "")
        if header:
            user = user_from_authorization(header)
            if user is None:
                return HttpResponse("unauthorized: a wrong or revoked token\n", status=401, content_type="text/plain")
            request.user = user
            return view(request, *args, **kwargs)
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        return protected(request, *args, **kwargs)

    return csrf_exempt(wrapper)


def _errors(exc: ValidationError) -> dict[str, str]:
    return {field: " ".join(messages) for field, messages in exc.message_dict.items()}


def _page(request: HttpRequest, *, status: int = 200, form: dict[str, str] | None = None,
          errors: dict[str, str] | None = None, new_token: dict[str, str] | None = None,
          token_error: dict[str, str] | None = None, message: str = "") -> HttpResponse:
    user = request.user
    membership = membership_for_user(user)
    rows = eas_service_rows_for_user(user)
    host = request.get_host()
    context = {
        "t": strings(language_for_user(user)),
        "is_tenant_admin": membership is not None and membership.role == Membership.Role.ADMIN,
        "membership": membership,
        "rows": [(row, eas_endpoint(scheme=request.scheme, host=host, service=row.service)) for row in rows],
        "owners": eas_owner_choices(user),
        "checkpoints": model_list_for_user(user) if membership else [],
        "form": form or {},
        "errors": errors or {},
        "new_token": new_token,
        "token_error": token_error,
        "message": message,
        "max_payload_bytes": settings.ATELIER_EAS_MAX_PAYLOAD_BYTES,
        "max_retention_hours": settings.ATELIER_EAS_MAX_RESULT_RETENTION_HOURS,
        "default_payload_bytes": min(DEFAULT_MAX_PAYLOAD_BYTES, settings.ATELIER_EAS_MAX_PAYLOAD_BYTES),
        "default_retention_hours": min(DEFAULT_RESULT_RETENTION_HOURS, settings.ATELIER_EAS_MAX_RESULT_RETENTION_HOURS),
    }
    response = render(request, "frontend/services.html", context, status=status)
    if new_token:
        response["Cache-Control"] = "no-store"  # the token is shown once: not from a cache either
    return response


@member_page
@require_http_methods(["GET", "POST"])
def services_page(request: HttpRequest) -> HttpResponse:
    """The services the caller may manage, and (POST) a new one."""
    if request.method == "GET":
        return _page(request)
    form = {field: request.POST.get(field, "") for field in CREATE_FIELDS}
    try:
        service = eas_service_create_for(
            actor=request.user, name=form["name"], owner_username=form["owner"],
            default_checkpoint=form["default_checkpoint"], max_payload_bytes=form["max_payload_bytes"],
            result_retention_hours=form["result_retention_hours"],
        )
    except ValidationError as exc:
        return _page(request, status=400, form=form, errors=_errors(exc))
    return redirect(f"/services/#service-{service.public_id}")


@member_page
@require_POST
def token_create(request: HttpRequest, service_id: str) -> HttpResponse:
    """Issue a token of the service; the page shows it this once."""
    service = eas_service_get_for_user(request.user, service_id)
    try:
        token, raw = eas_token_issue(service=service, name=request.POST.get("token_name", ""))
    except ValidationError as exc:
        text = " ".join(_errors(exc).values())
        return _page(request, status=400, token_error={"service_id": service.public_id, "text": text})
    return _page(request, new_token={"service_id": service.public_id, "name": token.name, "token": raw})


@member_page
@require_POST
def token_revoke(request: HttpRequest, service_id: str, token_id: int) -> HttpResponse:
    token = eas_token_get_for_user(request.user, service_id, token_id)
    service_token_revoke(token=token)
    t = strings(language_for_user(request.user))
    return _page(request, message=t["services_token_revoked"].format(token=f"{token.prefix}…", service=token.service))


@member_page
@require_http_methods(["GET", "POST"])
def service_delete(request: HttpRequest, service_id: str) -> HttpResponse:
    """GET: what deleting the service drops, and the button to confirm; POST: delete it."""
    service = eas_service_get_for_user(request.user, service_id)
    t = strings(language_for_user(request.user))
    if request.method == "GET":
        return render(request, "frontend/service_delete.html", {"t": t, "row": eas_service_row(service)})
    name = service.name
    dropped = eas_service_delete(service=service)
    return _page(request, message=t["services_deleted"].format(service=name, items=dropped))
