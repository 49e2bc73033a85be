"""The ModelZoo (inference/model_downloads.py): models registered by URL are downloaded in the
background through the SSRF-safe fetcher, verified and placed without overwriting.

No internet: a `ThreadingHTTPServer` on 127.0.0.1 serves the files, reached through
`ATELIER_MODEL_DOWNLOAD_ALLOWED_HOSTS` (an internal mirror, as operators configure one).
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from a1111.errors import Forbidden, InvalidField
from inference.model_downloads import (
    STAGING_FOLDER,
    ModelDownloader,
    model_download_cancel,
    model_download_register,
    model_download_retry,
    model_download_run_next,
)
from inference.models import ModelDownload
from tenants.workdirs import tenant_model_dir

State = ModelDownload.State


def safetensors_bytes(floats: int = 80_000) -> bytes:
    """A real (tiny) safetensors file: an 8-byte header length, the JSON header, the tensor's bytes."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [floats], "data_offsets": [0, 4 * floats]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + bytes(4 * floats)


MODEL = safetensors_bytes()
MODEL_SHA = hashlib.sha256(MODEL).hexdigest()


class ModelServer:
    """Serves MODEL at /model.safetensors (optionally holding after its first half until released),
    a redirect to another host, bodies without a Content-Length, and counts the requests it gets."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.ranges: list[str | None] = []  # the Range header of each /cut request
        self.serves_ranges = True
        self.hold = threading.Event()  # set: the next /held download pauses halfway
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                server.requests.append(self.path)
                if self.path == "/model.safetensors":
                    self._send(MODEL)
                elif self.path == "/held.safetensors":
                    half = len(MODEL) // 2
                    self._head(len(MODEL))
                    self.wfile.write(MODEL[:half])
                    self.wfile.flush()
                    server.release.wait(20)
                    self.wfile.write(MODEL[half:])
                elif self.path == "/no-length.safetensors":  # HTTP/1.0: the body ends when the connection closes
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(MODEL)
                elif self.path == "/cut.safetensors":  # the first answer breaks off halfway
                    asked = self.headers.get("Range")
                    server.ranges.append(asked)
                    if len(server.ranges) == 1:
                        self._head(len(MODEL))
                        self.wfile.write(MODEL[: len(MODEL) // 2])
                    elif asked and server.serves_ranges:
                        start = int(asked.removeprefix("bytes=").removesuffix("-"))
                        self.send_response(206)
                        self.send_header("Content-Range", f"bytes {start}-{len(MODEL) - 1}/{len(MODEL)}")
                        self.send_header("Content-Length", str(len(MODEL) - start))
                        self.end_headers()
                        self.wfile.write(MODEL[start:])
                    else:
                        self._send(MODEL)
                elif self.path == "/junk.safetensors":
                    self._send(b"this is not a safetensors file at all, just text" * 100)
                elif self.path.startswith("/redirect-to/"):
                    self.send_response(302)
                    self.send_header("Location", self.path.removeprefix("/redirect-to/"))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self.send_error(404)

            def _head(self, length: int) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(length))
                self.end_headers()

            def _send(self, body: bytes) -> None:
                self._head(len(body))
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def server() -> Iterator[ModelServer]:
    served = ModelServer()
    served.thread.start()
    yield served
    served.release.set()
    served.httpd.shutdown()
    served.httpd.server_close()


@pytest.fixture
def mirror(server: ModelServer, settings) -> ModelServer:
    """The test server as an allowed internal mirror (its host and port only)."""
    settings.ATELIER_MODEL_DOWNLOAD_ALLOWED_HOSTS = [f"127.0.0.1:{server.port}"]
    return server


@pytest.fixture
def name() -> Iterator[str]:
    """A fresh file name; the file and its staging folder's parts are removed afterwards."""
    file_name = f"zoo-{uuid.uuid4().hex[:10]}.safetensors"
    yield file_name
    for folder in (django_settings.ATELIER_PUBLIC_MODEL_DIRS["Stable-diffusion"],
                   tenant_model_dir("studio-a", "Stable-diffusion")):
        (folder / file_name).unlink(missing_ok=True)


def public_folder() -> Path:
    return django_settings.ATELIER_PUBLIC_MODEL_DIRS["Stable-diffusion"]


def leftovers(folder: Path) -> list[str]:
    """What a download left behind: its part file, or the staging folder itself."""
    staging = folder / STAGING_FOLDER
    return [STAGING_FOLDER, *sorted(path.name for path in staging.iterdir())] if staging.exists() else []


def register(personas, url: str, file_name: str, **kwargs) -> ModelDownload:
    return model_download_register(actor=personas["admin"], url=url, kind="Stable-diffusion", file_name=file_name,
                                   **kwargs)


def run_one_in_its_own_thread() -> None:
    from django.db import connection

    try:
        model_download_run_next(progress_every_s=0)
    finally:
        connection.close()  # the thread's own connection (PostgreSQL drops the test database after)


def wait_for(condition, what: str, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# --- downloads that complete -------------------------------------------------------------------


def test_a_download_completes_verified_and_is_listed_by_sd_models(client, personas, tokens, mirror, name) -> None:
    download = register(personas, mirror.url("/model.safetensors"), name, sha256=MODEL_SHA.upper())
    assert download.state == State.QUEUED and download.sha256 == MODEL_SHA
    assert model_download_run_next(progress_every_s=0) is True
    download.refresh_from_db()
    assert download.state == State.DONE, download.error
    assert (download.bytes_done, download.bytes_total) == (len(MODEL), len(MODEL))
    assert download.actual_sha256 == MODEL_SHA and download.finished_at is not None
    assert (public_folder() / name).read_bytes() == MODEL
    assert leftovers(public_folder()) == []
    assert model_download_run_next() is False  # nothing else queued

    titles = [model["title"] for model in client.get(
        "/sdapi/v1/sd-models", HTTP_AUTHORIZATION=f"Bearer {tokens['charlie']}").json()]
    assert f"{name} [{MODEL_SHA[:10]}]" in titles  # public: every tenant sees it


@pytest.mark.django_db(transaction=True)  # the download runs in its own thread, with its own connection
def test_progress_is_written_while_the_download_runs(personas, mirror, name) -> None:
    download = register(personas, mirror.url("/held.safetensors"), name, sha256=MODEL_SHA)
    runner = threading.Thread(target=run_one_in_its_own_thread)
    runner.start()
    try:
        row = wait_for(lambda: ModelDownload.objects.filter(pk=download.pk, bytes_done__gte=len(MODEL) // 2).first(),
                       "half the bytes reported")
        assert row.state == State.DOWNLOADING and row.bytes_total == len(MODEL) and row.bytes_done < len(MODEL)
        assert not (public_folder() / name).exists()  # nothing appears before it is verified
    finally:
        mirror.release.set()
        runner.join(30)
    download.refresh_from_db()
    assert download.state == State.DONE and download.bytes_done == len(MODEL)


@pytest.mark.django_db(transaction=True)
def test_the_sweepers_downloader_thread_places_a_team_model_only_its_team_sees(client, personas, tokens, mirror,
                                                                               name) -> None:
    from tenants.models import Tenant

    studio_a = Tenant.objects.get(slug="studio-a")
    download = model_download_register(actor=personas["alice"], url=mirror.url("/no-length.safetensors"),
                                       kind="Stable-diffusion", file_name=name, area="team", tenant=studio_a)
    downloader = ModelDownloader(idle_s=0.05, progress_every_s=0)
    downloader.start()
    try:
        wait_for(lambda: ModelDownload.objects.filter(pk=download.pk, state=State.DONE).exists(), "the download")
    finally:
        downloader.stop()
        downloader.join(30)
    download.refresh_from_db()
    assert download.bytes_total is None and download.bytes_done == len(MODEL)  # no Content-Length: no total
    assert (tenant_model_dir("studio-a", "Stable-diffusion") / name).read_bytes() == MODEL
    assert leftovers(tenant_model_dir("studio-a", "Stable-diffusion")) == []

    def titles(persona: str) -> list[str]:
        answer = client.get("/sdapi/v1/sd-models", HTTP_AUTHORIZATION=f"Bearer {tokens[persona]}")
        return [model["title"] for model in answer.json()]

    title = f"{name} [{MODEL_SHA[:10]}]"
    assert title in titles("alice") and title in titles("bob")
    assert title not in titles("charlie")


@pytest.mark.parametrize("serves_ranges", [True, False])
def test_a_download_cut_off_halfway_resumes_on_retry(personas, mirror, name, serves_ranges) -> None:
    mirror.serves_ranges = serves_ranges
    download = register(personas, mirror.url("/cut.safetensors"), name, sha256=MODEL_SHA)
    model_download_run_next(progress_every_s=0)
    download.refresh_from_db()
    assert download.state == State.FAILED and "could not fetch the model URL" in download.error
    assert leftovers(public_folder()) == [STAGING_FOLDER, f"{download.public_id}.part"]  # kept for the retry
    assert not (public_folder() / name).exists()

    assert model_download_retry(download=download) is True
    model_download_run_next(progress_every_s=0)
    download.refresh_from_db()
    assert download.state == State.DONE, download.error
    assert mirror.ranges == [None, f"bytes={len(MODEL) // 2}-"]  # asked for the rest only
    assert (public_folder() / name).read_bytes() == MODEL  # whole, whether the server sent the rest or all again
    assert download.bytes_done == download.bytes_total == len(MODEL) and leftovers(public_folder()) == []


# --- downloads that fail, leaving nothing ------------------------------------------------------------


def test_a_wrong_hash_fails_with_a_message_and_leaves_nothing(personas, mirror, name) -> None:
    download = register(personas, mirror.url("/model.safetensors"), name, sha256="0" * 64)
    model_download_run_next(progress_every_s=0)
    download.refresh_from_db()
    assert download.state == State.FAILED
    assert f"SHA-256 is {MODEL_SHA}" in download.error and "0" * 64 in download.error
    assert not (public_folder() / name).exists() and leftovers(public_folder()) == []

    assert model_download_retry(download=download) is True  # retried: same outcome, from the start
    download.refresh_from_db()
    assert (download.state, download.error, download.bytes_done) == (State.QUEUED, "", 0)


def test_a_file_that_is_not_safetensors_is_refused(personas, mirror, name) -> None:
    download = register(personas, mirror.url("/junk.safetensors"), name)
    model_download_run_next()
    download.refresh_from_db()
    assert download.state == State.FAILED and "not a valid safetensors file" in download.error and download.file_name in download.error
    assert not (public_folder() / name).exists() and leftovers(public_folder()) == []


def test_an_existing_file_is_never_overwritten(personas, mirror, name) -> None:
    (public_folder() / name).write_bytes(b"the operator's own file")
    download = register(personas, mirror.url("/model.safetensors"), name)
    model_download_run_next()
    download.refresh_from_db()
    assert download.state == State.FAILED and "already exists" in download.error and "nothing was overwritten" in download.error
    assert (public_folder() / name).read_bytes() == b"the operator's own file"
    assert leftovers(public_folder()) == []


@pytest.mark.parametrize("path", ["/model.safetensors", "/no-length.safetensors"])  # declared, then streamed
def test_an_oversize_download_is_stopped(personas, mirror, name, settings, path) -> None:
    settings.ATELIER_MODEL_DOWNLOAD_MAX_BYTES = len(MODEL) // 3
    download = register(personas, mirror.url(path), name)
    model_download_run_next(progress_every_s=0)
    download.refresh_from_db()
    assert download.state == State.FAILED
    assert f"larger than the limit of {len(MODEL) // 3} bytes" in download.error
    assert download.bytes_done <= len(MODEL) // 3
    assert not (public_folder() / name).exists() and leftovers(public_folder()) == []


# --- SSRF ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/model.safetensors", "http://10.0.0.5/model.safetensors",
                                 "http://[::1]:{port}/model.safetensors", "http://169.254.169.254/latest/meta-data"])
def test_a_private_address_not_on_the_allow_list_is_refused(personas, server, name, settings, url) -> None:
    settings.ATELIER_MODEL_DOWNLOAD_ALLOWED_HOSTS = ["mirror.internal", "127.0.0.1:1"]  # not the server's port
    download = register(personas, url.format(port=server.port), name)
    model_download_run_next()
    download.refresh_from_db()
    assert download.state == State.FAILED and "non-public address" in download.error
    assert server.requests == []  # never contacted


def test_a_redirect_from_the_mirror_to_a_forbidden_host_is_refused(personas, mirror, name) -> None:
    elsewhere = f"http://localhost:{mirror.port}/model.safetensors"  # loopback, but not the allowed host:port
    download = register(personas, mirror.url(f"/redirect-to/{elsewhere}"), name)
    model_download_run_next()
    download.refresh_from_db()
    assert download.state == State.FAILED and "non-public address" in download.error
    assert mirror.requests == [f"/redirect-to/{elsewhere}"]  # the second hop was never requested
    assert not (public_folder() / name).exists()


def test_a_redirect_within_the_mirror_is_followed(personas, mirror, name) -> None:
    download = register(personas, mirror.url(f"/redirect-to/{mirror.url('/model.safetensors')}"), name)
    model_download_run_next()
    download.refresh_from_db()
    assert download.state == State.DONE, download.error


# --- cancel -----------------------------------------------------------------------------------------------


def test_cancelling_a_queued_download(personas, mirror, name) -> None:
    download = register(personas, mirror.url("/model.safetensors"), name)
    model_download_cancel(download=download)
    download.refresh_from_db()
    assert download.state == State.CANCELLED
    assert model_download_run_next() is False and mirror.requests == []


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_running_download_stops_it_and_leaves_nothing(personas, mirror, name) -> None:
    download = register(personas, mirror.url("/held.safetensors"), name)
    runner = threading.Thread(target=run_one_in_its_own_thread)
    runner.start()
    try:
        wait_for(lambda: ModelDownload.objects.filter(pk=download.pk, bytes_done__gt=0).exists(), "progress")
        model_download_cancel(download=download)
    finally:
        mirror.release.set()
        runner.join(30)
    download.refresh_from_db()
    assert download.state == State.CANCELLED and download.error == "cancelled"
    assert not (public_folder() / name).exists() and leftovers(public_folder()) == []


# --- who may register what ------------------------------------------------------------------------------------


def test_registration_is_checked(personas, name) -> None:
    from tenants.models import Tenant

    studio_a, studio_b = Tenant.objects.get(slug="studio-a"), Tenant.objects.get(slug="studio-b")
    url = "https://models.example.com/x.safetensors"
    with pytest.raises(Forbidden):  # a member
        model_download_register(actor=personas["bob"], url=url, kind="Lora", file_name=name, area="team",
                                tenant=studio_a)
    with pytest.raises(Forbidden):  # a tenant admin, into another team
        model_download_register(actor=personas["alice"], url=url, kind="Lora", file_name=name, area="team",
                                tenant=studio_b)
    with pytest.raises(Forbidden):  # a tenant admin, into the public folders
        model_download_register(actor=personas["alice"], url=url, kind="Lora", file_name=name)
    for bad, field in [({"url": "file:///etc/passwd"}, "url"), ({"file_name": "../x.safetensors"}, "file_name"),
                       ({"file_name": "sub/x.safetensors"}, "file_name"), ({"file_name": "x.ckpt"}, "file_name"),
                       ({"file_name": "x.txt"}, "file_name"), ({"kind": "promptgen"}, "kind"),
                       ({"sha256": "abc"}, "sha256"), ({"area": "team"}, "tenant")]:
        fields = {"url": url, "kind": "Lora", "file_name": name, **bad}
        with pytest.raises(InvalidField) as refused:
            model_download_register(actor=personas["admin"], **fields)
        assert refused.value.field == field, bad
    assert ModelDownload.objects.count() == 0


def test_pickled_files_only_when_the_operator_allows_them(personas, settings) -> None:
    with pytest.raises(InvalidField, match="pickled"):
        model_download_register(actor=personas["admin"], url="https://e.example/x.pt", kind="embeddings",
                                file_name="x.pt")
    model_download_register(actor=personas["admin"], url="https://e.example/4x.pth", kind="ESRGAN",
                            file_name="4x.pth")  # upscalers ship as .pth, read weights-only
    settings.ATELIER_ALLOW_PICKLED_MODELS = True
    model_download_register(actor=personas["admin"], url="https://e.example/x.pt", kind="embeddings", file_name="x.pt")


def test_only_operators_reach_the_model_download_admin(client, personas) -> None:
    client.force_login(personas["alice"])  # a tenant admin is no operator
    assert client.get("/admin/inference/modeldownload/").status_code == 302
    assert client.post("/admin/inference/modeldownload/add/", {}).status_code == 302
    assert ModelDownload.objects.count() == 0

    client.force_login(personas["admin"])
    answer = client.post("/admin/inference/modeldownload/add/", {
        "url": "https://models.example.com/base.safetensors", "area": "public", "kind": "Stable-diffusion",
        "file_name": "base.safetensors", "sha256": MODEL_SHA,
    })
    assert answer.status_code == 302, answer.content.decode()[:2000]
    download = ModelDownload.objects.get()
    assert (download.state, download.created_by, download.sha256) == (State.QUEUED, personas["admin"], MODEL_SHA)
    listing = client.get("/admin/inference/modeldownload/")
    assert listing.status_code == 200 and "base.safetensors" in listing.content.decode()
    assert client.get(f"/admin/inference/modeldownload/{download.pk}/change/").status_code == 200

    refused = client.post("/admin/inference/modeldownload/add/", {
        "url": "https://models.example.com/x.ckpt", "area": "public", "kind": "Stable-diffusion", "file_name": "x.ckpt",
    })
    assert refused.status_code == 200 and "pickled" in refused.content.decode()

    client.post("/admin/inference/modeldownload/", {"action": "cancel", "_selected_action": [download.pk]})
    download.refresh_from_db()
    assert download.state == State.CANCELLED
    client.post("/admin/inference/modeldownload/", {"action": "retry", "_selected_action": [download.pk]})
    download.refresh_from_db()
    assert download.state == State.QUEUED


def test_a_download_whose_downloader_stopped_reporting_is_taken_again(personas, settings, name) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from inference.model_downloads import model_download_claim_next

    download = register(personas, "https://models.example.com/x.safetensors", name)
    first = model_download_claim_next()
    assert first is not None and first.pk == download.pk and first.state == State.DOWNLOADING
    assert model_download_claim_next() is None  # taken: no second downloader gets it
    stale = timezone.now() - timedelta(seconds=settings.ATELIER_MODEL_DOWNLOAD_STALE_SECONDS + 1)
    ModelDownload.objects.filter(pk=download.pk).update(updated_at=stale, bytes_done=123)
    second = model_download_claim_next()
    assert second is not None and second.pk == download.pk
    assert second.runner != first.runner and second.bytes_done == 0


def test_a_part_file_another_downloader_holds_is_left_to_it(personas, mirror, name) -> None:
    import fcntl

    download = register(personas, mirror.url("/model.safetensors"), name)
    staging = public_folder() / STAGING_FOLDER
    staging.mkdir(exist_ok=True)
    part = staging / f"{download.public_id}.part"
    part.write_bytes(b"half of it")
    try:
        with part.open("rb") as held:
            fcntl.flock(held, fcntl.LOCK_EX)  # as a downloader still running elsewhere holds it
            assert model_download_run_next() is False
            download.refresh_from_db()
            assert (download.state, download.runner) == (State.QUEUED, "")
            assert part.read_bytes() == b"half of it" and mirror.requests == []
    finally:
        part.unlink()
        staging.rmdir()
