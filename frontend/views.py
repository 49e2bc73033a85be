"""Home page, the language switch and the login lockout page: plain Django views."""

from __future__ import annotations

import math
from typing import Any

from axes.helpers import get_cool_off
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from frontend.member_selectors import gallery_for_user, language_for_user
from frontend.member_services import language_set
from frontend.preferences import Language
from frontend.workspace.i18n import strings
from inference.model_registry import model_list_for_user
from inference.selectors import job_list_for_user
from tenants.models import Membership
from tenants.selectors import membership_for_user, usage_this_month

RECENT_IMAGES = 12


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """The member's workspace link, their recent images and jobs, usage, and admin links."""
    membership = membership_for_user(request.user)
    usage = usage_this_month(request.user)
    language = language_for_user(request.user)
    return render(
        request,
        "frontend/home.html",
        {
            "t": strings(language),
            "language": language,
            "languages": Language.choices,
            "membership": membership,
            "is_tenant_admin": membership is not None and membership.role == Membership.Role.ADMIN,
            "images": gallery_for_user(request.user, limit=RECENT_IMAGES),
            "jobs": job_list_for_user(request.user, limit=10),
            "checkpoints": model_list_for_user(request.user) if membership else [],
            "usage_gpu_seconds": sum(record.gpu_seconds for record in usage),
            "usage_images": sum(record.images for record in usage),
            "usage_jobs": len(usage),
        },
    )


@login_required
@require_POST
def set_language(request: HttpRequest) -> HttpResponse:
    """The interface language, for the home page and the workspace (its next page load)."""
    language = request.POST.get("language", "")
    if language in Language.values:
        language_set(user=request.user, language=language)
    next_url = request.POST.get("next") or "/"
    # Only a path on this site, redirected to as a URL: `redirect()` would try to reverse a
    # string such as ";env;" as a view name and fail with a 500.
    local = next_url.startswith("/") and url_has_allowed_host_and_scheme(
        next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return HttpResponseRedirect(next_url if local else "/")


@login_required
def api_docs(request: HttpRequest) -> HttpResponse:
    """The interactive API page (Swagger UI over `/openapi.json`, served from this site only).

    Reads work with the member's session; to try a write they paste one of their API tokens
    into "Authorize" (the page links to their Tokens page), as the APIs refuse cookie writes.
    """
    return render(request, "frontend/api_docs.html", {"t": strings(language_for_user(request.user))})


def login_locked_out(request: HttpRequest, original_response: HttpResponse | None = None,
                     credentials: dict[str, Any] | None = None) -> HttpResponse:
    """django-axes' lockout response (AXES_LOCKOUT_CALLABLE): 429, when to retry, who can unlock."""
    cool_off = get_cool_off(request)
    minutes = math.ceil(cool_off.total_seconds() / 60) if cool_off else None
    response = render(
        request,
        "frontend/login_locked_out.html",
        {"cooloff_minutes": minutes, "failure_limit": settings.AXES_FAILURE_LIMIT},
        status=429,
    )
    if cool_off:
        response["Retry-After"] = str(math.ceil(cool_off.total_seconds()))
    return response
