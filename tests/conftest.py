"""Shared fixtures: the personas (alice and bob in studio-a, charlie in studio-b, operator admin),
their API tokens, and the tiny checkpoint in the test DATA_DIR's public models folder.

Also which tests a second run in another mode repeats (`ATELIER_TESTS=mode-dependent`, as
`.ci/run`'s embedded run sets). CI runs the suite in cluster mode (PostgreSQL + Redis), then again
on the embedded default (SQLite + file broker). Only what touches the database, the broker or a
running platform can behave differently there; a test of pure code (parsers, the scheduler's
policy, the torch runtime, the import layers) would only repeat itself, so the second run
deselects it. Tests marked `single_mode` (the browser tests, the API fuzzing: their subject is
the pages and the parsers, which the mode does not change) run in the first mode only; every
flow they drive also has an HTTP end-to-end test that runs in both.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
from django.conf import settings


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """A channel layer of the test's own. channels_redis keeps its receive lock and count on the
    layer object, which every event loop of the process shares (the platform runs one loop, the
    tests one per `async_to_sync` call): a loop that an earlier test ended while a consumer was
    receiving must not leave that state behind for this one. (A socket test hung for 600 s on it.)"""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture(scope="module")
def one_torch_thread():
    """The tiny models are too small to gain from threads; on a busy 2-core machine, torch's
    spinning intra-op threads made pipeline tests 10-50x slower. Every worker test has it
    (tests/worker/conftest.py); a test elsewhere that runs the runtime asks for it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_checkpoint_path() -> Path:
    from runtime.tiny.model import write_tiny_checkpoint

    path = settings.ATELIER_PUBLIC_MODEL_DIRS["Stable-diffusion"] / settings.ATELIER_TINY_MODEL_NAME
    if not path.exists():
        write_tiny_checkpoint(path)
    return path


@pytest.fixture
def personas(db):
    from tenants.models import Membership
    from tenants.services import member_create, operator_create, tenant_create

    studio_a = tenant_create(slug="studio-a")
    studio_b = tenant_create(slug="studio-b")
    return {
        "alice": member_create(tenant=studio_a, username="alice", password="pw-alice", role=Membership.Role.ADMIN),
        "bob": member_create(tenant=studio_a, username="bob", password="pw-bob"),
        "charlie": member_create(tenant=studio_b, username="charlie", password="pw-charlie"),
        "admin": operator_create(username="admin", password="pw-admin"),
    }


@pytest.fixture
def tokens(personas) -> dict[str, str]:
    from tenants.services import token_create

    return {name: token_create(user=user)[1] for name, user in personas.items()}


@pytest.fixture
def api(client, tokens):
    """`api("alice").get(path)` / `.post(path, json_body)`: the Django test client with a token."""

    class Caller:
        def __init__(self, username: str | None) -> None:
            self.headers = {"HTTP_AUTHORIZATION": f"Bearer {tokens[username]}"} if username else {}

        def get(self, path: str):
            return client.get(path, **self.headers)

        def post(self, path: str, body=None):
            import json

            data = json.dumps(body) if body is not None and not isinstance(body, str) else body
            return client.post(path, data=data or "", content_type="application/json", **self.headers)

    return Caller


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto's server mode) on loopback, for the whole session."""
    from tests.objectstore import MotoServer

    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def s3_storage(s3_server, settings):
    """This test's members' files and model blobs in a fresh bucket of the moto server, as
    ATELIER_S3_BUCKET makes them (`config/object_storage.py`). Yields the bucket's name."""
    from config.object_storage import object_storages

    bucket = s3_server.bucket_create()
    settings.STORAGES = {**settings.STORAGES, **object_storages(s3_server.storage_config(bucket))}
    settings.ATELIER_S3_BUCKET = bucket
    yield bucket


@pytest.fixture(scope="session")
def tiny_promptgen_models() -> dict[str, Path]:
    """Tiny random-weight GPT-2 and BLOOM prompt-generation models in the public promptgen folder,
    placed as an operator would (`manage.py make_tiny_model --promptgen all` writes the same)."""
    from runtime.tiny.promptgen import write_tiny_promptgen

    folder = settings.ATELIER_PUBLIC_MODEL_DIRS["promptgen"]
    models = {"gpt2": folder / "atelier-tiny-gpt2", "bloom": folder / "atelier-tiny-bloom"}
    for family, path in models.items():
        if not (path / "model.safetensors").exists():
            write_tiny_promptgen(path, family)
    return models


INTERROGATE_FOLDERS = ("BLIP", "CLIP", "interrogate", "deepbooru")


@pytest.fixture(scope="session")
def tiny_interrogate_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny random-weight BLIP, CLIP and tagger folders and category files, in public-models-like
    folders of their own (`runtime/tiny/interrogate.py`; `make_tiny_model --interrogate` writes the same)."""
    from runtime.tiny.interrogate import write_tiny_interrogate

    root = tmp_path_factory.mktemp("interrogate-models")
    folders = {kind: root / kind for kind in INTERROGATE_FOLDERS}
    write_tiny_interrogate(folders)
    return folders


@pytest.fixture
def interrogate_installed(settings, tiny_interrogate_models) -> dict[str, Path]:
    """The tiny interrogate models as this test's public BLIP, CLIP, interrogate and deepbooru folders."""
    settings.ATELIER_PUBLIC_MODEL_DIRS = {**settings.ATELIER_PUBLIC_MODEL_DIRS, **tiny_interrogate_models}
    return tiny_interrogate_models


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failed test that used a running platform gets its processes' logs in its report.

    The platforms are module-scoped fixtures, which a test's failure does not reach, and their
    data folder (with the logs) is deleted when the module ends: without this, a job that never
    finished in CI leaves nothing to read.
    """
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        from tests.harness import Platform

        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Platform):
                report.sections.append(("platform process logs (last 4000 characters each)", value.logs()))


MODE_FIXTURES = frozenset({"db", "transactional_db", "django_db_setup", "live_server"})


def runs_in_every_mode(item: pytest.Item) -> bool:
    """Whether the test can behave differently on another database or broker (see the docstring)."""
    if item.get_closest_marker("single_mode"):
        return False
    if item.get_closest_marker("django_db") or item.get_closest_marker("e2e"):
        return True
    return bool(MODE_FIXTURES & set(getattr(item, "fixturenames", ())))


PLATFORM_GROUP = "platform"
STARTS_PLATFORMS = "pytest.mark.e2e"


@functools.cache
def _starts_platforms(path: str) -> bool:
    """Whether the test module at `path` (relative to the root) has `e2e` tests, which start platforms."""
    return STARTS_PLATFORMS in (Path(__file__).resolve().parent.parent / path).read_text(encoding="utf-8", errors="replace")


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """How `make test`'s two processes (pytest-xdist) share the tests.

    - Every module with `e2e` tests runs in one process, in file order, as the suite ran before it
      had two: those tests start platforms (web, workers, sweeper) that share the broker (one
      module flushes it) and take most of a CPU while they generate, and their waits are sized
      for one platform at a time. The other process works through the remaining tests beside them.
    - Each process runs its tests in the order pytest-django sorted the whole collection:
      `db` tests, then `transactional_db` ones (which empty the database, the rows the migrations
      wrote included), then the rest. So a unit of work is a module's run of consecutive tests in
      that order (a module with both kinds is two units), units are handed out in that order, never
      reordered by size, and no process runs a transactional test before a plain one it was given
      later.
    The scheduler sees node ids only, so a module is told by its source. (pytest-xdist's own
    `loadgroup` cannot group on pytest 9, whose node ids it no longer rewrites.)"""
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False

    class PlatformsTogether(LoadScopeScheduling):
        units: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.units is None:
                self.units = _work_units(self.collection or [])
            return self.units.get(nodeid) or nodeid.split("::", 1)[0]

    return PlatformsTogether(config, log)


def _work_units(collection: list[str]) -> dict[str, str]:
    """Node id → its unit of work (see `pytest_xdist_make_scheduler`)."""
    units: dict[str, str] = {}
    runs: dict[str, int] = {}
    previous = None
    for nodeid in collection:
        path = nodeid.split("::", 1)[0]
        if path.endswith(".py") and _starts_platforms(path):
            units[nodeid] = PLATFORM_GROUP
            continue
        if path != previous:
            runs[path] = runs.get(path, 0) + 1
        previous = path
        units[nodeid] = f"{path}#{runs[path]}"
    return units


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    selection = os.environ.get("ATELIER_TESTS", "all")
    if selection == "all":
        return
    if selection != "mode-dependent":
        raise pytest.UsageError(f"ATELIER_TESTS={selection!r}: use 'all' (the default) or 'mode-dependent'")
    kept = [item for item in items if runs_in_every_mode(item)]
    dropped = [item for item in items if not runs_in_every_mode(item)]
    config.hook.pytest_deselected(items=dropped)
    items[:] = kept
