from django.urls import path

from inference.consumers import JobEventsConsumer

websocket_urlpatterns = [path("ws/jobs/<str:public_id>", JobEventsConsumer.as_asgi())]
