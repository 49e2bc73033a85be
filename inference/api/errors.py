"""Small helpers for the JSON APIs: authentication, method checks, errors as 4xx JSON.

`parse_json` is the one reader of JSON request bodies (the native API, `/sdapi/v1` and the
internal event route use it): it refuses bodies nested deeper than `MAX_JSON_DEPTH`, which no
real request needs and which would otherwise end in a RecursionError (a 500) in the decoder
or in any code that walks the value.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from a1111.images import ImageInputError
from a1111.generation import RequestValidationError
from inference.model_registry import ModelNotFound
from inference.services import NotAMember, TooManyQueuedJobs
from tenants.auth import request_user



class PayloadTooLarge(ValueError):
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
                return error(400, f"{exc.field}: {exc}", field=exc.field)
            except TooManyQueuedJobs as exc:
                return error(429, str(exc))
            except NotAMember as exc:
                return error(403, str(exc))
            except ImageInputError as exc:
                return error(400, exc.message)
            except PayloadTooLarge as exc:
                return error(413, str(exc))

        return wrapper

    return decorator
