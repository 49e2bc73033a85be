"""The API tokens page (`/tokens/`): members create, name, see the last use of and revoke their own
API tokens in the browser (what `manage.py create_token` does for scripts).

Thin views: which token the caller may touch is `tenants.selectors.api_token_get_for_user` (their
own only, 404 for anyone else's), the writes are `tenants.services.token_create` / `token_revoke`.
A new token is shown in that one answer (`Cache-Control: no-store`); only its hash is stored.
A bad name is rendered again with the field's message (400), never a 500.

Like the services page, the page answers the browser session (every POST CSRF-checked) or a
member's API token in the `Authorization` header (see `frontend.eas_views.member_page`).
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods, require_POST

from frontend.eas_views import member_page
from frontend.member_selectors import language_for_user
from frontend.workspace.i18n import strings
from tenants.selectors import api_token_get_for_user, api_tokens_for_user, tenant_for_user
from tenants.services import TOKEN_NAME_MAX, token_create, token_revoke


def _page(request: HttpRequest, *, status: int = 200, form: dict[str, str] | None = None,
          errors: dict[str, str] | None = None, new_token: dict[str, str] | None = None,
          message: str = "") -> HttpResponse:
    context = {
        "t": strings(language_for_user(request.user)),
        "tokens": api_tokens_for_user(request.user),
        "form": form or {},
        "errors": errors or {},
        "new_token": new_token,
        "message": message,
        "name_max": TOKEN_NAME_MAX,
        "time_zone": tenant.time_zone if (tenant := tenant_for_user(request.user)) else "UTC",
    }
    response = render(request, "frontend/tokens.html", context, status=status)
    if new_token:
        response["Cache-Control"] = "no-store"  # the token is shown once: not from a cache either
    return response


@member_page
@require_http_methods(["GET", "POST"])
def tokens_page(request: HttpRequest) -> HttpResponse:
    """The caller's tokens, and (POST) a new one, shown in this answer only."""
    if request.method == "GET":
        return _page(request)
    form = {"name": request.POST.get("name", "")}
    try:
        token, raw = token_create(user=request.user, name=form["name"])
    except ValidationError as exc:
        errors = {field: " ".join(messages) for field, messages in exc.message_dict.items()}
        return _page(request, status=400, form=form, errors=errors)
    return _page(request, new_token={"public_id": token.public_id, "name": token.name, "token": raw})


@member_page
@require_POST
def token_revoke_page(request: HttpRequest, api_token_id: str) -> HttpResponse:
    """Revoke one of the caller's own tokens (again: nothing changes)."""
    token = api_token_get_for_user(request.user, api_token_id)
    token_revoke(token=token)
    t = strings(language_for_user(request.user))
    return _page(request, message=t["tokens_revoked"].format(token=f"{token.prefix}…", name=token.name))
