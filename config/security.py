"""HTTP security pieces of the Django app: the Content-Security-Policy header and the login
throttle's authentication backend (django-axes). Their settings live in config/settings.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.http import HttpRequest, HttpResponse


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
