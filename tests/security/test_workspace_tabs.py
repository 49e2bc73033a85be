"""A tab the operators hid is refused over Gradio's own routes, not only hidden (issue 22, item 6).

Alice's real workspace app (her Blocks behind the guards, as her process serves it) is built
with every tab; then her tenant's operator hides PNG Info. Calling the PNG Info function
directly, by `fn_index` through the queue and by `api_name` through `/gradio_api/call/`, is
refused with the reason; charlie's tenant is untouched, and alice's other tabs still answer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

SECRET = "t" * 40


@pytest.fixture
def served(personas, settings) -> Iterator[Any]:
    """(alice's Blocks, a client of her app as her process serves it, charlie's likewise)."""
    from fastapi.testclient import TestClient

    from frontend.sessions.paths import WorkspacePaths
    from frontend.workspace.server import build_app
    from frontend.workspace.ui import build_workspace

    old_cwd, old_temp = os.getcwd(), os.environ.get("GRADIO_TEMP_DIR")
    paths = WorkspacePaths.for_username("alice")
    paths.ensure()
    os.environ["GRADIO_TEMP_DIR"] = str(paths.temp)
    os.chdir(paths.home)
    try:
        blocks = build_workspace(personas["alice"])
        app = build_app(
            blocks, secret=SECRET, allowed_paths=[str(paths.outputs)], max_file_size=settings.ATELIER_MAX_UPLOAD_BYTES,
            readable_roots=paths.servable_roots(), max_body_bytes=settings.ATELIER_MAX_REQUEST_BYTES,
        )
        with TestClient(app, headers={"X-Atelier-Workspace-Secret": SECRET}) as client:
            yield blocks, client
    finally:
        os.chdir(old_cwd)
        if old_temp is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = old_temp


def fn_named(blocks: Any, name: str) -> tuple[int, Any]:
    return next((index, fn) for index, fn in blocks.fns.items() if fn.name == name)


def queue_result(client: Any, fn_index: int, data: list, session: str) -> dict[str, Any]:
    """Call `fn_index` through the queue as the browser does; the `process_completed` message."""
    joined = client.post("/ui/gradio_api/queue/join",
                         json={"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None})
    assert joined.status_code == 200, joined.text
    with client.stream("GET", f"/ui/gradio_api/queue/data?session_hash={session}") as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return message
    raise AssertionError("the queue closed without completing the call")


def call_result(client: Any, api_name: str, data: list) -> tuple[str, str]:
    """Call by `api_name` (`/gradio_api/call/<name>`): (the last event's name, its data)."""
    started = client.post(f"/ui/gradio_api/call/{api_name}", json={"data": data})
    assert started.status_code == 200, started.text
    event_id = started.json()["event_id"]
    event = payload = ""
    with client.stream("GET", f"/ui/gradio_api/call/{api_name}/{event_id}") as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                payload = line[5:].strip()
                if event in ("complete", "error"):
                    break
    return event, payload


@pytest.mark.django_db(transaction=True)
def test_a_hidden_tab_s_function_is_refused_by_fn_index_and_by_api_name(served, personas) -> None:
    from tenants.models import Tenant
    from tenants.services import tenant_hidden_tabs_set

    blocks, client = served
    index, fn = fn_named(blocks, "read_pnginfo")
    shown = queue_result(client, index, [None], "before")  # shown: it answers (no image: nothing to read)
    assert shown["success"] is True, shown

    tenant_hidden_tabs_set(tenant=Tenant.objects.get(slug="studio-a"), tabs=["pnginfo"])  # after the build
    refused = queue_result(client, index, [None], "by-index")
    assert refused["success"] is False, refused
    assert "PNG Info tab is turned off" in json.dumps(refused["output"]), refused
    assert fn.api_name, "read_pnginfo has an api_name Gradio serves"
    event, payload = call_result(client, fn.api_name, [None])
    assert event == "error" and "PNG Info tab is turned off" in payload, (event, payload)

    # Alice's other tabs still answer; charlie's tenant hides nothing.
    gallery_index, _ = fn_named(blocks, "refresh_gallery")
    assert queue_result(client, gallery_index, [], "gallery")["success"] is True
    assert Tenant.objects.get(slug="studio-b").hidden_workspace_tabs == []


@pytest.mark.django_db(transaction=True)
def test_the_page_load_hides_a_tab_hidden_after_the_process_started(served) -> None:
    from tenants.models import Tenant
    from tenants.services import tenant_hidden_tabs_set

    blocks, client = served
    workspace = blocks.atelier_workspace
    tenant_hidden_tabs_set(tenant=Tenant.objects.get(slug="studio-a"), tabs=["pnginfo"])
    index, _ = fn_named(blocks, "on_load")
    loaded = queue_result(client, index, [], "load")
    assert loaded["success"] is True, loaded
    outputs = workspace.on_load_outputs()
    updates = loaded["output"]["data"]
    tab_update = updates[outputs.index(workspace.pnginfo.block)]
    assert tab_update.get("visible") == "hidden", tab_update
    assert updates[outputs.index(workspace.gallery.block)].get("visible") is True
