"""`/api/v1/uploads`: resumable chunked uploads into the file areas (the FileBrowser's, `uploads.js`'s).

Thin views over `tenants.uploads` (sessions, chunks, verification, placement, storage quotas):

- `POST /api/v1/uploads` `{"area", "path", "size", "sha256"}` → 201 the session
  `{"id", "offset", "size", "chunk_size", "state", …}`; refused before anything is stored when the
  name exists (409), the size is over `ATELIER_UPLOAD_MAX_BYTES` or a storage limit (413, with
  `used_bytes` and `limit_bytes` for a limit), or the member has too many open uploads (429).
- `PUT /api/v1/uploads/<id>` raw bytes, `Content-Range: bytes a-b/size` → the session; a chunk not
  at `offset` is 409 with the `offset` to resume from, one past `size` 400, one over
  `ATELIER_UPLOAD_CHUNK_BYTES` 413; the last one verifies and places the file (422 when the size or
  SHA-256 differ, 409 when the name was taken meanwhile).
- `GET /api/v1/uploads/<id>` → the session (resume from its `offset`); `DELETE` cancels it.

Callers: an API token (`Authorization`), or the browser session, whose unsafe methods need
Django's CSRF token in `X-CSRFToken` (the page's script sends it). Another member's upload is a 404.
Routed in `config/urls.py`.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from a1111.errors import RequestError
from inference.api.errors import error, json_body, request_error_response, session_api_view
from tenants.storage_usage import StorageQuotaExceeded
from tenants.uploads import (
    OffsetConflict,
    VerificationFailed,
    upload_abort,
    upload_append,
    upload_get_for_user,
    upload_json,
    upload_start,
)


def _answer(exc: RequestError) -> JsonResponse:
    if isinstance(exc, VerificationFailed):
        return error(422, str(exc), field=exc.field)
    if isinstance(exc, OffsetConflict):
        return error(409, str(exc), field=exc.field, offset=exc.offset)
    if isinstance(exc, StorageQuotaExceeded):
        return error(413, str(exc), field=exc.field, limit=exc.key, used_bytes=exc.used, limit_bytes=exc.limit)
    return request_error_response(exc)


@session_api_view("POST", answer=_answer)
def uploads(request: HttpRequest, user) -> JsonResponse:
    body = json_body(request)
    if not isinstance(body, dict):
        return error(400, "body: send a JSON object {\"area\", \"path\", \"size\", \"sha256\"}", field="body")
    upload = upload_start(user=user, area=body.get("area"), path=body.get("path"), size=body.get("size"),
                          sha256=body.get("sha256"))
    return JsonResponse(upload_json(upload), status=201)


def _content_length(request: HttpRequest) -> int | None:
    raw = request.META.get("CONTENT_LENGTH") or ""
    return int(raw) if raw.isdigit() else None


@session_api_view("GET", "PUT", "DELETE", answer=_answer)
def upload_detail(request: HttpRequest, user, upload_id: str) -> JsonResponse:
    if request.method == "PUT":
        upload = upload_append(user=user, public_id=upload_id, content_range=request.headers.get("Content-Range", ""),
                               body=request, content_length=_content_length(request))
    elif request.method == "DELETE":
        upload = upload_abort(user=user, public_id=upload_id)
    else:
        upload = upload_get_for_user(user, upload_id)
    return JsonResponse(upload_json(upload))
