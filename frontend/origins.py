"""Is this request for this site, from this site? One answer for Django's websockets
(`config/asgi.py`) and the workspace proxy (`frontend/proxy.py`).

* `request_scheme`: the scheme the browser used (`wss`/`https` directly, or as
  `SECURE_PROXY_SSL_HEADER` says behind a TLS-terminating proxy).
* `host_allowed`: the `Host` header names one of `ALLOWED_HOSTS`, as Django checks for its pages.
* `origin_allowed`: a browser's `Origin`, when there is one, is this very server (scheme, host
  and port of the request's own `Host`, that host allowed) or one of `CSRF_TRUSTED_ORIGINS`.
  Matching `ALLOWED_HOSTS` patterns alone would let another port of the same host (another,
  less trusted service) act with the member's cookie. No `Origin`: not a browser; scripts
  authenticate with a token and carry no cookie.

Pure functions of an ASGI scope and the settings; nothing heavy imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host

DEFAULT_PORTS = {"http": 80, "https": 443}
Scope = Mapping[str, Any]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1").strip()
    return None


def origin_key(scheme: str, netloc: str) -> tuple[str, str, int] | None:
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


def request_scheme(scope: Scope) -> str:
    """`https` or `http`: what the browser used, directly or as SECURE_PROXY_SSL_HEADER says."""
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        name, expected = proxy_header
        wanted = name.lower().removeprefix("http_").replace("_", "-").encode()
        for key, value in scope.get("headers", ()):
            if key == wanted and value.decode("latin-1").split(",")[0].strip() == expected:
                return "https"
    return "https" if scope.get("scheme") in ("https", "wss") else "http"


def _allowed_hosts() -> list[str]:
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return allowed


def host_allowed(scope: Scope) -> bool:
    """The Host header names this site (ALLOWED_HOSTS)."""
    host = _header(scope, b"host")
    if not host:
        return False
    domain, _port = split_domain_port(host)
    return bool(domain) and validate_host(domain, _allowed_hosts())


def origin_allowed(scope: Scope) -> bool:
    """No Origin, or an Origin that is this server's own or a trusted one (see the module docstring)."""
    raw_origin = _header(scope, b"origin")
    if raw_origin is None:
        return True
    parsed = urlsplit(raw_origin)
    key = origin_key(parsed.scheme, parsed.netloc)
    if key is None:
        return False  # "null" (sandboxed frames, file://) and garbage
    trusted = {origin_key(urlsplit(o).scheme, urlsplit(o).netloc) for o in settings.CSRF_TRUSTED_ORIGINS}
    if key in trusted:
        return True
    own = origin_key(request_scheme(scope), _header(scope, b"host") or "")
    return own is not None and key == own and validate_host(own[1], _allowed_hosts())
