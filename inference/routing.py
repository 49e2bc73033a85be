from django.urls import path, re_path

from inference.consumers import JobEventsConsumer
from inference.eas.watch import QueueWatchConsumer

websocket_urlpatterns = [
    path("ws/jobs/<str:public_id>", JobEventsConsumer.as_asgi()),
    # The EAS queue's watch (`_watch_=true`): the same path as its HTTP calls, `<service>[/<rest>]`.
    re_path(r"^api/predict/(?P<service>[^/]+)(?:/(?P<rest>.*))?$", QueueWatchConsumer.as_asgi()),
]
