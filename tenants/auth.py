"""Who is calling: API tokens in the three forms clients send, or the browser session.

* ``Authorization: Bearer <token>`` (native API, most clients)
* ``Authorization: <token>`` (PAI-EAS style)
* ``Authorization: Basic base64(username:token)`` (what A1111 clients send for --api-auth)
"""

from __future__ import annotations

import base64
import binascii

from django.contrib.auth.models import AbstractUser
from django.http import HttpRequest

from tenants.selectors import token_user


def user_from_authorization(header: str) -> AbstractUser | None:
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    scheme_lower = scheme.lower()
    if scheme_lower == "bearer":
        return token_user(rest.strip())
    if scheme_lower == "basic":
        try:
            decoded = base64.b64decode(rest.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        username, _, token = decoded.partition(":")
        user = token_user(token)
        return user if user is not None and user.get_username() == username else None
    if not rest:
        return token_user(scheme)
    return None


def request_user(request: HttpRequest) -> AbstractUser | None:
    """The authenticated caller of an API request: a token, or the session cookie on reads.

    Writes need a token: a cookie alone would let another site's page post on the user's
    behalf (CSRF), and no client of the API needs the cookie to write.
    """
    header = request.headers.get("Authorization", "")
    if header:
        return user_from_authorization(header)
    user = getattr(request, "user", None)
    if request.method in ("GET", "HEAD") and user is not None and user.is_authenticated:
        return user
    return None
