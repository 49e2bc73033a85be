"""`GET /openapi.json`: the OpenAPI document of this deployment (public, as A1111 serves it).

The document describes routes and limits, never anyone's data, and client generators fetch
it without credentials; the interactive page that uses it (`/docs`) is for signed-in members.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from inference.limits import generation_limits
from inference.openapi.document import build_document


@require_GET
def openapi_json(request: HttpRequest) -> JsonResponse:
    response = JsonResponse(build_document(generation_limits(), server_url=request.build_absolute_uri("/")))
    response["Cache-Control"] = "no-cache"
    return response
