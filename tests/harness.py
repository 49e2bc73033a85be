"""Runs the whole platform as real processes for end-to-end tests and benchmarks.

`Platform` prepares a fresh DATA_DIR and database (a new PostgreSQL database when
DATABASE_URL is set, else SQLite in DATA_DIR), migrates, creates the demo accounts and the
tiny model with the project's own management commands, then starts the web server and
Celery workers with the same command lines `manage.py serve` uses. Everything talks over
loopback; nothing here touches the test process's own database.

Preparing is what CI repeats most (a platform per end-to-end module, in two modes), so it is
done once per test run and copied: the first platform of a run migrates and runs
`bootstrap_demo` in one interpreter (writing the tiny checkpoint, `make_tiny_model`'s
deterministic output, beside it) into a prepared copy (`_prepared`), and every platform starts
from a copy of that: its DATA_DIR tree (SQLite database, working folders, secret key) copied,
and on PostgreSQL a database made with `CREATE DATABASE … TEMPLATE`. Each platform still has its
own database and folder; only the demo accounts' tokens are the same across platforms of one run.
A platform whose environment places the checkpoints elsewhere (`ATELIER_CKPT_DIR`) prepares from
scratch with the management commands. `tests/e2e/test_serve.py` still runs `manage.py serve` the
way `make run` does.
"""

from __future__ import annotations

import atexit
import functools
import http.server
import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from inference.processes import sweeper_command, web_command, worker_command

REPO = Path(__file__).resolve().parent.parent
TERMINAL = {"succeeded", "failed", "cancelled"}
TINY_CHECKPOINT_NAME = "atelier-tiny.safetensors"  # settings.ATELIER_TINY_MODEL_NAME
# `manage.py migrate --noinput -v 0`, then `manage.py bootstrap_demo --json`, in one interpreter.
MIGRATE_AND_BOOTSTRAP = (
    "import django; django.setup(); from django.core.management import call_command; "
    "call_command('migrate', interactive=False, verbosity=0); call_command('bootstrap_demo', json=True)"
)


@functools.cache
def tiny_checkpoint() -> Path:
    """`manage.py make_tiny_model`'s checkpoint, written once per test process (it is deterministic)."""
    folder = Path(tempfile.mkdtemp(prefix="atelier-e2e-tiny-"))
    atexit.register(shutil.rmtree, folder, True)
    target = folder / TINY_CHECKPOINT_NAME
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "DATA_DIR": str(folder / "data")}
    subprocess.run([sys.executable, "manage.py", "make_tiny_model", "--output", str(target)],
                   cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
    return target


@functools.cache
def _prepared(database_url: str) -> Platform:
    """The prepared platform of this test run and mode (never started): what `Platform.prepare`
    copies. Removed, database included, when the run ends."""
    platform = Platform()
    platform._prepare_from_scratch()
    atexit.register(platform.stop)
    return platform


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pg_admin_url(database_url: str) -> str:
    parts = urlsplit(database_url)
    return urlunsplit((parts.scheme.replace("postgresql", "postgres"), parts.netloc, "/postgres", "", ""))


def _with_database(database_url: str, name: str) -> str:
    parts = urlsplit(database_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


@dataclass
class Platform:
    """A running platform. Use as a context manager, or call start() / stop()."""

    env_overrides: dict[str, str] = field(default_factory=dict)
    base_url: str = ""
    data_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="atelier-e2e-")))
    credentials: dict[str, dict[str, str]] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    _database: str | None = None

    # --- set-up -------------------------------------------------------------------------
    def env(self, *, worker: bool = False) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "ATELIER_EVENTS_URL")}
        env.update(
            DJANGO_SETTINGS_MODULE="config.settings",
            DATA_DIR=str(self.data_dir),
            PYTHONUNBUFFERED="1",
            ATELIER_HEARTBEAT_SECONDS="1",
            ATELIER_WORKER_DEAD_AFTER_SECONDS="4",
            ATELIER_PROBE_DIR=str(self.data_dir / "probes"),  # liveness files: this platform's own
            # The web process boots its spare workspace processes when it starts: a platform
            # whose tests use workspaces asks for spares (env_overrides); the rest save the CPU.
            ATELIER_WORKSPACE_SPARES="0",
        )
        if self._database:
            env["DATABASE_URL"] = self._database
        if worker and not env.get("REDIS_URL"):  # embedded default: events relayed to the web process
            env["ATELIER_EVENTS_URL"] = f"{self.base_url}/internal/events"
        env.update(self.env_overrides)
        return env

    def _create_database(self) -> None:
        database_url = os.environ.get("DATABASE_URL", "")
        if not database_url.startswith(("postgres://", "postgresql://", "pgsql://")):
            return
        import psycopg

        name = f"atelier_e2e_{self.run_id}"
        with psycopg.connect(_pg_admin_url(database_url), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self._database = _with_database(database_url, name)

    def _drop_database(self) -> None:
        if not self._database:
            return
        import psycopg

        name = urlsplit(self._database).path.lstrip("/")
        with psycopg.connect(_pg_admin_url(os.environ["DATABASE_URL"]), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=REPO, env=self.env(), capture_output=True, text=True, timeout=300
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def prepare(self) -> int:
        """Database, demo accounts and tiny model, as `make run` does; returns the web port (once)."""
        if self.base_url:
            return int(self.base_url.rsplit(":", 1)[1])
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        if "ATELIER_CKPT_DIR" in self.env():
            self._create_database()
            self.manage("make_tiny_model")
            self.credentials = json.loads(self._python(MIGRATE_AND_BOOTSTRAP))
        else:
            self._copy_prepared(_prepared(os.environ.get("DATABASE_URL", "")))
        return port

    def _prepare_from_scratch(self) -> None:
        """What `_prepared` copies: migrated database, demo accounts, the tiny checkpoint."""
        self._create_database()
        checkpoints = self.data_dir / "public" / "models" / "Stable-diffusion"
        checkpoints.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tiny_checkpoint(), checkpoints / TINY_CHECKPOINT_NAME)
        self.credentials = json.loads(self._python(MIGRATE_AND_BOOTSTRAP))

    def _copy_prepared(self, prepared: Platform) -> None:
        shutil.copytree(prepared.data_dir, self.data_dir, dirs_exist_ok=True)
        self.credentials = json.loads(json.dumps(prepared.credentials))
        if prepared._database:
            import psycopg

            name = f"atelier_e2e_{self.run_id}"
            template = urlsplit(prepared._database).path.lstrip("/")
            with psycopg.connect(_pg_admin_url(prepared._database), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            self._database = _with_database(prepared._database, name)

    def _python(self, code: str) -> str:
        """Run `code` in one Django process with this platform's environment; its stdout."""
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=self.env(), capture_output=True, text=True, timeout=300
        )
        if result.returncode != 0:
            raise RuntimeError(f"preparing the platform failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def start(self, workers: int = 1) -> Platform:
        port = self.prepare()
        self._spawn("web", web_command("127.0.0.1", port))
        self._spawn("sweeper", sweeper_command(), worker=True)  # the dispatcher; worker=True: it relays events too
        for index in range(workers):
            self.start_worker(f"w{index}")
        self.wait_until(lambda: self._web_up(), timeout=60, what="the web server")
        self.wait_for_workers(workers)
        return self

    def serve(self, workers: int = 1) -> subprocess.Popen:
        """The one-command way: `manage.py serve`, which starts web, workers and sweeper itself."""
        port = self.prepare()
        process = self._spawn("serve", [sys.executable, "manage.py", "serve", "--port", str(port), "--workers", str(workers)])
        self.wait_until(lambda: self._web_up(), timeout=60, what="the web server")
        self.wait_for_workers(workers)
        return process

    def _spawn(
        self, role: str, command: list[str], *, worker: bool = False, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        """Start a child process; its output goes to DATA_DIR/<role>.log. `env`: in place of
        `self.env()` (tests/cluster/netns.py: a worker on another host, with its own addresses)."""
        log = open(self.data_dir / f"{role}.log", "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            command, cwd=REPO, env=env if env is not None else self.env(worker=worker), stdout=log, stderr=subprocess.STDOUT
        )
        self.processes[role] = process
        return process

    def worker_name(self, short: str) -> str:
        return f"{short}-{self.run_id}@{socket.gethostname()}"

    def start_worker(self, short: str) -> subprocess.Popen:
        # The platform's worker, through tests/e2e/holding.py: a prompt with `hold:<name>` waits for release(name).
        return self._spawn(short, worker_command(self.worker_name(short), app="tests.e2e.holding"), worker=True)

    def release(self, name: str) -> None:
        """Let the jobs whose prompt says `hold:<name>` go on (see tests/e2e/holding.py)."""
        holds = self.data_dir / "holds"
        holds.mkdir(exist_ok=True)
        (holds / name).touch()

    def kill(self, role: str) -> None:
        process = self.processes.pop(role)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        self._drop_database()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Platform:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def logs(self) -> str:
        """The tail of each process's log: the web server's, the workers', and each member's
        workspace process's (a workspace that stops answering leaves its reason only there)."""
        paths = [*self.data_dir.glob("*.log"), *sorted((self.data_dir / "workspaces" / "logs").glob("*.log"))]
        return "\n".join(f"===== {p.name} =====\n{p.read_text(errors='replace')[-4000:]}" for p in paths)

    # --- waiting and calling ------------------------------------------------------------
    @staticmethod
    def wait_until(predicate, *, timeout: float, what: str, interval: float = 0.2) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}")

    def _web_up(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/login/", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_for_workers(self, count: int, timeout: float = 90) -> None:
        def online() -> bool:
            workers = self.get("admin", "/api/v1/workers").json()["workers"]
            return sum(1 for w in workers if w["state"] == "online") >= count

        self.wait_until(online, timeout=timeout, what=f"{count} worker(s) online")

    def token(self, username: str) -> str:
        return self.credentials[username]["token"]

    def headers(self, username: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(username)}"} if username else {}

    def get(self, username: str | None, path: str) -> httpx.Response:
        return httpx.get(self.base_url + path, headers=self.headers(username), timeout=30)

    def post(self, username: str | None, path: str, body: Any = None, *, timeout: float = 30) -> httpx.Response:
        return httpx.post(self.base_url + path, headers=self.headers(username), json=body, timeout=timeout)

    def submit(self, username: str, **params: Any) -> str:
        response = self.post(username, "/api/v1/jobs", params)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def wait_job(self, username: str, job_id: str, *, until=TERMINAL, timeout: float = 180) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            job = self.get(username, f"/api/v1/jobs/{job_id}").json()
            return job if job["status"] in until else None

        return self.wait_until(reached, timeout=timeout, what=f"job {job_id} to reach {sorted(until)}")

    def outputs_of(self, username: str) -> list[Path]:
        return sorted((self.data_dir / "users" / username / "outputs").rglob("*.png"))


@contextmanager
def running_platform(
    *, workers: int = 1, env_overrides: dict[str, str] | None = None, before_start: Callable[[Platform], None] | None = None
) -> Iterator[Platform]:
    """A started platform for a test module; its process logs are printed if anything fails."""
    platform = Platform(env_overrides=env_overrides or {})
    try:
        if before_start is not None:
            platform.prepare()
            before_start(platform)
        platform.start(workers=workers)
        yield platform
    except BaseException:
        print(platform.logs())
        raise
    finally:
        platform.stop()


@contextmanager
def serving_png(payload: bytes, name: str = "image.png") -> Iterator[str]:
    """A loopback HTTP server answering every GET with `payload` (a PNG); yields its URL.

    For image-URL inputs (`image_link`, URL init images): the platform must be started with
    ATELIER_FETCH_ALLOW_PRIVATE for its fetcher to reach 127.0.0.1.
    """

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{name}"
    finally:
        server.shutdown()
