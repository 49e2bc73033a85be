"""Registering a model download: who may, what is accepted (URL, folder, name, format, hash), cancel and retry."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.utils import timezone

from a1111.errors import Forbidden, InvalidField
from inference.model_downloads.fetching import ACTIVE, State
from inference.model_files import model_name_check
from inference.model_registry import MODEL_SUFFIXES, SUFFIXES_BY_KIND
from inference.models import ModelDownload
from tenants.filespace import clean_relative
from tenants.models import Membership, Tenant

# A1111's upscalers and face models ship as .pth and are read weights-only by workers: always allowed.
# Folders whose models are folders (transformers layouts), not single files: not downloadable here.
FOLDER_KINDS = frozenset({"promptgen", "BLIP", "CLIP", "interrogate", "deepbooru"})
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def download_kinds() -> list[str]:
    """The model folders a download may go to (single-file kinds)."""
    return [kind for kind in settings.ATELIER_MODEL_KINDS if kind not in FOLDER_KINDS]


def model_download_check(*, actor: AbstractUser, download: ModelDownload) -> None:
    """Refuse a registration that is malformed (`InvalidField` naming the field) or that `actor`
    may not make (`Forbidden`): operators anywhere, a tenant admin into their own team's folder."""
    if not (download.url.startswith("http://") or download.url.startswith("https://")):
        raise InvalidField("give an http:// or https:// URL", field="url")
    if download.area not in ModelDownload.Area.values:
        raise InvalidField("the area is public or team", field="area")
    if download.area == ModelDownload.Area.TEAM and download.tenant_id is None:
        raise InvalidField("name the team whose folder receives the model", field="tenant")
    if download.area == ModelDownload.Area.PUBLIC and download.tenant_id is not None:
        raise InvalidField("a public model has no team: leave the team empty", field="tenant")
    if download.kind not in download_kinds():
        raise InvalidField(f"the model folder is one of {', '.join(download_kinds())}", field="kind")
    name = clean_relative(download.file_name, field="file_name")
    if len(name.parts) != 1 or str(name) == ".":
        raise InvalidField("give a plain file name, without folders", field="file_name")
    suffix = PurePosixPath(download.file_name).suffix.lower()
    allowed = SUFFIXES_BY_KIND.get(download.kind, MODEL_SUFFIXES)
    try:  # the platform's one rule on pickled files (inference/model_files.py)
        model_name_check(download.file_name, download.kind)
    except InvalidField as refusal:
        raise InvalidField(refusal.message, field="file_name") from None
    if suffix not in allowed:
        raise InvalidField(f"a {download.kind} model is a {' or '.join(allowed)} file", field="file_name")
    download.sha256 = download.sha256.strip().lower()
    if download.sha256 and not _SHA256.match(download.sha256):
        raise InvalidField("the SHA-256 is 64 hexadecimal digits (or leave it empty)", field="sha256")
    if actor.is_staff:
        return
    admin_of = Membership.objects.filter(user=actor, role=Membership.Role.ADMIN).values_list("tenant_id", flat=True)
    if download.area != ModelDownload.Area.TEAM or download.tenant_id not in set(admin_of):
        raise Forbidden("only operators, and a team's admins for their team's folder, may register model downloads")


def model_download_register(
    *, actor: AbstractUser, url: str, kind: str, file_name: str, area: str = ModelDownload.Area.PUBLIC,
    tenant: Tenant | None = None, sha256: str = "",
) -> ModelDownload:
    """Queue a download (checked by `model_download_check`); the sweeper's downloader takes it."""
    download = ModelDownload(url=url.strip(), area=area, tenant=tenant, kind=kind, file_name=file_name,
                             sha256=sha256, created_by=actor)
    model_download_check(actor=actor, download=download)
    download.save()
    return download


def model_download_cancel(*, download: ModelDownload) -> None:
    """A queued download is cancelled now; a running one at its next progress report."""
    ModelDownload.objects.filter(pk=download.pk, state=State.QUEUED).update(
        state=State.CANCELLED, error="cancelled", finished_at=timezone.now(), updated_at=timezone.now())
    ModelDownload.objects.filter(pk=download.pk, state__in=ACTIVE).update(cancel_requested=True)


def model_download_retry(*, download: ModelDownload) -> bool:
    """Queue a failed or cancelled download again (resuming a part kept from a broken connection);
    False for any other state."""
    return bool(ModelDownload.objects.filter(pk=download.pk, state__in=(State.FAILED, State.CANCELLED)).update(
        state=State.QUEUED, error="", bytes_done=0, bytes_total=None, actual_sha256="", cancel_requested=False,
        runner="", started_at=None, finished_at=None, updated_at=timezone.now(),
    ))


