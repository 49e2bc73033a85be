"""Which files a member's workspace may read: the platform's rule, not Gradio's.

A Gradio function whose input can hold a file (`gr.Image`, `gr.File`, `gr.ImageEditor`,
`gr.Gallery`, `gr.JSON`, ControlNet images…) takes a `FileData` dict from the browser:
`{"path": "/…", "meta": {"_type": "gradio.FileData"}, …}`. Gradio copies `path` into the
upload cache, and the file route then serves the copy; whether it first checks that the path
was uploaded depends on Gradio internals (a Blocks mounted with `gr.mount_gradio_app` never
"launches", and Gradio 6's check returns early then). So the platform decides, before a request
body reaches Gradio: every file reference in it must name a file inside the member's own
servable folders (what they uploaded to their workspace's temp folder, their outputs and their
inputs), after resolving symlinks and `..`. Anything else — another member's folder, the
database, `/proc`, a URL Gradio would fetch — refuses the whole request.

The same function runs twice: in the web process's proxy (`frontend/proxy.py`) and inside the
workspace process (`frontend/workspace/guard.py`), so neither layer trusts the other.

What counts as a file reference is deliberately broad: any JSON object with a string `path`
member (Gradio's components validate such objects as `FileData` whether or not `meta` says
so). A member's own JSON that happens to use a `path` key naming nothing of theirs is refused
too; the workspace has no input where that is legitimate. This module imports nothing heavy.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Nesting deeper than any Gradio payload: a deeper body is refused without recursion.
MAX_DEPTH = 64
# `http://…`, `file:…`, `data:…`: anything with a URL scheme is not a local path of the member's.
_URL_LIKE = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)

REFUSED_MESSAGE = (
    "This workspace may only open files you uploaded to it or generated yourself; "
    "upload the file instead of naming a path."
)


class BodyRefused(Exception):
    """A request body the workspace must not see; `status` and the message say why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class FilePolicy:
    """The folders whose files one member's workspace may read, resolved once."""

    roots: tuple[Path, ...]

    @classmethod
    def for_roots(cls, roots: Iterable[Path | str]) -> FilePolicy:
        return cls(roots=tuple(Path(os.path.realpath(root)) for root in roots))

    def allows(self, path: str, *, cwd: str | None = None) -> bool:
        """Whether `path` (as a client spelled it) names a file inside one of the roots.

        Relative paths are taken from `cwd` (the workspace's current directory), as Gradio does.
        Symlinks, `..`, `/proc/self/root/…` and the like are resolved before the check.
        """
        if not path or "\x00" in path or _URL_LIKE.match(path):
            return False
        if not os.path.isabs(path):
            if cwd is None:
                return False
            path = os.path.join(cwd, path)
        resolved = Path(os.path.realpath(path))
        return any(resolved == root or resolved.is_relative_to(root) for root in self.roots)


def file_references(payload: Any) -> Iterator[Any]:
    """Every `path` member of every JSON object in `payload` (a parsed body), depth-first.

    Raises BodyRefused past MAX_DEPTH, iteratively, so no body can exhaust the stack.
    """
    stack: list[tuple[Any, int]] = [(payload, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BodyRefused(400, f"Request body nested deeper than {MAX_DEPTH} levels.")
        if isinstance(value, dict):
            if "path" in value:
                yield value["path"]
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


def check_body(body: bytes, content_type: str | None, policy: FilePolicy, *, cwd: str | None = None) -> None:
    """Refuse a request body that names a file outside `policy` (403) or is not JSON (400).

    Multipart bodies are uploads: their parts are file contents, never server paths, so they
    pass. Every other non-empty body must be JSON, because every Gradio route that takes data
    reads JSON; a body the guard cannot read must not reach a parser that might.
    """
    if not body.strip():
        return
    if (content_type or "").split(";")[0].strip().lower() == "multipart/form-data":
        return
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise BodyRefused(400, "Request body must be JSON.") from None
    for reference in file_references(payload):
        if reference is None:  # an empty file input
            continue
        if not isinstance(reference, str) or not policy.allows(reference, cwd=cwd):
            raise BodyRefused(403, REFUSED_MESSAGE)
