"""Root URLs."""

from django.contrib import admin
from django.urls import include, path

from frontend.extensions_api import sdapi_extensions

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("inference.api.urls")),
    path("api/predict/", include("inference.eas.urls")),  # PAI-EAS's async queue service
    # the workspace's extensions, in A1111's shape (frontend owns them; the adapter cannot import it)
    path("sdapi/v1/extensions", sdapi_extensions),
    path("sdapi/v1/", include("inference.sdapi.urls")),
    path("controlnet/", include("inference.sdapi.controlnet_urls")),  # where the extension serves them
    path("internal/", include("inference.api.internal_urls")),
    path("", include("frontend.urls")),
]
