from django.urls import path

from inference.api import internal
from inference.sdapi.api import internal_progress

urlpatterns = [
    path("events", internal.events, name="internal-events"),  # workers → web process (signed)
    path("progress", internal_progress),  # A1111's /internal/progress, per member (force_task_id)
]
