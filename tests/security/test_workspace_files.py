"""A member's workspace reads only the member's own files (issue #13, critical).

An attack found that any workspace function with a file-capable input (`gr.Image`, `gr.JSON`,
`gr.ImageEditor`, `gr.Gallery`, ControlNet images…) accepted a `gradio.FileData` naming any
server path: Gradio copied it into the member's upload cache and served the copy. These tests
prove the platform's rule (`frontend.workspace.file_policy`) over:

* the pure policy: symlinks, `..`, `/proc`, relative paths, URLs, nesting;
* every function of alice's real workspace Blocks, in process (the guard inside the workspace
  process, so a request that bypasses the proxy is refused too): a FileData naming a canary in
  charlie's folder is refused, nothing is copied; the same call naming her own upload passes.

The running platform (daphne, the proxy, a real workspace process) is covered in
`tests/e2e/test_workspaces.py::test_a_workspace_input_naming_another_member_s_file_is_refused`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from frontend.workspace.file_policy import MAX_DEPTH, BodyRefused, FilePolicy, check_body

CANARY = b"\x89PNG charlie's canary render"


# --- the policy, pure --------------------------------------------------------------------
@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    alice = tmp_path / "users" / "alice"
    charlie = tmp_path / "users" / "charlie"
    for folder in (alice / "outputs", alice / "inputs", alice / ".workspace" / "tmp", charlie / "outputs"):
        folder.mkdir(parents=True)
    (alice / "outputs" / "mine.png").write_bytes(b"alice")
    (charlie / "outputs" / "canary.png").write_bytes(CANARY)
    (tmp_path / "db.sqlite3").write_bytes(b"SQLite format 3")
    return {"root": tmp_path, "alice": alice, "charlie": charlie}


def _policy(alice: Path) -> FilePolicy:
    return FilePolicy.for_roots([alice / "outputs", alice / "inputs", alice / ".workspace" / "tmp"])


def test_the_policy_allows_the_member_s_own_folders_only(folders: dict[str, Path]) -> None:
    alice, charlie, root = folders["alice"], folders["charlie"], folders["root"]
    policy = _policy(alice)
    assert policy.allows(str(alice / "outputs" / "mine.png"))
    assert policy.allows(str(alice / ".workspace" / "tmp" / "abc" / "upload.png"))
    refused = [
        str(charlie / "outputs" / "canary.png"),
        f"{alice}/outputs/../../charlie/outputs/canary.png",
        str(root / "db.sqlite3"),
        "/proc/self/environ",
        f"/proc/self/root{alice}/outputs/../../charlie/outputs/canary.png",
        "/etc/passwd",
        "http://127.0.0.1:1/secret",
        "file:///etc/passwd",
        "data:image/png;base64,AAAA",
        f"{alice}/outputs/mine.png\x00.png",
        "",
        str(alice),  # the working directory itself holds models and settings
    ]
    for path in refused:
        assert not policy.allows(path), path


def test_symlinks_out_of_the_member_s_folders_are_refused(folders: dict[str, Path]) -> None:
    alice, charlie, root = folders["alice"], folders["charlie"], folders["root"]
    (alice / "outputs" / "sync").symlink_to(charlie / "outputs")
    (alice / "outputs" / "db.png").symlink_to(root / "db.sqlite3")
    policy = _policy(alice)
    assert not policy.allows(str(alice / "outputs" / "sync" / "canary.png"))
    assert not policy.allows(str(alice / "outputs" / "db.png"))


def test_relative_paths_are_taken_from_the_workspace_s_directory(folders: dict[str, Path]) -> None:
    alice = folders["alice"]
    policy = _policy(alice)
    home = str(alice / ".workspace")
    assert policy.allows("tmp/abc/upload.png", cwd=home)
    assert not policy.allows("../../charlie/outputs/canary.png", cwd=home)
    assert not policy.allows("../../../db.sqlite3", cwd=home)
    assert not policy.allows("tmp/abc/upload.png")  # no directory known: refused


def _file_data(path: str) -> dict[str, Any]:
    return {"path": path, "url": None, "orig_name": "x.png", "meta": {"_type": "gradio.FileData"}}


def test_a_body_naming_a_foreign_file_anywhere_is_refused(folders: dict[str, Path]) -> None:
    alice, charlie = folders["alice"], folders["charlie"]
    policy = _policy(alice)
    canary = str(charlie / "outputs" / "canary.png")
    own = str(alice / "outputs" / "mine.png")
    ok = {"data": [_file_data(own), None, "a prompt", {"background": _file_data(own), "layers": []}], "fn_index": 3}
    check_body(json.dumps(ok).encode(), "application/json", policy)
    hidden_in = [
        {"data": [_file_data(canary)]},
        {"data": [{"background": _file_data(canary), "layers": [], "composite": None}]},  # ImageEditor
        {"data": [[{"image": _file_data(canary), "caption": None}]]},  # Gallery
        {"data": [{"path": canary}]},  # no meta: components validate it as FileData all the same
        {"data": [[[[{"path": canary}]]]]},
        {"data": [{"path": ["not", "a", "string"]}]},
    ]
    for payload in hidden_in:
        with pytest.raises(BodyRefused) as refused:
            check_body(json.dumps(payload).encode(), "application/json", policy)
        assert refused.value.status == 403
        assert canary not in str(refused.value)  # the message never echoes a path


def test_unreadable_bodies_are_refused_not_passed_through(folders: dict[str, Path]) -> None:
    policy = _policy(folders["alice"])
    deep = ("[" * (MAX_DEPTH + 5)) + ("]" * (MAX_DEPTH + 5))
    very_deep = ("[" * 100_000) + ("]" * 100_000)
    for body in (deep.encode(), very_deep.encode(), b"data=%2Fetc%2Fpasswd", b"\xff\xfe"):
        with pytest.raises(BodyRefused) as refused:
            check_body(body, "application/json", policy)
        assert refused.value.status == 400
    check_body(b"", None, policy)
    check_body(b"--x\r\nContent-Disposition: form-data; name=files\r\n\r\n/etc/passwd\r\n--x--", "multipart/form-data; boundary=x", policy)


# --- every function of the real workspace, in process --------------------------------------
SECRET = "s" * 40
FILE_CAPABLE_TYPES = {"image", "imageeditor", "file", "gallery", "json", "video", "audio", "model3d", "uploadbutton",
                      "annotatedimage", "imageslider", "multimodaltextbox", "simpleimage", "dataset"}


def _file_capable(component: Any) -> bool:
    """A component whose value Gradio may treat as a file reference."""
    if component.get_block_name() in FILE_CAPABLE_TYPES:
        return True
    data_model = getattr(component, "data_model", None)
    schema = json.dumps(data_model.model_json_schema()) if data_model is not None else ""
    return "FileData" in schema


@pytest.fixture
def alice_workspace(personas, settings) -> Iterator[dict[str, Any]]:
    """Alice's Blocks served as her workspace process serves them (guards included), and
    a canary PNG in charlie's outputs."""
    from fastapi.testclient import TestClient

    from frontend.sessions.paths import WorkspacePaths
    from frontend.workspace.server import build_app
    from frontend.workspace.ui import build_workspace

    paths = WorkspacePaths.for_username("alice")
    paths.ensure()
    charlie = WorkspacePaths.for_username("charlie")
    charlie.ensure()
    canary = charlie.outputs / "canary.png"
    canary.write_bytes(CANARY)
    old_cwd, old_temp = os.getcwd(), os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(paths.temp)
    os.chdir(paths.home)
    try:
        blocks = build_workspace(personas["alice"])
        app = build_app(
            blocks, secret=SECRET, allowed_paths=[str(paths.outputs)], max_file_size=settings.ATELIER_MAX_UPLOAD_BYTES,
            readable_roots=paths.servable_roots(), max_body_bytes=settings.ATELIER_MAX_REQUEST_BYTES,
        )
        with TestClient(app, headers={"X-Atelier-Workspace-Secret": SECRET}) as client:
            yield {"blocks": blocks, "client": client, "paths": paths, "canary": canary}
    finally:
        os.chdir(old_cwd)
        if old_temp is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = old_temp


def _copies_of_canary(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and path.read_bytes() == CANARY]


@pytest.mark.django_db(transaction=True)
def test_no_workspace_function_takes_another_member_s_file(alice_workspace: dict[str, Any]) -> None:
    blocks, client, paths, canary = (alice_workspace[key] for key in ("blocks", "client", "paths", "canary"))
    checked = []
    for fn_index, fn in blocks.fns.items():
        positions = [i for i, component in enumerate(fn.inputs) if _file_capable(component)]
        if not positions:
            continue
        data: list[Any] = [None] * len(fn.inputs)
        for position in positions:
            data[position] = _file_data(str(canary))
        for route, body in (
            ("/ui/gradio_api/queue/join", {"data": data, "fn_index": fn_index, "session_hash": "attack", "event_data": None}),
            (f"/ui/gradio_api/run/{fn.api_name}", {"data": data}) if fn.api_name else (None, None),
            (f"/ui/gradio_api/call/{fn.api_name}", {"data": data}) if fn.api_name else (None, None),
        ):
            if route is None:
                continue
            response = client.post(route, json=body)
            assert response.status_code == 403, (fn.name, route, response.status_code, response.text[:200])
            assert str(canary) not in response.text
        checked.append(fn.name)
    # The workspace has such functions (PNG Info, img2img, ControlNet units, the gallery…).
    assert len(checked) >= 3, checked
    assert _copies_of_canary(paths.workdir) == []
    served = client.get(f"/ui/gradio_api/file={canary}")
    assert served.status_code in (403, 404) and CANARY not in served.content


@pytest.mark.django_db(transaction=True)
def test_a_function_still_takes_the_member_s_own_upload(alice_workspace: dict[str, Any]) -> None:
    """The guard refuses foreign files, not files: alice's own upload reaches PNG Info."""
    blocks, client = alice_workspace["blocks"], alice_workspace["client"]
    uploaded = client.post("/ui/gradio_api/upload", files={"files": ("own.png", b"\x89PNG alice's", "image/png")})
    assert uploaded.status_code == 200, uploaded.text
    own_path = uploaded.json()[0]
    png_info = next(
        (index, fn) for index, fn in blocks.fns.items()
        if len(fn.inputs) == 1 and fn.inputs[0].get_block_name() == "image"
    )
    response = client.post(
        "/ui/gradio_api/queue/join",
        json={"data": [_file_data(own_path)], "fn_index": png_info[0], "session_hash": "own", "event_data": None},
    )
    assert response.status_code == 200, response.text
    assert "event_id" in response.json()


@pytest.mark.django_db(transaction=True)
def test_every_workspace_function_is_registered_with_its_ownership_tests(alice_workspace: dict[str, Any]) -> None:
    """A new Gradio function in the workspace fails here until `surface.WORKSPACE_FUNCTIONS`
    names the tests that prove it touches the caller's own things only."""
    from tests.security.surface import WORKSPACE_FUNCTIONS, missing_tests

    wired = {fn.name for fn in alice_workspace["blocks"].fns.values() if fn.fn is not None}
    unregistered = sorted(wired - WORKSPACE_FUNCTIONS.keys())
    assert not unregistered, (
        f"new workspace functions {unregistered} have no ownership test: add them to "
        "tests/security/surface.py WORKSPACE_FUNCTIONS with the tests that prove them"
    )
    assert not sorted(WORKSPACE_FUNCTIONS.keys() - wired), "registry names functions the workspace no longer has"
    assert missing_tests([test for tests in WORKSPACE_FUNCTIONS.values() for test in tests]) == []
