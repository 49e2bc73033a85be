"""Small helpers for the JSON APIs: authentication, method checks, errors as 4xx JSON."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from inference.generation import RequestValidationError
from inference.model_registry import ModelNotFound
from inference.services import NotAMember
from tenants.auth import request_user

MAX_BODY_BYTES = 50 * 1024 * 1024


def error(status: int, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": message, **extra}, status=status)


def json_body(request: HttpRequest) -> Any:
    if not request.body:
        raise RequestValidationError("body", "a JSON object is required")
    try:
        return json.loads(request.body)
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
            if int(request.headers.get("Content-Length") or 0) > MAX_BODY_BYTES:
                return error(413, f"request body over {MAX_BODY_BYTES // (1024 * 1024)} MB")
            try:
                return view(request, user, *args, **kwargs)
            except RequestValidationError as exc:
                return error(400, str(exc), field=exc.field)
            except ModelNotFound as exc:
                field = "override_settings.sd_model_checkpoint"
                return error(400, f"{field}: {exc}", field=field)
            except NotAMember as exc:
                return error(403, str(exc))

        return wrapper

    return decorator
