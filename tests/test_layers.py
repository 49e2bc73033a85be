"""The layers' import boundaries (docs/ARCHITECTURE.md, "Layers"), checked two ways.

Statically, over every .py file's AST (imports at module level *and* inside functions):

* ``a1111/`` - the pure A1111 vocabulary - imports no Django, no GPU stack, no other layer;
* ``runtime/`` - the torch runtime - imports no Django and nothing of the control plane;
* ``inference/scheduler/`` stays pure (no Django, no GPU stack);
* ``frontend/`` and the control plane (``inference/`` outside ``runner/`` and the tiny-model
  command) never import torch, diffusers, transformers, cv2 or ``runtime``.

Dynamically, in fresh interpreters: the web process (``django.setup()``, the URLconf with every
route's view resolved, the ASGI application) and a workspace process (a spare's imports and
rehearsal, then a member's Blocks built, mounted and rendered, one queue event) load no torch,
diffusers, transformers or cv2, and the workspace leaves pandas deferred (never run). A failure
prints the chain of imports that pulled the module in.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GPU_STACK = {"torch", "diffusers", "transformers", "cv2", "safetensors", "xformers", "tomesd"}
OTHER_LAYERS = {"django", "inference", "runtime", "tenants", "frontend", "config", "celery", "channels"}

# (folder or file, what it may not import, files under it that are exempt)
RULES: list[tuple[str, set[str], tuple[str, ...]]] = [
    ("a1111", GPU_STACK | OTHER_LAYERS, ()),
    ("runtime", OTHER_LAYERS, ()),
    ("inference/scheduler", GPU_STACK | {"django", "runtime", "tenants", "frontend", "config", "celery"}, ()),
    (
        "inference",
        GPU_STACK | {"runtime"},
        # the Celery side runs the runtime; the command writes tiny test models with it
        ("inference/runner/", "inference/management/commands/make_tiny_model.py", "inference/migrations/"),
    ),
    ("frontend", GPU_STACK | {"runtime"}, ()),
    ("tenants", GPU_STACK | {"runtime"}, ()),
    ("config", GPU_STACK | {"runtime"}, ()),
]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level module) of every absolute import in the file, wherever it is written."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def _violations() -> list[str]:
    problems = []
    for folder, forbidden, exempt in RULES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if any(rel.startswith(e) for e in exempt):
                continue
            # a module inside its own layer may import that layer (inference/ importing inference)
            own = rel.split("/")[0]
            for line, module in _imports(path):
                if module in forbidden and module != own:
                    problems.append(f"{rel}:{line} imports {module} (not allowed in {folder}/)")
    return problems


def test_every_layer_imports_only_what_it_may() -> None:
    problems = _violations()
    assert not problems, "layer boundaries crossed (docs/ARCHITECTURE.md):\n" + "\n".join(problems)


def test_the_rules_see_the_layers() -> None:
    """Guard against a vacuous pass: each ruled folder has files, and a1111/runtime exist."""
    for folder, _forbidden, _exempt in RULES:
        assert list((ROOT / folder).rglob("*.py")), f"{folder}/ has no Python files"


# --------------------------------------------------------------------------------------------
# In real processes

# Installed first in the child: records who imported each GPU-stack module first.
_TRACER = textwrap.dedent(
    """
    import sys, traceback
    WATCHED = {"torch", "diffusers", "transformers", "cv2"}
    FIRST = {}

    class _Recorder:
        def find_spec(self, name, path=None, target=None):
            top = name.split(".")[0]
            if top in WATCHED and top not in FIRST:
                FIRST[top] = [
                    f"{f.filename}:{f.lineno} {f.line}"
                    for f in traceback.extract_stack()[:-1]
                    if "importlib" not in f.filename and "<frozen" not in f.filename
                ]
            return None

    sys.meta_path.insert(0, _Recorder())

    def report():
        loaded = sorted(m for m in WATCHED if m in sys.modules)
        for module in loaded:
            print(f"--- {module} was imported by:")
            for line in FIRST.get(module, ["(unknown: imported before the tracer)"]):
                print("   ", line)
        print("LOADED=" + ",".join(loaded))
    """
)


def _run(body: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    with tempfile.TemporaryDirectory(prefix="atelier-layers-") as data_dir:
        env.update(
            DATA_DIR=data_dir,
            DJANGO_SETTINGS_MODULE="config.test_settings",
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        )
        script = _TRACER + textwrap.dedent(body) + "\nreport()\n"
        result = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
        )
    assert result.returncode == 0, result.stdout + result.stderr
    loaded = result.stdout.rsplit("LOADED=", 1)[-1].strip()
    assert loaded == "", f"the process loaded {loaded}:\n{result.stdout}"


def test_the_web_process_with_every_route_resolved_loads_no_torch() -> None:
    _run(
        """
        import django
        django.setup()
        from django.urls import URLPattern, URLResolver, get_resolver
        import config.asgi  # noqa: F401 - the ASGI app: HTTP, websockets, the workspace proxy

        def walk(patterns, prefix=""):
            for pattern in patterns:
                if isinstance(pattern, URLResolver):
                    yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
                else:
                    yield prefix + str(pattern.pattern), pattern

        routes = list(walk(get_resolver().url_patterns))
        for route, pattern in routes:
            view = pattern.callback  # resolves (and imports) the view
            assert callable(view), route
        names = {route for route, _ in routes}
        for needed in ("sdapi/v1/txt2img", "controlnet/module_list", "api/v1/jobs"):
            assert any(needed in route for route in names), (needed, sorted(names))
        print(f"{len(routes)} routes resolved")
        """
    )


def test_a_workspace_process_loads_no_torch_and_leaves_pandas_unrun() -> None:
    """What `python -m frontend.workspace.server --spare` does before and after its assignment,
    and a first event through Gradio's queue."""
    _run(
        """
        from frontend.workspace import server
        server._import_heavy()  # as a spare: Gradio, Django set up, the workspace's modules
        from django.core.management import call_command
        call_command("migrate", verbosity=0)
        from frontend.workspace.rehearsal import rehearse
        assert rehearse(interrupted=lambda: False) == ["database", "build", "mount", "page"]

        import asyncio
        from tenants.models import Membership
        from tenants.services import member_create, tenant_create
        from frontend.workspace.rehearsal import _render_page
        from frontend.workspace.ui import build_workspace

        alice = member_create(
            tenant=tenant_create(slug="studio-a"), username="alice", password="pw-alice", role=Membership.Role.ADMIN
        )
        secret = "s" * 43
        blocks = build_workspace(alice)
        app = server.build_app(blocks, secret=secret, allowed_paths=[], max_file_size=1)
        assert asyncio.run(_render_page(app, secret=secret, path="/ui/")) == 200

        # One event through Gradio's queue, as a page load's `on_load` runs (its end used to
        # import pandas: the queue's monitoring summary).
        import json
        from fastapi.testclient import TestClient

        on_load = next(index for index, fn in blocks.fns.items() if fn.name == "on_load")
        with TestClient(app, headers={"X-Atelier-Workspace-Secret": secret}) as client:
            joined = client.post("/ui/gradio_api/queue/join",
                                 json={"data": [], "fn_index": on_load, "session_hash": "s1", "event_data": None})
            assert joined.status_code == 200, joined.text
            with client.stream("GET", "/ui/gradio_api/queue/data?session_hash=s1") as stream:
                messages = [json.loads(line[5:]) for line in stream.iter_lines() if line.startswith("data:")]
        assert [m["success"] for m in messages if m.get("msg") == "process_completed"] == [True], messages
        assert not server.deferred_module_loaded("pandas"), "pandas was imported: see DEFERRED_IMPORTS"
        """
    )
