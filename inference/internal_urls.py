from django.urls import path

from inference import internal

urlpatterns = [path("events", internal.events, name="internal-events")]
