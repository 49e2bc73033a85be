"""A worker that shares no file system with the web process (issue 17's done-when).

The platform's web process and sweeper run with an S3-compatible server (moto on loopback); its
only worker runs with a DATA_DIR of its own, empty, and has only the database, Redis and the
bucket in common with them. alice uploads her own checkpoint and LoRA through `/api/v1/uploads`,
submits a txt2img job naming both, and gets her PNG; the worker read both models from the blob
store into its hash-keyed cache, once (a second job fetches nothing), and never saw the web
process's folders. Cluster mode only: the embedded default's database and broker are files in
the web process's DATA_DIR.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from inference.processes import worker_command
from tests.harness import REPO, Platform, running_platform

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.single_mode,
    pytest.mark.skipif(
        not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")),
        reason="a worker on another host shares only PostgreSQL, Redis and the bucket (cluster mode)",
    ),
]

CHECKPOINT = "alice-own.safetensors"
LORA = "alice-ink.safetensors"
REMOTE = "remote"
JOB = {"width": 64, "height": 64, "steps": 3, "sampler_name": "Euler", "seed": 5,
       "override_settings": {"sd_model_checkpoint": "alice-own"}}


@pytest.fixture(scope="module")
def bucket(s3_server) -> str:
    return s3_server.bucket_create()


@pytest.fixture(scope="module")
def worker_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="atelier-remote-worker-"))
    yield folder
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def _start_remote_worker(platform: Platform, worker_dir: Path) -> None:
    """The platform's worker (tests/e2e/holding.py's app) with its own DATA_DIR: what it shares
    with the web process is the database, Redis, the bucket and the secret key, nothing else."""
    env = {
        **platform.env(worker=True),
        "DATA_DIR": str(worker_dir),
        "ATELIER_PROBE_DIR": str(worker_dir / "probes"),
        "SECRET_KEY": (platform.data_dir / "secret_key").read_text(),
    }
    log = open(platform.data_dir / f"{REMOTE}.log", "ab")  # noqa: SIM115 - closed with the process
    platform.processes[REMOTE] = subprocess.Popen(
        worker_command(platform.worker_name(REMOTE), app="tests.e2e.holding"), cwd=REPO, env=env,
        stdout=log, stderr=subprocess.STDOUT,
    )
    platform.wait_for_workers(1)


@pytest.fixture(scope="module")
def platform(s3_server, bucket, worker_dir) -> Iterator[Platform]:
    with running_platform(workers=0, env_overrides=s3_server.storage_environment(bucket)) as platform:
        _start_remote_worker(platform, worker_dir)
        yield platform


def _upload(platform: Platform, user: str, path: str, data: bytes) -> None:
    headers = platform.headers(user)
    started = httpx.post(f"{platform.base_url}/api/v1/uploads", headers=headers, timeout=30, json={
        "area": "home", "path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    assert started.status_code == 201, started.text
    chunk = 4 << 20
    for first in range(0, len(data), chunk):
        piece = data[first:first + chunk]
        answer = httpx.put(
            f"{platform.base_url}/api/v1/uploads/{started.json()['id']}", content=piece, timeout=60,
            headers={**headers, "Content-Type": "application/octet-stream",
                     "Content-Range": f"bytes {first}-{first + len(piece) - 1}/{len(data)}"})
        assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "complete", answer.text


@pytest.fixture(scope="module")
def alices_models(platform: Platform, tmp_path_factory) -> dict[str, str]:
    from runtime.tiny.lora import write_tiny_lora
    from runtime.tiny.model import write_tiny_checkpoint

    folder = tmp_path_factory.mktemp("alices-models")
    checkpoint = write_tiny_checkpoint(folder / CHECKPOINT, seed=11).read_bytes()  # not the public tiny model
    lora = write_tiny_lora(folder / LORA, seed=3).read_bytes()
    _upload(platform, "alice", f"models/Stable-diffusion/{CHECKPOINT}", checkpoint)
    _upload(platform, "alice", f"models/Lora/{LORA}", lora)
    return {"checkpoint": hashlib.sha256(checkpoint).hexdigest(), "lora": hashlib.sha256(lora).hexdigest()}


def _png_of(platform: Platform, user: str, url: str) -> httpx.Response:
    """The job's image as its owner reads it: streamed, or a redirect to a signed URL followed."""
    response = httpx.get(platform.base_url + url, headers=platform.headers(user), timeout=30)
    if response.status_code in (301, 302, 303, 307):
        response = httpx.get(httpx.URL(platform.base_url + url).join(response.headers["location"]), timeout=30)
    return response


def _fetches(platform: Platform, sha256: str) -> int:
    return (platform.data_dir / f"{REMOTE}.log").read_text(errors="replace").count(f"model cache fetched {sha256}")


def test_alices_job_runs_on_a_worker_with_its_own_data_dir(platform: Platform, alices_models, worker_dir, s3_server, bucket) -> None:
    job_id = platform.submit("alice", prompt=f"a lighthouse <lora:{LORA.removesuffix('.safetensors')}:1>", **JOB)
    job = platform.wait_job("alice", job_id)
    assert job["status"] == "succeeded", (job, platform.logs())
    assert job["checkpoint"].startswith("alice-own")

    response = _png_of(platform, "alice", job["images"][0])
    assert response.status_code == 200
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG" and image.size == (64, 64)
    assert "Lora hashes" in image.info["parameters"] or "alice-ink" in image.info["parameters"]

    # Published by content; fetched into the worker's own cache, once each, under its own name.
    keys = s3_server.keys(bucket, "model-blobs/")
    assert f"model-blobs/{alices_models['checkpoint']}" in keys and f"model-blobs/{alices_models['lora']}" in keys
    cache = worker_dir / "cache" / "models"
    assert (cache / alices_models["checkpoint"] / CHECKPOINT).is_file()
    assert (cache / alices_models["lora"] / LORA).is_file()
    assert _fetches(platform, alices_models["checkpoint"]) == 1
    assert _fetches(platform, alices_models["lora"]) == 1
    # ... and never the web process's folders: no member's folder, no public model.
    assert not (worker_dir / "users").exists() and not (worker_dir / "tenants").exists()
    assert not list(worker_dir.glob("public/**/*.safetensors"))

    # charlie (another tenant) sees neither the job nor the checkpoint.
    assert platform.get("charlie", f"/api/v1/jobs/{job_id}").status_code == 404
    assert platform.get("charlie", job["images"][0]).status_code == 404
    titles = [model["title"] for model in platform.get("charlie", "/sdapi/v1/sd-models").json()]
    assert titles and not [title for title in titles if "alice-own" in title]


def test_a_second_job_with_the_same_models_fetches_nothing(platform: Platform, alices_models) -> None:
    lora = LORA.removesuffix(".safetensors")
    for prompt in (f"a harbour <lora:{lora}:0.5>", f"a quay <lora:{lora}:0.8>"):  # at least one after the first
        job = platform.wait_job("alice", platform.submit("alice", prompt=prompt, **JOB))
        assert job["status"] == "succeeded", job
        assert _png_of(platform, "alice", job["images"][0]).status_code == 200
    assert (_fetches(platform, alices_models["checkpoint"]), _fetches(platform, alices_models["lora"])) == (1, 1)
