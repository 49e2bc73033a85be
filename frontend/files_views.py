"""The FileBrowser page (`/files/`): a member's home, their team's folder and the public model
folders, listed on the server, with actions (new folder, rename, move, delete, download, folder
as zip) that `static/frontend/files.js` sends to the JSON API (`frontend/files_api.py`).

`?area=home|team|public&path=<folder>` picks the folder; everything is read through
`tenants.files.folder_list` (and so `tenants.filespace.resolve_place`), so the page shows nothing
the API would not. Times are in the tenant's time zone. The page holds `<section id="uploads">`
(with the folder in its data attributes) and loads `frontend/uploads.js`, the uploader.
No inline script or style: the site's Content-Security-Policy allows neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlencode

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from a1111.errors import RequestError
from frontend.member_selectors import language_for_user
from frontend.workspace.i18n import strings
from inference.api.errors import error_answer
from tenants.files import Listing, folder_list
from tenants.models import Membership
from tenants.selectors import membership_for_user

AREA_LABELS = {"home": "My files", "team": "Team", "public": "Public models"}


@dataclass(frozen=True)
class Crumb:
    name: str
    url: str


def page_url(area: str, path: str = "") -> str:
    query = {"area": area, **({"path": path} if path else {})}
    return f"/files/?{urlencode(query)}"


def api_url(area: str, path: str) -> str:
    return f"/api/v1/files/{area}/{quote(path, safe='/')}"


def _rows(listing: Listing) -> list[dict]:
    rows = []
    for entry in listing.entries:
        path = f"{listing.path}/{entry.name}" if listing.path else entry.name
        rows.append({
            "entry": entry,
            "path": path,
            "open_url": page_url(listing.area, path) if entry.is_folder else None,
            "download_url": api_url(listing.area, path) + ("?zip=1" if entry.is_folder else ""),
        })
    return rows


def _crumbs(area: str, path: str) -> list[Crumb]:
    crumbs = [Crumb(AREA_LABELS[area] if area in AREA_LABELS else area, page_url(area))]
    parts = [part for part in path.split("/") if part]
    for index, part in enumerate(parts):
        crumbs.append(Crumb(part, page_url(area, "/".join(parts[: index + 1]))))
    return crumbs


@login_required
@require_GET
def files_page(request: HttpRequest) -> HttpResponse:
    """One folder of the caller's areas, with its actions; a refused folder says why (its status)."""
    user = request.user
    membership = membership_for_user(user)
    areas = (["home", "team"] if membership else []) + ["public"]
    area = request.GET.get("area") or areas[0]
    path = (request.GET.get("path") or "").strip("/")
    listing, problem, status = None, "", 200
    try:
        listing = folder_list(user, area, path)
    except RequestError as exc:
        problem, status = str(exc).removeprefix("path: ").removeprefix("area: "), error_answer(exc).status
    crumbs = _crumbs(area, path)
    context = {
        "t": strings(language_for_user(user)),
        "is_tenant_admin": membership is not None and membership.role == Membership.Role.ADMIN,
        "time_zone": membership.tenant.time_zone if membership else "UTC",
        "areas": [(name, AREA_LABELS[name], page_url(name)) for name in areas],
        "area": area,
        "path": path,
        "listing": listing,
        "rows": _rows(listing) if listing else [],
        "crumbs": crumbs,
        "parent_url": crumbs[-2].url if len(crumbs) > 1 else None,
        "zip_url": api_url(area, path) + "?zip=1",
        "problem": problem,
        # the public area's root lists the model folders; files go inside one of them
        "at_public_root": area == "public" and not path,
    }
    return render(request, "frontend/files.html", context, status=status)
