"""`/api/predict/<service>[/<rest>]`: the EAS queue service over HTTP (the watch websocket on the
same paths is in `inference/routing.py`)."""

from django.urls import path

from inference.eas import views

urlpatterns = [
    path("<path:target>", views.predict, name="eas-predict"),
]
