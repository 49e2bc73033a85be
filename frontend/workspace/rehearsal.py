"""What a spare workspace process does while it waits for its member: a rehearsal.

A member's Blocks are their own (their language, models, styles, hidden tabs), so a spare
cannot build them before it knows whose they are. It can pay every first-time cost of building
and serving *a* workspace, though: the first build of each Gradio component class, FastAPI's
route and signature analysis, Django's first queries (and the database connection), the
mount, and the first render of the page template. About half of a member's build and most of
their first page render are such first-time costs; `rehearse` spends them on a throwaway
workspace for a stand-in member, so the member's own build, on assignment, runs warm.

The stand-in exists nowhere: an unsaved user (pk 0, which no database row takes) with a random
username whose working directory does not exist, so it has no membership, no models, styles or
images of its own and reads nothing of anyone else's. The only rows it can write are the public
model folders' hash cache (`inference.model_registry.cached_sha256`), as any member's build
would. Its Blocks and app are dropped when it ends.

A rehearsal is cut short between its steps when the member's assignment is already waiting
(`interrupted()`): a spare taken while it is still booting must not make that member wait.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from frontend.workspace.guard import SECRET_HEADER


def stand_in_member() -> Any:
    """An unsaved user no row, membership or folder belongs to."""
    from django.contrib.auth import get_user_model

    return get_user_model()(pk=0, username=f"spare-rehearsal-{secrets.token_hex(8)}", is_active=True)


def rehearse(*, interrupted: Callable[[], bool]) -> list[str]:
    """Build, mount and render a workspace for a stand-in member, then drop it. Returns the steps
    done (all four unless `interrupted` said stop before one)."""
    from django.contrib.auth import get_user_model

    from frontend.workspace.server import MOUNT_PATH, build_app
    from frontend.workspace.ui import build_workspace

    done: list[str] = []
    if interrupted():
        return done
    temp = tempfile.mkdtemp(prefix="atelier-spare-")
    old_temp = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = temp  # anything Gradio writes for the stand-in goes here, then away
    try:
        # The query the member's assignment starts with (and the first of any query).
        get_user_model().objects.filter(pk=0, is_active=True).first()
        done.append("database")
        if interrupted():
            return done
        blocks = build_workspace(stand_in_member())
        done.append("build")
        if interrupted():
            return done
        secret = secrets.token_urlsafe(32)
        app = build_app(blocks, secret=secret, allowed_paths=[temp], max_file_size=1, readable_roots=())
        done.append("mount")
        if interrupted():
            return done
        status = asyncio.run(_render_page(app, secret=secret, path=MOUNT_PATH + "/"))
        if status == 200:
            done.append("page")
    finally:
        if old_temp is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = old_temp
        shutil.rmtree(temp, ignore_errors=True)
    return done


async def _render_page(app: Any, *, secret: str, path: str) -> int:
    """GET the page in-process (no socket, no server): Gradio renders its template once."""
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        response = await client.get(path, headers={SECRET_HEADER: secret})
        return response.status_code
