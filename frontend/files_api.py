"""`/api/v1/files/<area>/<path>`: the FileBrowser's JSON API (thin adapters over `tenants/files.py`).

- `GET` a folder: its entries as JSON; a file: the file, streamed as an attachment; a folder with
  `?zip=1`: the folder as a zip, streamed (413 before the first byte past `ATELIER_ZIP_MAX_BYTES`).
- `POST` `{"action": "mkdir"}` creates the folder; `{"action": "move", "to": "<path>"}` renames or
  moves within the area (201 / 200).
- `DELETE` deletes a file or a folder with what it holds.

Areas are `home` (the caller's own working directory), `team` (their team's shared folder: its
admins write) and `public` (the public model folders: operators write); every path goes through
`tenants.filespace.resolve_place`, so no URL can name another member's or another team's file.

Callers: an API token (`Authorization`), or the browser session — then a write (POST, DELETE)
needs Django's CSRF token in `X-CSRFToken`, as the `/files/` page sends it. Downloads are always
`application/octet-stream` attachments with `nosniff`: a member's file is never rendered by the
browser on this site (an uploaded `.html` or `.svg` cannot run script here). A file of the home
`outputs` folder kept in object storage is a 302 to a short-lived signed URL that answers it as
such an attachment (`response-content-disposition`), fetched from the bucket, not through here.
Routed in `config/urls.py` (the `/api/v1` adapter does not import `frontend`).
"""

from __future__ import annotations

from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.utils.http import content_disposition_header

from a1111.errors import InvalidField
from inference.api.errors import json_body, session_api_view
from tenants.files import (
    COPY_CHUNK_BYTES,
    entry_delete,
    entry_move,
    file_open,
    file_url,
    folder_create,
    folder_list,
    is_folder,
    place_path,
    zip_chunks,
    zip_plan,
)
from tenants.storage_usage import storage_usage

# A path in a URL or in `to`, in characters: percent-encoded, longer ones would pass the web server's
# 16 KiB request-line limit (the file system's own limit, 4096 bytes, is `resolve_place`'s).
MAX_PATH_CHARS = 1024


def _private(response: HttpResponse) -> HttpResponse:
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response


ZIP_VALUES = {"1": True, "true": True, "0": False, "false": False, "": False}
AREAS = ("home", "team", "public")


def _zip_wanted(value: str | None) -> bool:
    if (value or "").lower() not in ZIP_VALUES:
        raise InvalidField("must be 1 (download the folder as a zip) or left out", field="zip")
    return ZIP_VALUES[(value or "").lower()]


def _get(request: HttpRequest, user, area: str, relative: str) -> HttpResponse:
    wants_zip = _zip_wanted(request.GET.get("zip"))
    if is_folder(user, area, relative):
        if wants_zip:
            plan = zip_plan(user, area, relative)  # refusals (413 included) before the response starts
            response = StreamingHttpResponse(zip_chunks(plan), content_type="application/zip")
            response["Content-Disposition"] = content_disposition_header(True, plan.archive_name)
            return _private(response)
        listing = {**folder_list(user, area, relative).as_json(), "usage": storage_usage(user).as_json()}
        return _private(JsonResponse(listing))
    if wants_zip:
        raise InvalidField("zip=1 downloads a folder; this is a file: leave zip out", field="zip")
    url = file_url(user, area, relative)
    if url is not None:  # in object storage: fetched from there, as an attachment, through a short-lived URL
        return _private(HttpResponseRedirect(url))
    handle, name, size = file_open(user, area, relative)
    response = FileResponse(handle, as_attachment=True, filename=name, content_type="application/octet-stream")
    response["Content-Length"] = str(size)
    response.block_size = COPY_CHUNK_BYTES  # multi-GB checkpoints: 1 MiB reads, not Django's 4 KiB
    return _private(response)


def _post(request: HttpRequest, user, area: str, relative: str) -> HttpResponse:
    body = json_body(request)
    if not isinstance(body, dict):
        raise InvalidField("send a JSON object: {\"action\": \"mkdir\"} or {\"action\": \"move\", \"to\": \"…\"}",
                           field="body")
    action, to, to_area = body.get("action"), body.get("to"), body.get("to_area")
    if to is not None and (not isinstance(to, str) or len(to) > MAX_PATH_CHARS):
        raise InvalidField(f"must be a path in the same area, as text of at most {MAX_PATH_CHARS} characters",
                           field="to")
    if to_area is not None and to_area not in AREAS:
        raise InvalidField("must be home, team or public (and the URL's own area)", field="to_area")
    if action == "mkdir":
        place, entry = folder_create(user, area, relative)
        return JsonResponse({"area": area, "path": place_path(place), "entry": entry.as_json()}, status=201)
    if action == "move":
        target = entry_move(user, area, relative, to=to or "", to_area=to_area)
        return JsonResponse({"area": area, "path": place_path(target), "moved_from": relative.strip("/")})
    raise InvalidField("must be \"mkdir\" or \"move\" (DELETE deletes)", field="action")


@session_api_view("GET", "POST", "DELETE")
def files_view(request: HttpRequest, user, area: str, relative: str = "") -> HttpResponse:
    """One file or folder of the caller's areas (see the module's docstring)."""
    if len(relative) > MAX_PATH_CHARS:
        raise InvalidField(f"a path may be at most {MAX_PATH_CHARS} characters here", field="path")
    if request.method == "GET":
        return _get(request, user, area, relative)
    if request.method == "POST":
        return _post(request, user, area, relative)
    place = entry_delete(user, area, relative)
    return JsonResponse({"area": area, "path": place_path(place), "deleted": True})
