"""Small helpers for the JSON APIs: authentication, method checks, errors as 4xx JSON."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from inference.a1111.images import ImageInputError
from inference.generation import RequestValidationError
from inference.model_registry import ModelNotFound
from inference.services import NotAMember
from tenants.auth import request_user



class PayloadTooLarge(ValueError):
    """The request body is over `ATELIER_MAX_REQUEST_BYTES` (a 413)."""


def error(status: int, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": message, **extra}, status=status)


def body_bytes(request: HttpRequest) -> bytes:
    """The raw body, or `PayloadTooLarge` past the configured limit (Django refuses to buffer it)."""
    try:
        return request.body
    except RequestDataTooBig:
        limit_mb = settings.ATELIER_MAX_REQUEST_BYTES / (1024 * 1024)
        raise PayloadTooLarge(
            f"the request body is over the {limit_mb:g} MB limit: send large images as http(s) URLs instead"
        ) from None


def json_body(request: HttpRequest) -> Any:
    body = body_bytes(request)
    if not body:
        raise RequestValidationError("body", "a JSON object is required")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestValidationError("body", f"is not valid JSON ({exc})") from None


def api_view(*methods: str) -> Callable:
    """Token-authenticated JSON endpoint. The view receives (request, user, *args)."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                response = error(405, f"method {request.method} not allowed; use {', '.join(methods)}")
                response["Allow"] = ", ".join(methods)
                return response
            user = request_user(request)
            if user is None:
                response = error(401, "authentication required: send 'Authorization: Bearer <your API token>'")
                response["WWW-Authenticate"] = 'Bearer realm="atelier"'
                return response
            try:
                return view(request, user, *args, **kwargs)
            except RequestValidationError as exc:
                return error(400, str(exc), field=exc.field)
            except ModelNotFound as exc:
                field = "override_settings.sd_model_checkpoint"
                return error(400, f"{field}: {exc}", field=field)
            except NotAMember as exc:
                return error(403, str(exc))
            except ImageInputError as exc:
                return error(400, exc.message)
            except PayloadTooLarge as exc:
                return error(413, str(exc))

        return wrapper

    return decorator
