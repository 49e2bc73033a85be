"""ASGI entry point (daphne): HTTP through Django, websockets through Channels, and `/ui/…`
(HTTP and websockets) through the reverse proxy to each member's own Gradio workspace."""

import os
from urllib.parse import urlsplit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import WebsocketDenier  # noqa: E402
from django.conf import settings  # noqa: E402
from django.http.request import validate_host  # noqa: E402
from django.urls import re_path  # noqa: E402

from frontend.proxy import MOUNT, WorkspaceProxy  # noqa: E402
from frontend.sessions.manager import WorkspaceManager  # noqa: E402
from inference.routing import websocket_urlpatterns  # noqa: E402

DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_key(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) with the default port filled in; None for anything unparsable."""
    scheme = scheme.lower()
    if scheme not in DEFAULT_PORTS or not netloc:
        return None
    try:
        parsed = urlsplit(f"{scheme}://{netloc}")
        port = parsed.port or DEFAULT_PORTS[scheme]
    except ValueError:
        return None
    if not parsed.hostname or parsed.username or parsed.password:
        return None
    return scheme, parsed.hostname.lower(), port


def _request_scheme(scope) -> str:
    """The scheme the browser used: wss/https directly, or as SECURE_PROXY_SSL_HEADER says."""
    proxy_header = settings.SECURE_PROXY_SSL_HEADER
    if proxy_header:
        name, expected = proxy_header
        wanted = name.lower().removeprefix("http_").replace("_", "-").encode()
        for key, value in scope.get("headers", ()):
            if key == wanted and value.decode("latin-1").split(",")[0].strip() == expected:
                return "https"
    return "https" if scope.get("scheme") in ("https", "wss") else "http"


def websocket_origin_allowed(scope) -> bool:
    """Whether a websocket handshake may go on, judged by its Origin header.

    No Origin: a script (it has no cookie and authenticates with its token), allowed. With an
    Origin (browsers always send one): it must be this very server -- scheme, host and port of
    the request's own Host header, that host being one of ALLOWED_HOSTS -- or be listed in
    CSRF_TRUSTED_ORIGINS. Matching ALLOWED_HOSTS patterns alone would let any port on the same
    host (another, less trusted service) open a socket with the member's cookie.
    """
    headers = dict(scope.get("headers") or [])
    raw_origin = headers.get(b"origin")
    if raw_origin is None:
        return True
    origin = raw_origin.decode("latin-1").strip()
    parsed = urlsplit(origin)
    origin_key = _origin_key(parsed.scheme, parsed.netloc)
    if origin_key is None:
        return False  # "null" (sandboxed frames, file://) and garbage
    trusted = {_origin_key(urlsplit(o).scheme, urlsplit(o).netloc) for o in settings.CSRF_TRUSTED_ORIGINS}
    if origin_key in trusted:
        return True
    host = headers.get(b"host", b"").decode("latin-1").strip()
    own_key = _origin_key(_request_scheme(scope), host)
    return own_key is not None and origin_key == own_key and validate_host(own_key[1], settings.ALLOWED_HOSTS)


class BrowserOriginValidator:
    """Refuses (403 at the handshake) a websocket whose Origin is not this server's own."""

    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not websocket_origin_allowed(scope):
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

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            path = scope["path"]
            if path == MOUNT or path.startswith(MOUNT + "/"):
                return await self.workspace_proxy(scope, receive, send)
        return await self.platform(scope, receive, send)


application = AtelierApplication()
