"""The plumbing every `/sdapi/v1` route shares: token auth, method checks, A1111's error shape.

A1111 (FastAPI) answers errors as `{"error", "detail", "body", "errors"}`; clients such as
webuiapi print `detail`, so it always says what to fix. Which status and `error` name a
client error (`a1111/errors.py`) gets comes from the one table every adapter uses,
`inference/api/errors.py`'s `ERROR_TABLE` (validation failures 422 as in A1111, a body over the size
limit 413, an unknown model 404); `body` names the field at fault.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from inference.api.errors import JsonBodyError, body_bytes, error_answer, parse_json, with_retry_after
from a1111.errors import RequestError
from tenants.auth import request_user


class SdapiError(Exception):
    """An answer only `/sdapi/v1` gives, with its own status (a failed job's 500, A1111's exact 404s)."""

    def __init__(self, status: int, detail: str, error: str = "HTTPException") -> None:
        super().__init__(detail)
        self.status, self.detail, self.error = status, detail, error


def error_response(status: int, detail: str, error: str = "HTTPException", body: str = "") -> JsonResponse:
    return JsonResponse({"error": error, "detail": detail, "body": body, "errors": detail}, status=status)


def _error_for(exc: Exception) -> JsonResponse | None:
    if isinstance(exc, RequestError):
        answer = error_answer(exc)
        return with_retry_after(error_response(answer.sdapi_status, str(exc), answer.sdapi_error, body=exc.field), exc)
    if isinstance(exc, SdapiError):
        return error_response(exc.status, exc.detail, exc.error)
    return None


def sdapi(*methods: str) -> Callable:
    """An /sdapi/v1 route: method check, token auth, A1111 error shape. Sync or async views.

    The view receives `(request, user, …)` and returns JSON-able data or a response.
    """

    def decorator(view: Callable[..., Any]) -> Callable[..., Awaitable[HttpResponse]]:
        is_async = asyncio.iscoroutinefunction(view)

        @csrf_exempt
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                return error_response(405, f"Method Not Allowed: use {', '.join(methods)}")
            user = await sync_to_async(request_user)(request)
            if user is None:
                response = error_response(401, "Not authenticated: send your API token (Bearer, or Basic username:token)")
                response["WWW-Authenticate"] = 'Basic realm="atelier"'
                return response
            try:
                if is_async:
                    result = await view(request, user, *args, **kwargs)
                else:
                    result = await sync_to_async(view)(request, user, *args, **kwargs)
            except Exception as exc:
                response = _error_for(exc)
                if response is None:
                    raise
                return response
            return result if isinstance(result, HttpResponse) else JsonResponse(result, safe=False)

        wrapper.csrf_exempt = True  # type: ignore[attr-defined]
        wrapper.allowed_methods = methods  # type: ignore[attr-defined]  # read by the OpenAPI tests
        return wrapper

    return decorator


def json_object(request: HttpRequest) -> dict[str, Any]:
    """The body as a JSON object, or an A1111-shaped 422/413."""
    try:
        body = parse_json(body_bytes(request) or b"{}")
    except JsonBodyError as exc:
        if exc.too_deep:
            raise SdapiError(400, exc.message, "RequestValidationError") from None
        raise SdapiError(422, f"the body {exc.message}", "JSONDecodeError") from None
    if not isinstance(body, dict):
        raise SdapiError(422, "the body must be a JSON object", "RequestValidationError")
    return body
