"""ASGI entry point (daphne): HTTP through Django, websockets through Channels, and `/ui/…`
(HTTP and websockets) through the reverse proxy to each member's own Gradio workspace."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import OriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from frontend.proxy import MOUNT, WorkspaceProxy  # noqa: E402
from frontend.sessions.manager import WorkspaceManager  # noqa: E402
from inference.routing import websocket_urlpatterns  # noqa: E402


class BrowserOriginValidator(OriginValidator):
    """Refuse cross-site browser websockets; let scripts without an Origin header through.

    Browsers always send Origin on a websocket, so a cookie can only ride along from a page
    on an allowed host. A script has no cookie and authenticates with its token instead.
    """

    def valid_origin(self, parsed_origin):
        return parsed_origin is None or super().valid_origin(parsed_origin)


def _http_app():
    if settings.SERVE_STATIC:
        from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

        return ASGIStaticFilesHandler(django_asgi_app)
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
                    AuthMiddlewareStack(URLRouter(websocket_urlpatterns)), settings.ALLOWED_HOSTS
                ),
            }
        )

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            path = scope["path"]
            if path == MOUNT or path.startswith(MOUNT + "/"):
                return await self.workspace_proxy(scope, receive, send)
        return await self.platform(scope, receive, send)


application = AtelierApplication()
