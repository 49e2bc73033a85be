"""Object storage (S3, Alibaba OSS, MinIO) as settings: what `STORAGES` holds when a bucket is set.

Pure: builds dicts from plain values, so `config/settings.py` (from the environment) and the
tests (a moto server they start on loopback) configure the same backends the same way.

Two storages, one bucket:

* `default`: members' files that the platform writes (outputs, stored inputs) under
  `tenants/<tenant>/users/<name>/…` (`inference.object_storage.MemberObjectStorage` adds the
  tenant from the key's member). Never overwritten: a name already taken gets a suffix.
  Served to their owner through short-lived signed URLs (`signed_url_seconds`).
* `models`: model files by content, `model-blobs/<sha256>` (a diffusers folder's files under
  `model-blobs/<sha256>/…`), which workers on other machines fetch into their local cache
  (`inference/model_cache.py`). Written once per content; never overwritten.

Why path-style addressing by default when an endpoint is given: MinIO and moto answer on one host
name; Alibaba OSS wants virtual-hosted style (`ATELIER_S3_ADDRESSING_STYLE=virtual`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MEMBER_STORAGE_BACKEND = "inference.object_storage.MemberObjectStorage"
MODEL_STORAGE_BACKEND = "inference.object_storage.ModelBlobStorage"
LOCAL_STORAGE_BACKEND = "django.core.files.storage.FileSystemStorage"


@dataclass(frozen=True)
class ObjectStorageConfig:
    bucket: str
    endpoint_url: str = ""  # empty: AWS itself
    region: str = ""
    access_key: str = ""  # empty: boto3's own chain (environment, instance role, …)
    secret_key: str = ""
    prefix: str = ""  # every key under this folder of the bucket
    addressing_style: str = ""  # "path" or "virtual"; empty: path with an endpoint, else boto3's choice
    signed_url_seconds: int = 300


def _s3_options(config: ObjectStorageConfig, location: str) -> dict[str, Any]:
    options: dict[str, Any] = {
        "bucket_name": config.bucket,
        "location": "/".join(part for part in (config.prefix.strip("/"), location) if part),
        "file_overwrite": False,  # a name taken gets a suffix; nothing is ever replaced
        "querystring_auth": True,  # every URL is signed ...
        "querystring_expire": config.signed_url_seconds,  # ... and short-lived
        "default_acl": None,  # the bucket's own (private) policy
        "signature_version": "s3v4",
    }
    if config.endpoint_url:
        options["endpoint_url"] = config.endpoint_url
    if config.region:
        options["region_name"] = config.region
    if config.access_key:
        options["access_key"] = config.access_key
        options["secret_key"] = config.secret_key
    style = config.addressing_style or ("path" if config.endpoint_url else "")
    if style:
        options["addressing_style"] = style
    return options


def object_storages(config: ObjectStorageConfig) -> dict[str, dict[str, Any]]:
    """The `default` and `models` entries of `STORAGES` for `config`."""
    return {
        "default": {"BACKEND": MEMBER_STORAGE_BACKEND, "OPTIONS": _s3_options(config, "")},
        "models": {"BACKEND": MODEL_STORAGE_BACKEND, "OPTIONS": _s3_options(config, "model-blobs")},
    }


def local_storages(data_dir: str) -> dict[str, dict[str, Any]]:
    """The embedded default: members' files under DATA_DIR; no model blob store (every process
    reads the model folders themselves)."""
    return {"default": {"BACKEND": LOCAL_STORAGE_BACKEND, "OPTIONS": {"location": data_dir}}}
