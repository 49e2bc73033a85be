"""Root URLs."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("inference.urls")),
    path("sdapi/v1/", include("inference.a1111.urls")),
    path("controlnet/", include("inference.a1111.controlnet_urls")),  # where the extension serves them
    path("internal/", include("inference.internal_urls")),
    path("", include("frontend.urls")),
]
