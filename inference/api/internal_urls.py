from django.urls import path

from inference.api import internal

urlpatterns = [path("events", internal.events, name="internal-events")]
