"""The web process's probes and metrics: `/healthz`, `/readyz`, `/metrics`.

* `/healthz` (liveness): the process answers. No I/O; always `200 {"status": "ok"}`.
* `/readyz` (readiness): the database, the broker and the storage answer within
  `ATELIER_READINESS_TIMEOUT_SECONDS` (`inference/health.py`); else `503` naming each one that
  failed and why, in a fixed vocabulary (never a host, port, user or traceback; never a 500).
* `/metrics`: Prometheus text from `inference.metrics.PlatformCollector`, read from the database
  at scrape time. `Authorization: Bearer <ATELIER_METRICS_TOKEN>` (an empty setting refuses every
  token) or a signed-in operator's session; anyone else gets 401/403 and nothing.

`ProbeMiddleware` comes first in `MIDDLEWARE`: the kubelet calls the pod's own address (not an
`ALLOWED_HOSTS` name) over plain HTTP, which Django's host check (400) and the HTTPS redirect (301)
would refuse, so the two probes, and `/metrics` with a bearer token, are answered before them. The
same views are routed in `config/urls.py`, so the paths resolve like any other.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

PROBE_METHODS = ("GET", "HEAD")


def _method_refused(request: HttpRequest) -> HttpResponse | None:
    if request.method in PROBE_METHODS:
        return None
    response = JsonResponse({"error": f"method {request.method} not allowed", "field": "method"}, status=405)
    response["Allow"] = ", ".join(PROBE_METHODS)
    return response


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    response["X-Content-Type-Options"] = "nosniff"  # answered before SecurityMiddleware sets it
    return response


def healthz(request: HttpRequest) -> HttpResponse:
    return _method_refused(request) or _no_store(JsonResponse({"status": "ok"}))


def readyz(request: HttpRequest) -> HttpResponse:
    from inference.health import run_checks

    refused = _method_refused(request)
    if refused:
        return refused
    results = run_checks()
    ready = all(result.ok for result in results)
    body = {"status": "ok" if ready else "unavailable", "checks": {r.name: r.as_json() for r in results}}
    return _no_store(JsonResponse(body, status=200 if ready else 503))


def _bearer_token(request: HttpRequest) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def metrics_allowed(request: HttpRequest) -> bool:
    """A bearer token equal to ATELIER_METRICS_TOKEN (never when it is empty), or an operator's session."""
    token = _bearer_token(request)
    expected = settings.ATELIER_METRICS_TOKEN
    if token is not None:
        return bool(expected) and hmac.compare_digest(token.encode(), expected.encode())
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated and user.is_active and user.is_staff)


def metrics(request: HttpRequest) -> HttpResponse:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    from inference.metrics import PlatformCollector

    refused = _method_refused(request)
    if refused:
        return refused
    if not metrics_allowed(request):
        signed_in = getattr(getattr(request, "user", None), "is_authenticated", False)
        status, message = (403, "operators only") if signed_in else (401, "a metrics bearer token or an operator's session is required")
        response = JsonResponse({"error": message, "field": "Authorization"}, status=status)
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)  # per scrape: no process-wide mutable state
    registry.register(PlatformCollector())
    return _no_store(HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST))


class ProbeMiddleware:
    """Answers the probes (and bearer-token scrapes) before the host check and the HTTPS redirect."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if path == "/healthz":
            return healthz(request)
        if path == "/readyz":
            return readyz(request)
        if path == "/metrics" and _bearer_token(request) is not None:
            return metrics(request)
        return self.get_response(request)
