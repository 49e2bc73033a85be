"""The platform's two S3 storages (selected by `config/object_storage.py` when a bucket is set).

* `MemberObjectStorage`: members' files. The platform names them as everywhere else,
  `users/<name>/…`; in the bucket each lies under its member's tenant,
  `tenants/<tenant slug>/users/<name>/…` (operators without a tenant: `platform/users/<name>/…`),
  so a tenant's files are one prefix for lifecycle rules, replication, cost reports and deletion.
  The tenant is looked up once per member name and remembered by this storage object (a member
  never changes tenant: `Membership.user` is one-to-one and the admin never moves it).
* `ModelBlobStorage`: model files by content (`<sha256>` under the `model-blobs/` location).

Both never overwrite (`file_overwrite=False`: a taken name gets a suffix) and sign every URL for
`ATELIER_S3_SIGNED_URL_SECONDS`.
"""

from __future__ import annotations

from storages.backends.s3 import S3Storage

MEMBER_PREFIX = "users/"
NO_TENANT_FOLDER = "platform"
_REMEMBERED_MEMBERS = 10_000  # member → tenant answers kept; past this the memory starts again


class MemberObjectStorage(S3Storage):
    """S3 storage whose `users/<name>/…` keys live under their member's tenant in the bucket."""

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        self._tenant_folders: dict[str, str] = {}

    def tenant_folder(self, username: str) -> str:
        """The bucket folder of `username`'s tenant: `tenants/<slug>`, or `platform`."""
        folder = self._tenant_folders.get(username)
        if folder is None:
            from tenants.models import Membership

            slug = Membership.objects.filter(user__username=username).values_list("tenant__slug", flat=True).first()
            folder = f"tenants/{slug}" if slug else NO_TENANT_FOLDER
            if len(self._tenant_folders) >= _REMEMBERED_MEMBERS:
                self._tenant_folders.clear()
            self._tenant_folders[username] = folder
        return folder

    def bucket_key(self, name: str) -> str:
        """Where the platform's key `name` lies in the bucket, relative to the storage's location."""
        if name.startswith(MEMBER_PREFIX):
            username = name[len(MEMBER_PREFIX):].split("/", 1)[0]
            if username:
                return f"{self.tenant_folder(username)}/{name}"
        return name

    def _normalize_name(self, name: str) -> str:  # every operation of S3Storage passes through here
        return super()._normalize_name(self.bucket_key(name))


class ModelBlobStorage(S3Storage):
    """S3 storage of model files by content: `<sha256>` (a folder's files under `<sha256>/`)."""
