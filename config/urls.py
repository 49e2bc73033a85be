"""Root URLs."""

from django.contrib import admin
from django.urls import include, path

from config.observability import healthz, metrics, readyz
from frontend.extensions_api import sdapi_extensions
from frontend.files_api import files_view
from frontend.uploads_api import upload_detail, uploads
from frontend.views import api_docs
from inference.openapi.views import openapi_json

urlpatterns = [
    path("admin/", admin.site.urls),
    # resumable uploads into the file areas (frontend owns them: tenants/uploads.py does the work)
    path("api/v1/uploads", uploads, name="api-uploads"),
    path("api/v1/uploads/<str:upload_id>", upload_detail, name="api-upload"),
    # the FileBrowser's API (frontend/files_api.py; an area's root, then a path inside it)
    path("api/v1/files/<str:area>/", files_view, name="api-files-root"),
    path("api/v1/files/<str:area>/<path:relative>", files_view, name="api-files"),
    path("api/v1/", include("inference.api.urls")),
    path("api/predict/", include("inference.eas.urls")),  # PAI-EAS's async queue service
    # the workspace's extensions, in A1111's shape (frontend owns them; the adapter cannot import it)
    path("sdapi/v1/extensions", sdapi_extensions),
    path("sdapi/v1/", include("inference.sdapi.urls")),
    path("controlnet/", include("inference.sdapi.controlnet_urls")),  # where the extension serves them
    path("openapi.json", openapi_json, name="openapi"),  # where A1111 (FastAPI) serves its schema
    path("docs", api_docs, name="api-docs"),  # and its interactive page
    path("internal/", include("inference.api.internal_urls")),
    path("healthz", healthz, name="healthz"),  # probes and metrics: config/observability.py
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    path("", include("frontend.urls")),
]

handler404 = "inference.api.errors.page_not_found"  # JSON under the API prefixes
