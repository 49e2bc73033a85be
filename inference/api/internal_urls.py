from django.urls import path

from inference.sdapi.api import internal_progress

# /internal/events (workers → web process, signed) is served before Django: inference/api/internal.py.
urlpatterns = [
    path("progress", internal_progress),  # A1111's /internal/progress, per member (force_task_id)
]
