"""One member's Gradio workspace as its own process: `python -m frontend.workspace.server`.

Started by the session manager in the web process (`frontend/sessions/`), which reaches it
only through its reverse proxy (`frontend/proxy.py`). Two ways to start:

* **Assigned** (how the manager does it): `python -m frontend.workspace.server --spare`
  imports Gradio and sets Django up first (the slow part, ~3 s), rehearses a member's build
  (`frontend/workspace/rehearsal.py`: every first-time cost of building, mounting and rendering a
  workspace, spent on a throwaway one), then waits for one JSON line on stdin:
  `{"user_id": 7, "secret": "…"}`. The listening socket is inherited as file
  descriptor `ATELIER_WORKSPACE_FD` (bound by the manager on 127.0.0.1, so no port race).
  A spare started ahead of time is handed to the next member who opens `/ui/`. When stdin
  closes (the web process went away) the workspace exits.
* **From the environment** (by hand, and in tests): `ATELIER_WORKSPACE_USER_ID`,
  `ATELIER_WORKSPACE_SECRET`, and `ATELIER_WORKSPACE_PORT` (on 127.0.0.1),
  `ATELIER_WORKSPACE_SOCKET` (a unix socket path) or `ATELIER_WORKSPACE_FD`.

Either way the process serves the Blocks of `frontend.workspace.ui.build_workspace(user)`
mounted at `/ui` behind `SecretGuard`: every request needs the secret. Gradio's temp folder,
examples cache and current directory are inside the member's working directory, Gradio may
serve files only from the member's outputs (plus what it created itself), request bodies may
name files only in the member's own folders (`FileInputGuard`), uploads are capped
at ATELIER_MAX_UPLOAD_BYTES, analytics are off and nothing is ever shared publicly.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import importlib.util
import json
import os
import select
import socket
import sys
import tempfile
import threading
import time
import traceback
import types
from pathlib import Path
from typing import Any

# Before Gradio is imported: its analytics would call home from every process.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
# Gradio's queue also summarises its events for the monitoring dashboard, which the workspace
# turns off (`enable_monitoring=False`, its routes blocked): a pandas DataFrame of up to 10,000
# event records rebuilt after every event, and the one thing that imported pandas. Never.
os.environ["GRADIO_ANALYTICS_CACHE_FREQUENCY"] = str(2**62)
os.environ["GRADIO_ANALYTICS_MAX_EVENTS"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

MOUNT_PATH = "/ui"
# Imported by Gradio at its own import but used only by features the workspace has none of
# (`gradio.caching` hashes DataFrames for `gr.cache`; the queue's monitoring summary, off above):
# loaded on first use instead, ~31 MiB less.
DEFERRED_IMPORTS = ("pandas",)


class _DeferredModule(types.ModuleType):
    """Stands in sys.modules for a module not imported yet. `import name` gets it without running
    anything (the import statement reads only `__spec__`, set here, as `__file__` is); the first
    other attribute anyone reads (`__path__` included: a submodule's import) imports the real
    module, which then replaces it everywhere it is held. (importlib's LazyLoader cannot do
    this: the import statement's own read of `__spec__` loads the module.)"""

    def __getattr__(self, attr: str) -> Any:
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        real = importlib.import_module(name)
        self.__dict__.update(real.__dict__)
        return getattr(real, attr)


def defer_import(name: str) -> None:
    """Make `import name` cheap until the module is really used (see `_DeferredModule`)."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None:
        return
    placeholder = _DeferredModule(name)
    placeholder.__spec__ = spec
    # Code that walks sys.modules reads `__file__` (inspect.getmodule, for one): no reason to load.
    placeholder.__file__ = spec.origin
    sys.modules[name] = placeholder


def deferred_module_loaded(name: str) -> bool:
    """Whether `name` has really been imported (not merely deferred by `defer_import`)."""
    return name in sys.modules and not isinstance(sys.modules[name], _DeferredModule)


def _import_heavy() -> None:
    """Gradio first (2.7 s on this machine), then Django and the workspace's own modules: all
    before a member is assigned, so a spare only has to build the member's Blocks."""
    for name in DEFERRED_IMPORTS:
        defer_import(name)
    import django
    import gradio  # noqa: F401
    import uvicorn  # noqa: F401
    from django.conf import settings

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    # The `daphne` app imports Twisted, whose zope.interface declarations put `__provides__`
    # on abc.ABC; Gradio's Component.__init__ then fails (AttributeError: __provides__).
    # This process serves with uvicorn and needs no ASGI server app.
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "daphne"]
    django.setup()
    import frontend.workspace.ui  # noqa: F401  (the member's app module: no per-member state at import)


def uses_server_functions(blocks: Any) -> bool:
    """Whether any component of the Blocks has `@server` methods (the component server's only users)."""
    return any(getattr(block, "server_fns", None) for block in blocks.blocks.values())


# Phones (issue 20): a generation tab's form column comes before its results' column, which
# holds Generate; on a narrow screen that row is pinned to the bottom edge instead, so Generate
# and Cancel are on the first screen (only the open tab's row shows: the others are hidden).
WORKSPACE_CSS = """
@media (max-width: 640px) {
  .atelier-generate-row { position: fixed; left: 0; right: 0; bottom: 0; z-index: 40; margin: 0 !important;
                          padding: 8px 12px; background: var(--background-fill-primary, #fff);
                          box-shadow: 0 -2px 8px rgba(0, 0, 0, .15); }
  .gradio-container { padding-bottom: 72px !important; }
}
"""


def build_app(
    blocks: Any,
    *,
    secret: str,
    allowed_paths: list[str],
    max_file_size: int,
    readable_roots: list[Path] | tuple[Path, ...] = (),
    max_body_bytes: int = 24 * 1024 * 1024,
) -> Any:
    """The member's Blocks mounted at /ui on a FastAPI app, behind the secret guard and the
    file-input guard (request bodies may name files under `readable_roots` only)."""
    import gradio as gr
    from fastapi import FastAPI
    from starlette.middleware.cors import CORSMiddleware

    from frontend.workspace.file_policy import FilePolicy
    from frontend.workspace.guard import FileInputGuard, SecretGuard

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    # A parent app that configures CORS stops Gradio adding its own (which lets localhost
    # origins in); with no origins listed, no cross-origin request is allowed.
    app.add_middleware(CORSMiddleware, allow_origins=[])
    gr.mount_gradio_app(
        app,
        blocks,
        path=MOUNT_PATH,
        root_path=MOUNT_PATH,
        allowed_paths=allowed_paths,
        max_file_size=max_file_size,
        ssr_mode=False,
        mcp_server=False,
        enable_monitoring=False,
        pwa=False,
        run_history=False,
        # Members use the platform's API (its docs are at /docs, linked in the header), never the
        # workspace's internal Gradio API: no "Use via API" link, no "Built with Gradio".
        footer_links=["settings"],
        css=WORKSPACE_CSS,
    )
    guarded = FileInputGuard(
        app, policy=FilePolicy.for_roots(readable_roots), max_body_bytes=max_body_bytes, cwd=os.getcwd()
    )
    return SecretGuard(
        guarded, secret=secret, mount_path=MOUNT_PATH, component_server_allowed=uses_server_functions(blocks)
    )


def _listening_socket(config: dict[str, Any]) -> socket.socket:
    if config.get("fd") is not None:
        sock = socket.socket(fileno=int(config["fd"]))  # family, type and protocol read from the socket
    elif config.get("socket_path"):
        path = Path(config["socket_path"])
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # only this user may connect
        try:
            sock.bind(str(path))
        finally:
            os.umask(old_umask)
        sock.listen(128)
    else:
        # proto must say TCP: asyncio sets TCP_NODELAY on accepted sockets only then, and
        # without it every keep-alive response waits ~40 ms for a delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", int(config["port"])))
        sock.listen(128)
    sock.setblocking(False)
    return sock


def serve(*, user_id: int, secret: str, sock: socket.socket) -> None:
    """Build the member's workspace and serve it until stopped."""
    import uvicorn
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connections

    from frontend.sessions.paths import WorkspacePaths

    assigned = time.monotonic()
    user = get_user_model().objects.get(pk=user_id, is_active=True)
    paths = WorkspacePaths.for_username(user.username)
    paths.ensure()
    os.environ["GRADIO_TEMP_DIR"] = str(paths.temp)
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(paths.examples_cache)
    # Gradio also accepts files from the temp dir and the current directory: make both the member's.
    tempfile.tempdir = str(paths.temp)
    os.environ["TMPDIR"] = str(paths.temp)
    os.chdir(paths.home)

    from frontend.workspace.ui import build_workspace

    blocks = build_workspace(user)
    built = time.monotonic()
    app = build_app(
        blocks,
        secret=secret,
        allowed_paths=[str(paths.outputs)],
        max_file_size=settings.ATELIER_MAX_UPLOAD_BYTES,
        readable_roots=paths.servable_roots(),
        max_body_bytes=settings.ATELIER_MAX_REQUEST_BYTES,
    )
    connections.close_all()  # Gradio's worker threads open their own
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_level=os.environ.get("ATELIER_WORKSPACE_LOG_LEVEL", "warning"),
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_keep_alive=75,  # longer than the proxy's idle pool timeout
        timeout_graceful_shutdown=5,
    )
    now = time.monotonic()
    print(
        f"workspace: {user.get_username()}'s app built in {now - assigned:.2f}s "
        f"(Blocks {built - assigned:.2f}s, mount {now - built:.2f}s)",
        file=sys.stderr, flush=True,
    )
    uvicorn.Server(config).run(sockets=[sock])


def _exit_when_stdin_closes() -> None:
    """The web process holds our stdin: when it goes away, so do we."""

    def watch() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _release_free_memory() -> None:
    """Collect the rehearsal's garbage and hand the freed heap back to the system (glibc's
    malloc_trim: ~5 MiB of a spare's resident set); elsewhere, only the collection."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _assignment_waiting() -> bool:
    """Whether the manager has written to our stdin (an assignment, or the close of a stop)."""
    readable, _, _ = select.select([sys.stdin], [], [], 0)
    return bool(readable)


def main(argv: list[str]) -> None:
    started = time.monotonic()
    _import_heavy()
    if "--spare" in argv:
        imported = time.monotonic()
        from frontend.workspace.rehearsal import rehearse

        try:
            steps = rehearse(interrupted=_assignment_waiting)
        except Exception:  # a warm-up only: the member's own build says what is wrong, if anything
            traceback.print_exc()
            steps = ["failed"]
        if steps and not _assignment_waiting():
            _release_free_memory()
        from django.db import connections

        connections.close_all()  # a spare may wait long: it holds no database connection meanwhile
        print(
            f"workspace: spare ready, imports took {imported - started:.2f}s, "
            f"rehearsal {time.monotonic() - imported:.2f}s ({', '.join(steps) or 'skipped'})",
            file=sys.stderr, flush=True,
        )
        line = sys.stdin.readline()
        if not line:
            return  # the manager stopped this spare before using it
        assignment = json.loads(line)
        _exit_when_stdin_closes()
        config = {"fd": os.environ["ATELIER_WORKSPACE_FD"]}
        user_id, secret = int(assignment["user_id"]), str(assignment["secret"])
    else:
        config = {
            "fd": os.environ.get("ATELIER_WORKSPACE_FD"),
            "socket_path": os.environ.get("ATELIER_WORKSPACE_SOCKET"),
            "port": os.environ.get("ATELIER_WORKSPACE_PORT"),
        }
        if not any(config.values()):
            raise SystemExit("set ATELIER_WORKSPACE_PORT, ATELIER_WORKSPACE_SOCKET or ATELIER_WORKSPACE_FD")
        user_id = int(os.environ["ATELIER_WORKSPACE_USER_ID"])
        secret = os.environ["ATELIER_WORKSPACE_SECRET"]
        os.environ.pop("ATELIER_WORKSPACE_SECRET")
        print(f"workspace: imports took {time.monotonic() - started:.2f}s", file=sys.stderr, flush=True)
    serve(user_id=user_id, secret=secret, sock=_listening_socket(config))


if __name__ == "__main__":
    main(sys.argv[1:])
