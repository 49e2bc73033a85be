"""Root URLs."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("inference.api.urls")),
    path("api/predict/", include("inference.eas.urls")),  # PAI-EAS's async queue service
    path("sdapi/v1/", include("inference.sdapi.urls")),
    path("controlnet/", include("inference.sdapi.controlnet_urls")),  # where the extension serves them
    path("internal/", include("inference.api.internal_urls")),
    path("", include("frontend.urls")),
]
