"""`/api/predict/<service>[/<rest>]`: the HTTP side of the EAS queue service, as SDK 0.36 calls it.

`rest == "sink"` is the sink queue; anything else (`sdapi/v1/txt2img`, `sdapi/v1/img2img`, or
nothing) is the input queue, with `rest` as the item's route (`/work/shared/reference/eas_queue.md`
§3, §9.1). Control parameters are wrapped in underscores; on a put every other query parameter
is a tag.

| request | answer |
|---|---|
| `POST ?<tags>[&_priority_=1]` (body: the raw request) | 200, body = the index (digits only), header `X-Eas-Queueservice-Request-Id`; 413 over the payload limit; 429 when the queue is full |
| `POST ?_eos_=true` | 200 `OK` (nothing to end: the platform runs the input queue) |
| `PUT ?_indexes_=1,2` (commit) | 200 `OK` |
| `DELETE ?_indexes_=1,2` / `DELETE ?_index_=n&_trunc_=true` | 200 `OK` |
| `GET ?_attrs_=true` | JSON object of strings; `AttributesProto` when `Accept: application/vnd.google.protobuf` |
| `GET ?_search_=true&_index_=n` | JSON object; `{}` for an index the queue does not hold |
| `GET ?_index_&_length_&_timeout_&_auto_delete_[&requestId][&tags]` | `DataFrameListProto` (protobuf Accept) or the JSON list `[{"index", "tags", "data": base64, "message"?}]`; 204 when nothing came within the timeout (under 5 s) |

Every call needs one of the service's tokens in `Authorization` (raw, as the SDK sends it, or
`Bearer <token>`): 401 `unauthorized` otherwise, the same for an unknown service. Errors are
plain text saying what to fix (the SDK shows the body in its `PredictException`).
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.http.request import RawPostDataException
from django.views.decorators.csrf import csrf_exempt

from inference.eas import frames
from inference.eas.queues import (
    GROUP_HEADER,
    INPUT,
    PRIORITY_HEADER,
    SINK,
    USER_HEADER,
    EasAuthError,
    EasError,
    EasPayloadTooLarge,
    Frame,
    queue_attributes,
    queue_commit,
    queue_delete,
    queue_get,
    queue_put,
    queue_search,
    queue_truncate,
    service_authenticate,
)

PROTOBUF = "application/vnd.google.protobuf"
REQUEST_ID_HEADER = "X-Eas-Queueservice-Request-Id"
# The SDK gives each attempt 5 s: a long poll answers before that.
MAX_POLL_SECONDS = 4.5
POLL_INTERVAL_SECONDS = 0.2
MAX_INDEXES = 1000
INTEGER = re.compile(r"-?[0-9]{1,19}")  # what /openapi.json states for the integer parameters (under 2**63)


class BadParameter(EasError):
    """A control parameter that cannot be read (400, naming it)."""


def _text(status: int, message: str) -> HttpResponse:
    return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")


def _flag(query: QueryDict, name: str, default: bool = False) -> bool:
    value = query.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise BadParameter(f"{name} must be true or false, not {value!r}")


def _int(query: QueryDict, name: str, default: int | None = None) -> int:
    value = query.get(name)
    if value is None or value == "":
        if default is None:
            raise BadParameter(f"{name} is required")
        return default
    if not INTEGER.fullmatch(value):  # int() would also take "+1", " 1", "1_0" and other scripts' digits
        raise BadParameter(f"{name} must be an integer (digits, optionally after a minus), not {value[:40]!r}")
    return int(value)


def _indexes(query: QueryDict) -> list[int]:
    raw = query.get("_indexes_", "")
    parts = [part.strip() for part in raw.split(",") if part.strip()]
    if not parts:
        raise BadParameter("_indexes_ is required: the indexes to commit or delete, comma-separated")
    if len(parts) > MAX_INDEXES:
        raise BadParameter(f"_indexes_ names more than {MAX_INDEXES} indexes: send them in several calls")
    try:
        return [int(part) for part in parts]
    except ValueError:
        raise BadParameter(f"_indexes_ must be integers separated by commas, not {raw!r}") from None


def _timeout(query: QueryDict) -> float:
    """`_timeout_` as the SDK writes it ("5s", "500ms", or seconds), capped under its own deadline."""
    raw = (query.get("_timeout_") or "0").strip().lower()
    try:
        if raw.endswith("ms"):
            seconds = float(raw[:-2]) / 1000
        elif raw.endswith("s"):
            seconds = float(raw[:-1])
        else:
            seconds = float(raw)
    except ValueError:
        raise BadParameter(f"_timeout_ must be a duration such as 5s or 500ms, not {raw!r}") from None
    return min(max(seconds, 0.0), MAX_POLL_SECONDS)


def _tags(query: QueryDict, *, skip: tuple[str, ...] = ()) -> dict[str, str]:
    return {key: query.get(key, "") for key in query if not key.startswith("_") and key not in skip}


def _consumer(request: HttpRequest) -> str:
    group = request.headers.get(GROUP_HEADER, "") or "eas"
    user = request.headers.get(USER_HEADER, "")
    return f"{group}.{user}" if user else ""


def _frames_response(request: HttpRequest, found: list[Frame]) -> HttpResponse:
    if not found:
        return HttpResponse(status=204)
    if PROTOBUF in request.headers.get("Accept", ""):
        body = frames.encode_frame_list((f.index, f.tags, f.data, f.message) for f in found)
        return HttpResponse(body, content_type=PROTOBUF)
    listed: list[dict[str, Any]] = []
    for frame in found:
        entry: dict[str, Any] = {"index": frame.index, "tags": frame.tags, "data": base64.b64encode(frame.data).decode()}
        if frame.message:
            entry["message"] = frame.message
        listed.append(entry)
    return JsonResponse(listed, safe=False)


def _body(request: HttpRequest, limit: int) -> bytes:
    length = request.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > limit:
        raise EasPayloadTooLarge(
            f"the payload is {length} bytes, over this service's limit of {limit} bytes: "
            "send images as URLs (image_link) and ask for save_dir results"
        )
    try:
        return request.body
    except (RequestDataTooBig, RawPostDataException):
        raise EasPayloadTooLarge(f"the payload is over this service's limit of {limit} bytes") from None


def _put(request: HttpRequest, service, queue: str, route: str) -> HttpResponse:
    query = request.GET
    if _flag(query, "_eos_"):
        return _text(200, "OK")
    data = _body(request, service.max_payload_bytes)
    priority_text = query.get("_priority_") or request.headers.get(PRIORITY_HEADER, "") or "0"
    if not INTEGER.fullmatch(priority_text):
        raise BadParameter(f"_priority_ must be 0 or 1, not {priority_text[:40]!r}")
    priority = 1 if int(priority_text) > 0 else 0
    item = queue_put(
        service=service, queue=queue, data=data, tags=_tags(query), route=route if queue == INPUT else "",
        priority=priority, base_url=request.build_absolute_uri("/"),
    )
    response = _text(200, str(item.index))
    response[REQUEST_ID_HEADER] = item.request_id
    return response


def _dispatch(request: HttpRequest, service, queue: str, route: str) -> HttpResponse | Callable[[], Any]:
    """Sync part of a call: the answer, or (for a long-poll `get`) the one read to repeat."""
    query = request.GET
    method = request.method
    if method == "POST":
        return _put(request, service, queue, route)
    if method == "PUT":
        queue_commit(service=service, queue=queue, indexes=_indexes(query))
        return _text(200, "OK")
    if method == "DELETE":
        if _flag(query, "_trunc_"):
            queue_truncate(service=service, queue=queue, index=_int(query, "_index_"))
        else:
            queue_delete(service=service, queue=queue, indexes=_indexes(query))
        return _text(200, "OK")
    if method != "GET":
        response = _text(405, f"method {method} is not allowed: use GET, POST, PUT or DELETE")
        response["Allow"] = "GET, POST, PUT, DELETE"
        return response
    if _flag(query, "_watch_"):
        return _text(400, "_watch_=true needs a websocket connection (ws:// or wss://)")
    if _flag(query, "_attrs_"):
        attributes = queue_attributes(service=service, queue=queue)
        if PROTOBUF in request.headers.get("Accept", ""):
            return HttpResponse(frames.encode_attributes(attributes), content_type=PROTOBUF)
        return JsonResponse(attributes)
    if _flag(query, "_search_"):
        return JsonResponse(queue_search(service=service, queue=queue, index=_int(query, "_index_")))
    index, length = _int(query, "_index_", 0), _int(query, "_length_", 1)
    if length < 1:
        raise BadParameter("_length_ must be at least 1")
    auto_delete = _flag(query, "_auto_delete_", True)
    request_id = query.get("requestId", "")
    tags = _tags(query, skip=("requestId",))
    consumer = _consumer(request)

    def read() -> list[Frame]:
        return queue_get(
            service=service, queue=queue, index=index, length=length, request_id=request_id, tags=tags,
            auto_delete=auto_delete, consumer=consumer,
        )

    return read


def _split(target: str) -> tuple[str, str, str]:
    """(service name, queue, route) of `<service>[/<rest>]`."""
    name, _, rest = target.partition("/")
    rest = rest.strip("/")
    return (name, SINK, "") if rest == "sink" else (name, INPUT, rest)


@csrf_exempt
async def predict(request: HttpRequest, target: str) -> HttpResponse:
    name, queue, route = _split(target)
    try:
        service = await sync_to_async(service_authenticate)(
            name=name, authorization=request.headers.get("Authorization", "")
        )
    except EasAuthError:
        return _text(401, "unauthorized: send one of this service's tokens in the Authorization header")
    try:
        outcome = await sync_to_async(_dispatch)(request, service, queue, route)
        if isinstance(outcome, HttpResponse):
            return outcome
        deadline = time.monotonic() + _timeout(request.GET)
        while True:
            found = await sync_to_async(outcome)()
            if found or time.monotonic() >= deadline:
                return _frames_response(request, found)
            await asyncio.sleep(min(POLL_INTERVAL_SECONDS, max(deadline - time.monotonic(), 0.0)))
    except EasError as exc:
        return _text(exc.status, exc.message)


predict.allowed_methods = ("GET", "POST", "PUT", "DELETE")  # type: ignore[attr-defined]  # read by the OpenAPI tests
