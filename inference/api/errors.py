"""Small helpers for the JSON APIs: authentication, method checks, errors as 4xx JSON.

`ERROR_TABLE` is the one mapping of the client errors (`a1111/errors.py`) to HTTP,
for every adapter: its status on the native API, its status and name on `/sdapi/v1` (whose
A1111-shaped body `inference/sdapi/adapter.py` writes), and the field each reports (the
native API as `field`, `/sdapi/v1` as `body`; both say it in the message too).

`parse_json` is the one reader of JSON request bodies (the native API, `/sdapi/v1` and the
internal event route use it): it refuses bodies nested deeper than `MAX_JSON_DEPTH`, which no
real request needs and which would otherwise end in a RecursionError (a 500) in the decoder
or in any code that walks the value.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from a1111.errors import (
    Conflict,
    Forbidden,
    InvalidField,
    NotFound,
    RequestError,
    RequestValidationError,
    TooLarge,
    TooMany,
    Unavailable,
)
from tenants.auth import request_user, user_from_authorization


@dataclass(frozen=True)
class ErrorAnswer:
    """How the APIs answer one kind of `RequestError`."""

    status: int  # the native API's status
    sdapi_status: int  # /sdapi/v1's: the same, except where A1111 itself answers otherwise
    sdapi_error: str  # the `error` name in /sdapi/v1's body


# Most specific first (the first class the error is an instance of wins).
ERROR_TABLE: tuple[tuple[type[RequestError], ErrorAnswer], ...] = (
    # A1111 (FastAPI) answers a failed validation with 422; the native API with 400.
    (InvalidField, ErrorAnswer(400, 422, "RequestValidationError")),
    (NotFound, ErrorAnswer(404, 404, "NotFound")),
    (Forbidden, ErrorAnswer(403, 403, "PermissionDenied")),
    (TooLarge, ErrorAnswer(413, 413, "PayloadTooLarge")),
    (TooMany, ErrorAnswer(429, 429, "TooManyRequests")),
    (Conflict, ErrorAnswer(409, 409, "Conflict")),
    (Unavailable, ErrorAnswer(503, 503, "ServiceUnavailable")),
    (RequestError, ErrorAnswer(400, 422, "RequestError")),
)


def error_answer(exc: RequestError) -> ErrorAnswer:
    """The row of `ERROR_TABLE` for `exc`."""
    return next(answer for kind, answer in ERROR_TABLE if isinstance(exc, kind))


def with_retry_after(response: HttpResponse, exc: RequestError) -> HttpResponse:
    """A quota refusal (`tenants.quotas`) says in seconds when its window resets: HTTP's Retry-After."""
    retry_after = getattr(exc, "retry_after", None)
    if retry_after:
        response["Retry-After"] = str(max(int(retry_after), 1))
    return response


def request_error_response(exc: RequestError) -> JsonResponse:
    """The native API's answer: `{"error": "<field>: <message>", "field": "<field>"}` (no `field` without one)."""
    extra = {"field": exc.field} if exc.field else {}
    return with_retry_after(error(error_answer(exc).status, str(exc), **extra), exc)


class PayloadTooLarge(TooLarge):
    """The request body is over `ATELIER_MAX_REQUEST_BYTES` (a 413)."""


MAX_JSON_DEPTH = 64  # nested objects/arrays; A1111 requests nest 4 or 5 deep (alwayson_scripts → args → …)


class JsonBodyError(ValueError):
    """A body that is not JSON, or nested too deeply; the message says what to fix."""

    def __init__(self, message: str, *, too_deep: bool = False) -> None:
        super().__init__(message)
        self.message, self.too_deep = message, too_deep


def _too_deep_error(max_depth: int) -> JsonBodyError:
    return JsonBodyError(
        f"the JSON body is nested more than {max_depth} levels deep: send a flatter object", too_deep=True
    )


def _deeper_than(value: Any, max_depth: int) -> bool:
    """Whether objects/arrays nest more than `max_depth` levels (iteratively: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def parse_json(raw: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode a JSON body; `JsonBodyError` when it is not JSON or nests deeper than `max_depth`."""
    try:
        value = json.loads(raw)
    except RecursionError:  # the decoder's own limit (about 1000 levels)
        raise _too_deep_error(max_depth) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JsonBodyError(f"is not valid JSON ({exc})") from None
    except ValueError:  # Python's limit on integer digits (4300): no request needs such a number
        raise JsonBodyError("is not valid JSON for this API (a number has thousands of digits)") from None
    if isinstance(value, (dict, list)) and _deeper_than(value, max_depth):
        raise _too_deep_error(max_depth)
    return value


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
        return parse_json(body)
    except JsonBodyError as exc:
        raise RequestValidationError("body", exc.message) from None


def _method_not_allowed(request: HttpRequest, methods: tuple[str, ...]) -> JsonResponse:
    response = error(405, f"method {request.method} not allowed; use {', '.join(methods)}")
    response["Allow"] = ", ".join(methods)
    return response


def _unauthenticated(also: str = "") -> JsonResponse:
    response = error(401, f"authentication required: send 'Authorization: Bearer <your API token>'{also}")
    response["WWW-Authenticate"] = 'Bearer realm="atelier"'
    return response


def _csrf_refusal(request: HttpRequest) -> JsonResponse | None:
    """None when a write with the session cookie carries Django's CSRF token, else a JSON 403."""
    if CsrfViewMiddleware(lambda _request: HttpResponse()).process_view(request, None, (), {}) is None:
        return None
    return error(403, "CSRF check failed: a write with the session cookie needs the page's CSRF token "
                      "in the X-CSRFToken header (or use an API token)")


SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE")


def session_api_view(
    *methods: str, answer: Callable[[RequestError], HttpResponse] = request_error_response,
) -> Callable:
    """As `api_view`, for the routes the site's own pages call (the FileBrowser's files and
    uploads): a token, or the session cookie, a write with it CSRF-checked (the `X-CSRFToken`
    header). `answer` writes a `RequestError` (a route with statuses of its own passes its own)."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                return _method_not_allowed(request, methods)
            header = request.headers.get("Authorization", "")
            if header:
                user = user_from_authorization(header)
            else:
                session_user = getattr(request, "user", None)
                user = session_user if session_user is not None and session_user.is_authenticated else None
                if user is not None and request.method not in SAFE_METHODS:
                    refused = _csrf_refusal(request)
                    if refused is not None:
                        return refused
            if user is None:
                return _unauthenticated(" or sign in")
            try:
                return view(request, user, *args, **kwargs)
            except RequestError as exc:
                return answer(exc)

        wrapper.allowed_methods = methods  # type: ignore[attr-defined]  # read by the OpenAPI tests
        return wrapper

    return decorator


def api_view(*methods: str) -> Callable:
    """Token-authenticated JSON endpoint. The view receives (request, user, *args).

    An async view (one that waits for a job, e.g. `POST /api/v1/promptgen`) gets an async wrapper
    with the same checks: waiting then holds no thread."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        if asyncio.iscoroutinefunction(view):
            return _async_api_view(view, methods)

        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                return _method_not_allowed(request, methods)
            user = request_user(request)
            if user is None:
                return _unauthenticated()
            try:
                return view(request, user, *args, **kwargs)
            except RequestError as exc:
                return request_error_response(exc)

        wrapper.allowed_methods = methods  # type: ignore[attr-defined]  # read by the OpenAPI tests
        return wrapper

    return decorator


def _async_api_view(view: Callable[..., Any], methods: tuple[str, ...]) -> Callable[..., Any]:
    from asgiref.sync import sync_to_async

    @csrf_exempt
    @functools.wraps(view)
    async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method not in methods:
            return _method_not_allowed(request, methods)
        user = await sync_to_async(request_user)(request)
        if user is None:
            return _unauthenticated()
        try:
            return await view(request, user, *args, **kwargs)
        except RequestError as exc:
            return request_error_response(exc)

    wrapper.csrf_exempt = True  # type: ignore[attr-defined]
    wrapper.allowed_methods = methods  # type: ignore[attr-defined]  # read by the OpenAPI tests
    return wrapper


API_PREFIXES = ("/api/", "/sdapi/", "/controlnet/")


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's 404 handler: JSON under the API prefixes (in each API's error shape), HTML elsewhere.

    A path no route matches (`/api/v1/jobs/x/images/-1`) answers as the API's own 404s do,
    so a client parses one error shape whatever the cause.
    """
    from django.views.defaults import page_not_found as html_page_not_found

    path = request.path
    if path.startswith("/api/v1/"):
        return error(404, f"no such API route: {path} (see /openapi.json)")
    if path.startswith(API_PREFIXES):
        detail = f"Not Found: no such route {path} (see /openapi.json)"
        return JsonResponse({"error": "NotFound", "detail": detail, "body": "", "errors": detail}, status=404)
    return html_page_not_found(request, exception)
