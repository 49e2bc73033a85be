"""HTTP security pieces of the Django app: the Content-Security-Policy header, the refusal of NUL
characters in the pages' forms, and the login throttle's authentication backend (django-axes).
Their settings live in config/settings.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.http import HttpRequest, HttpResponse

from inference.api.errors import API_PREFIXES


class ContentSecurityPolicyMiddleware:
    """Adds ``ATELIER_CONTENT_SECURITY_POLICY`` to every response that has no policy of its own."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.policy: str = settings.ATELIER_CONTENT_SECURITY_POLICY

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if self.policy and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = self.policy
        return response


class RefuseNulCharactersMiddleware:
    """A page's query string or form with a NUL character is a 400 with a message.

    No text a person types has one; PostgreSQL cannot store one, so a form that saved it was a
    500 there (a token name, found by `tests/security/test_forms_property.py`). The JSON APIs
    are left alone: their field readers refuse NUL naming the field, in the API's own shape.
    """

    SKIPPED_PREFIXES = (*API_PREFIXES, "/internal/")

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(self.SKIPPED_PREFIXES) and self._has_nul(request):
            return HttpResponse(
                "Bad request: text must not contain NUL characters (\\0). Remove them and send the form again.",
                status=400, content_type="text/plain; charset=utf-8",
            )
        return self.get_response(request)

    @staticmethod
    def _has_nul(request: HttpRequest) -> bool:
        query = request.META.get("QUERY_STRING", "")
        if "\x00" in query or "%00" in query.lower():
            return True
        if request.method == "POST" and request.content_type in ("application/x-www-form-urlencoded",
                                                                  "multipart/form-data"):
            # parsed as the page's view would parse it (and cached for it): bounded by Django's limits
            return any("\x00" in key or any("\x00" in value for value in values)
                       for key, values in request.POST.lists())
        return False


class LoginThrottleBackend(AxesStandaloneBackend):
    """django-axes' check, for logins that come with a request (the login pages, the admin's).

    ``authenticate()`` without a request (``Client.login`` in tests, management commands) is no
    login attempt anyone can repeat from outside: axes cannot count it, so it is passed on to
    the next backend instead of raising axes' "request required" error.
    """

    def authenticate(self, request: HttpRequest | None, username: str | None = None,
                     password: str | None = None, **kwargs: Any) -> None:
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)
