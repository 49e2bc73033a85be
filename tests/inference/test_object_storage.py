"""Members' files in S3-compatible object storage (moto's server on loopback): keys under the
member's tenant, never overwritten, readable and signed for their owner's key only."""

from __future__ import annotations

import httpx
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage, storages

from inference.storage import member_file_discard, member_file_read, member_file_save, storage_error

pytestmark = pytest.mark.django_db


def test_member_files_lie_under_their_tenant_in_the_bucket(personas, s3_server, s3_storage) -> None:
    member_file_save("users/alice/outputs/a.png", b"alice")
    member_file_save("users/charlie/outputs/c.png", b"charlie")
    member_file_save("users/admin/outputs/o.png", b"operator")
    keys = s3_server.keys(s3_storage)
    assert "tenants/studio-a/users/alice/outputs/a.png" in keys
    assert "tenants/studio-b/users/charlie/outputs/c.png" in keys
    assert "platform/users/admin/outputs/o.png" in keys
    assert member_file_read("users/alice/outputs/a.png") == b"alice"


def test_a_taken_name_is_never_overwritten(personas, s3_storage) -> None:
    first = default_storage.save("users/alice/outputs/same.png", ContentFile(b"one"))
    second = default_storage.save("users/alice/outputs/same.png", ContentFile(b"two"))
    assert first == "users/alice/outputs/same.png" and second != first
    assert default_storage.open(first).read() == b"one" and default_storage.open(second).read() == b"two"


def test_urls_are_signed_and_short_lived(personas, s3_storage) -> None:
    key = member_file_save("users/alice/outputs/signed.png", b"png bytes")
    url = default_storage.url(key)
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=300" in url
    assert httpx.get(url).content == b"png bytes"
    unsigned = url.split("?", 1)[0]
    assert httpx.get(unsigned).status_code == 403  # the bucket is private: only a signed URL reads


def test_model_blobs_live_under_their_own_prefix(s3_server, s3_storage) -> None:
    storages["models"].save("0123abcd", ContentFile(b"weights"))
    assert s3_server.keys(s3_storage, "model-blobs/") == ["model-blobs/0123abcd"]


def test_a_stale_attempts_images_are_discarded_and_the_winners_kept(personas, s3_server, s3_storage) -> None:
    """Two attempts of one job store the same name; the one whose finish lost the compare-and-set
    removes its own (suffixed) key only, whichever stored first (inference/runner/batch.py)."""
    winner = member_file_save("users/alice/outputs/j_x-0.png", b"winner")
    stale = member_file_save("users/alice/outputs/j_x-0.png", b"stale")
    assert stale != winner
    member_file_discard([stale])
    assert s3_server.keys(s3_storage, "tenants/studio-a/users/alice/outputs/") == [
        "tenants/studio-a/users/alice/outputs/j_x-0.png"
    ]
    assert member_file_read(winner) == b"winner"


def test_a_storage_failure_reads_as_what_went_wrong_without_the_address() -> None:
    from botocore.exceptions import EndpointConnectionError

    error = EndpointConnectionError(endpoint_url="http://10.0.0.1:9000/bucket/users/alice/outputs/a.png")
    assert storage_error(error) == "the storage server could not be reached"
    assert storage_error(RuntimeError("boom")) == "the storage answered RuntimeError"
