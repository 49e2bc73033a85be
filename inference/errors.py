"""What a member may read of a server-side failure: the message without server paths (pure core).

A worker's exception text often names files (`… checkpoint file for '/srv/atelier/users/alice/
models/…'`). Job errors are shown to the job's owner, and a batch's failure to every member of the
batch, so before an error is recorded every absolute path is cut down to its bare file name:
the member still sees which file was at fault, never where the server keeps it nor whose
folder it is in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

# An absolute POSIX path's folders: "/" not preceded by a word character, ":" or "/" (so the path
# part of a URL is left alone), then one or more "name/" parts.
_ABSOLUTE_FOLDERS = re.compile(r"(?<![\w.:/~-])/(?:[^\s'\"`/\\:;,()<>\[\]{}|]+/)+")


def scrub_paths(message: str, roots: Iterable[str | Path] = ()) -> str:
    """`message` with every absolute path replaced by its file name.

    `roots` are folders whose names may contain spaces or other characters the generic rule
    stops at (DATA_DIR, model folders): everything up to the last "/" after one of them is cut
    first, whether or not the path was quoted.
    """
    for root in sorted({str(r).rstrip("/") for r in roots if str(r).strip("/")}, key=len, reverse=True):
        message = re.sub(re.escape(root) + r"/(?:[^'\"\n]*/)?", "", message)
    return _ABSOLUTE_FOLDERS.sub("", message)


def member_error(message: str) -> str:
    """A failure as a member may read it: `scrub_paths` over this deployment's data and model folders."""
    from django.conf import settings

    roots: set[str] = set()
    for folder in (settings.DATA_DIR, *settings.ATELIER_PUBLIC_MODEL_DIRS.values(), settings.ATELIER_MODEL_CACHE_DIR):
        path = Path(folder)
        roots.add(str(path))
        try:
            roots.add(str(path.resolve()))  # a worker reports resolved paths (model files are resolved)
        except OSError:
            pass
    return scrub_paths(message, roots)
