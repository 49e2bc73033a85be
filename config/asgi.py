"""ASGI entry point (daphne): HTTP through Django, websockets through Channels, `/ui/…`
(HTTP and websockets) through the reverse proxy to each member's own Gradio workspace, and the
workers' signed job events (`/internal/events`, `inference/api/internal.py`) straight onto the
channel layer."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import WebsocketDenier  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import re_path  # noqa: E402

from frontend.origins import origin_allowed  # noqa: E402
from frontend.proxy import MOUNT, WorkspaceProxy  # noqa: E402
from inference.api.internal import EVENTS_PATH, events_app  # noqa: E402
from frontend.sessions.manager import WorkspaceManager  # noqa: E402
from inference.routing import websocket_urlpatterns  # noqa: E402

class BrowserOriginValidator:
    """Refuses (403 at the handshake) a websocket whose Origin is not this server's own."""

    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)


def _http_app():
    if settings.SERVE_STATIC:
        from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
        from django.core.exceptions import SuspiciousFileOperation
        from django.http import HttpResponseNotFound

        class StaticFilesHandler(ASGIStaticFilesHandler):
            """Django's, with a `..` path that escapes the static folder answered 404, not 500
            (Django's handler turns only Http404 into a response)."""

            async def get_response_async(self, request):
                try:
                    return await super().get_response_async(request)
                except SuspiciousFileOperation:
                    return HttpResponseNotFound(b"Not Found", content_type="text/plain")

        return StaticFilesHandler(django_asgi_app)
    return django_asgi_app


class AtelierApplication:
    """The platform's ASGI app. It owns the workspace session manager (and so its processes)."""

    def __init__(self) -> None:
        self.workspaces = WorkspaceManager.from_settings()
        self.workspace_proxy = WorkspaceProxy(self.workspaces)
        self.platform = ProtocolTypeRouter(
            {
                "http": _http_app(),
                "websocket": BrowserOriginValidator(
                    AuthMiddlewareStack(
                        URLRouter([
                            *websocket_urlpatterns,
                            # Anything else: refused at the handshake (403), not a routing error.
                            re_path(r"", WebsocketDenier.as_asgi()),
                        ])
                    )
                ),
            }
        )

    def server_started(self) -> None:
        """Called by the web server (`config/webserver.py`) on its event loop once it serves:
        the session manager starts its monitor and boots the spare workspace processes now, not
        at the first `/ui/` request."""
        self.workspaces.prewarm()

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            path = scope["path"]
            if path == MOUNT or path.startswith(MOUNT + "/"):
                return await self.workspace_proxy(scope, receive, send)
            if path == EVENTS_PATH and scope["type"] == "http":
                return await events_app(scope, receive, send)
        return await self.platform(scope, receive, send)


application = AtelierApplication()
