"""Model blobs in object storage (moto's server on loopback) and a worker's hash-keyed cache of
them (`inference/model_blobs.py`, `inference/model_cache.py`): published once by sha256, never
overwritten; fetched once per host, verified, evicted least recently used, never while in use."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import storages

from inference.jobspec import ModelRef
from inference.model_blobs import model_blob_publish, model_blobs_publish, model_refs_in
from inference.model_cache import ModelCache, ModelFiles, ModelUnavailable
from inference.models import ModelBlob

pytestmark = pytest.mark.django_db


def _model(folder: Path, name: str, payload: bytes) -> tuple[Path, ModelRef]:
    """A model file somewhere only the publisher has, named by a key no worker has on disk."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    sha256 = hashlib.sha256(payload).hexdigest()
    return path, ModelRef(f"users/elsewhere/models/Lora/{name}", sha256)


def _published(folder: Path, name: str, payload: bytes) -> ModelRef:
    path, ref = _model(folder, name, payload)
    model_blob_publish(path, ref.sha256)
    return ref


def _cache(tmp_path: Path, max_bytes: int = 10**9) -> ModelCache:
    return ModelCache(root=tmp_path / "worker-cache" / "models", max_bytes=max_bytes, storage=storages["models"])


def test_a_file_and_a_folder_are_published_by_sha256_once(s3_server, s3_storage, tmp_path, django_assert_num_queries) -> None:
    ref = _published(tmp_path / "web", "style.safetensors", b"lora weights")
    folder = tmp_path / "web" / "blip"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"blip weights")
    (folder / "sub" / "config.json").write_text("{}")
    folder_sha = hashlib.sha256(b"blip weights").hexdigest()
    model_blob_publish(folder, folder_sha)
    assert s3_server.keys(s3_storage, "model-blobs/") == sorted([
        f"model-blobs/{ref.sha256}", f"model-blobs/{folder_sha}/model.safetensors", f"model-blobs/{folder_sha}/sub/config.json",
    ])
    assert ModelBlob.objects.get(sha256=folder_sha).files == ["model.safetensors", "sub/config.json"]
    with django_assert_num_queries(1):  # all published: one query, nothing uploaded
        model_blobs_publish([ref, ModelRef("public/models/BLIP/blip", folder_sha)])


def test_an_object_already_in_the_store_is_never_overwritten(s3_storage, tmp_path) -> None:
    path, ref = _model(tmp_path / "web", "kept.safetensors", b"the real weights")
    storages["models"].save(ref.sha256, ContentFile(b"the real weights"))  # a publisher before the row
    model_blob_publish(path, ref.sha256)
    assert storages["models"].open(ref.sha256).read() == b"the real weights"
    assert ModelBlob.objects.filter(sha256=ref.sha256).exists()


def test_job_params_name_their_models_at_any_depth() -> None:
    params = {"models": {"checkpoint": {"key": "public/models/Stable-diffusion/a.safetensors", "sha256": "a" * 64}},
              "resolved_models": {"categories": [{"name": "x", "key": "public/models/interrogate/x.txt", "sha256": "b" * 64}]},
              "path": {"key": "/etc/passwd", "sha256": "c" * 64}}
    assert {ref.sha256 for ref in model_refs_in(params)} == {"a" * 64, "b" * 64}


def test_a_model_is_fetched_once_for_two_jobs_and_keeps_its_name(s3_storage, tmp_path) -> None:
    ref = _published(tmp_path / "web", "style.safetensors", b"lora weights")
    cache = _cache(tmp_path)
    first = cache.local_path(ref)
    second = cache.local_path(ref)
    assert first == second and first.name == "style.safetensors" and first.parent.name == ref.sha256
    assert first.read_bytes() == b"lora weights"
    assert cache.fetches == 1
    # what the worker reports (`ModelFiles.counts` → Worker.model_counters → /metrics)
    assert ModelFiles(cache).counts() == {"blob_hits": 1, "blob_fetches": 1, "blob_fetched_bytes": len(b"lora weights")}


def test_a_folder_is_fetched_as_a_folder(s3_storage, tmp_path) -> None:
    folder = tmp_path / "web" / "gpt2"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"gpt2 weights")
    (folder / "config.json").write_text('{"n": 1}')
    sha = hashlib.sha256(b"gpt2 weights").hexdigest()
    model_blob_publish(folder, sha)
    local = _cache(tmp_path).local_path(ModelRef("public/models/promptgen/gpt2", sha))
    assert local.name == "gpt2" and (local / "config.json").read_text() == '{"n": 1}'


def test_a_file_on_this_machine_with_its_hash_is_used_as_it_is(s3_storage, tmp_path) -> None:
    path = Path(settings.DATA_DIR) / "users" / "alice" / "models" / "Lora" / "here-cache-test.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"local lora")
    try:
        ref = ModelRef("users/alice/models/Lora/here-cache-test.safetensors", hashlib.sha256(b"local lora").hexdigest())
        cache = _cache(tmp_path)
        assert cache.local_path(ref) == path.resolve() and cache.fetches == 0
        with pytest.raises(ModelUnavailable, match="here-cache-test.safetensors"):  # another hash: not this file
            cache.local_path(ModelRef(ref.key, "0" * 64))
    finally:
        path.unlink()


def test_a_blob_whose_content_does_not_match_its_hash_is_refused(s3_storage, tmp_path) -> None:
    sha = hashlib.sha256(b"what was promised").hexdigest()
    storages["models"].save(sha, ContentFile(b"something else"))
    cache = _cache(tmp_path)
    with pytest.raises(ModelUnavailable, match="does not match its sha256"):
        cache.local_path(ModelRef("users/elsewhere/models/Lora/bad.safetensors", sha))
    assert cache.cached() == []  # nothing half-fetched left behind
    assert not [p for p in cache.root.iterdir() if p.name.startswith(".fetch")]


def test_a_missing_blob_fails_naming_the_model(s3_storage, tmp_path) -> None:
    with pytest.raises(ModelUnavailable, match="'ghost.safetensors' is not on this worker and not in the model store"):
        _cache(tmp_path).local_path(ModelRef("users/elsewhere/models/Lora/ghost.safetensors", "f" * 64))


def test_the_least_recently_used_is_evicted_past_the_limit(s3_storage, tmp_path) -> None:
    a, b, c = (_published(tmp_path / "web", f"{n}.safetensors", n.encode() * 100) for n in "abc")
    cache = _cache(tmp_path, max_bytes=250)
    cache.local_path(a)
    cache.local_path(b)
    os.utime(cache.root / a.sha256, ns=(1, 1))
    os.utime(cache.root / b.sha256, ns=(2, 2))
    cache.local_path(a)  # used again: now the most recent
    cache.local_path(c)  # 300 bytes > 250: b goes
    assert set(cache.cached()) == {a.sha256, c.sha256}
    cache.local_path(b)  # back again (fetched anew): a, now the least recent, goes
    assert cache.cached() == [c.sha256, b.sha256] and cache.fetches == 4


def test_a_model_in_use_is_never_evicted(s3_storage, tmp_path) -> None:
    a, b, c, d = (_published(tmp_path / "web", f"{n}.safetensors", n.encode() * 100) for n in "abcd")
    cache = _cache(tmp_path, max_bytes=150)
    other_process = _cache(tmp_path, max_bytes=150)  # another worker process on this host
    with cache.batch():
        cache.local_path(a)
        cache.local_path(b)  # over the limit, but a is this batch's
        other_process.local_path(c)  # neither a nor b: both in use by the batch
        assert set(cache.cached()) == {a.sha256, b.sha256, c.sha256}
    other_process.local_path(d)  # the batch is over: the others may go now
    assert cache.cached() == [d.sha256]


def _fetch_in_child(root: str, sha256: str, barrier) -> None:
    """Runs in a forked process: it never touches the database (the parent's connection is not its
    own) and leaves with os._exit, so nothing of the parent's is closed or flushed from here."""
    storage = storages.create_storage(settings.STORAGES["models"])
    cache = ModelCache(root=Path(root), max_bytes=10**9, storage=storage)
    barrier.wait()
    path = cache.local_path(ModelRef("users/elsewhere/models/Lora/shared.safetensors", sha256))
    assert path.read_bytes() == b"shared weights" * 1000
    os._exit(10 + cache.fetches)


def test_two_processes_on_one_host_fetch_a_model_once(s3_storage, tmp_path) -> None:
    ref = _published(tmp_path / "web", "shared.safetensors", b"shared weights" * 1000)
    root = tmp_path / "worker-cache" / "models"
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    children = [context.Process(target=_fetch_in_child, args=(str(root), ref.sha256, barrier)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    assert sorted(child.exitcode for child in children) == [10, 11]  # one fetched, the other found it


def test_without_a_blob_store_files_are_read_where_they_are(tmp_path) -> None:
    files = ModelFiles.from_settings()
    assert files.cache is None
    ref = ModelRef("public/models/Lora/anything.safetensors", "0" * 64)
    assert files.path(ref).endswith("anything.safetensors")


def test_a_file_is_never_published_under_a_hash_it_does_not_have(s3_server, s3_storage, tmp_path) -> None:
    from inference.model_blobs import ModelBlobError

    path, _ = _model(tmp_path / "web", "swapped.safetensors", b"new content")
    with pytest.raises(ModelBlobError, match="'swapped.safetensors' changed"):
        model_blob_publish(path, hashlib.sha256(b"old content").hexdigest())
    assert s3_server.keys(s3_storage, "model-blobs/") == []
