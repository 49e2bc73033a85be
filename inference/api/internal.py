"""`/internal/events`: where worker processes hand job events to the web process (embedded default)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from inference.events import SIGNATURE_HEADER, group_publish, verify
from inference.api.errors import JsonBodyError, parse_json


@csrf_exempt
@require_POST
def events(request: HttpRequest) -> HttpResponse:
    if not verify(request.body, request.headers.get(SIGNATURE_HEADER, "")):
        return JsonResponse({"error": "bad signature"}, status=403)
    try:
        message = parse_json(request.body)
    except JsonBodyError as exc:
        return JsonResponse({"error": exc.message}, status=400)
    if not isinstance(message, dict):
        return JsonResponse({"error": "expected {group: 'job.<id>', event: {...}}"}, status=400)
    group, event = message.get("group"), message.get("event")
    if not isinstance(group, str) or not group.startswith("job.") or not isinstance(event, dict):
        return JsonResponse({"error": "expected {group: 'job.<id>', event: {...}}"}, status=400)
    group_publish(group, event)
    return HttpResponse(status=204)
