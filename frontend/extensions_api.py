"""`GET /sdapi/v1/extensions`: the platform's installed extensions in A1111's shape, per member.

A1111 lists the extensions in its `extensions/` folder with their git state; here an extension is
one an operator installed (an `Extension` row, `frontend/preferences.py`), shipped with the
platform rather than cloned: `remote` and `commit_hash` are empty, `version` is the platform's,
and `enabled` is the caller's own switch (their choice, else the operator's default), so a
script can tell whether the member's workspace shows BeautifulPrompt or the style picker.
Served from here (routed in `config/urls.py` ahead of the `/sdapi/v1` adapter) because the
extensions belong to the workspace, which the control plane does not import.
"""

from __future__ import annotations

from django.http import HttpRequest

from a1111.infotext import VERSION as PLATFORM_VERSION
from frontend.member_selectors import extensions_for_user
from inference.sdapi.adapter import sdapi


@sdapi("GET")
def sdapi_extensions(request: HttpRequest, user) -> list[dict]:
    return [
        {
            "name": extension.name,
            "remote": "",
            "branch": "builtin",
            "commit_hash": "",
            "version": PLATFORM_VERSION,
            "commit_date": 0,
            "enabled": extension.enabled and extension.available,
        }
        for extension in extensions_for_user(user)
    ]
