"""The FileBrowser's services: list, download, zip, mkdir, move/rename and delete in a file area
(`reading.py`: listings, downloads and the descriptor walk they share; `zips.py`; `writes.py`).

Every name reaches this module as an *area* and a *relative path* and is turned into a place by
`tenants.filespace.resolve_place` (the one path-resolution helper: who may read or write where,
plain names only, links out of the area refused). Then every file operation here walks from the
area's root with `O_NOFOLLOW` descriptors (`open_dir_nofollow`) and acts on the last name relative
to its parent's descriptor, so a symbolic link is never followed: not one put there before the
check, not one swapped in after it. Links are not listed, not zipped, not downloaded; deleting
one removes the link itself.

- `folder_list`: a folder's entries (folders first, then files, by name); the public area's root
  lists its model folders (`ATELIER_PUBLIC_MODEL_DIRS`), each a folder of its own.
- `file_open`: an open binary file to stream as a download (the caller closes it).
- `zip_plan` / `zip_chunks`: a folder as a zip, planned (sizes summed, `ATELIER_ZIP_MAX_BYTES`
  checked: a 413 before anything is sent) and then written by a generator, one chunk at a time,
  never the whole zip in memory (stored, not deflated: images and weights are compressed already).
- `folder_create`, `entry_move` (rename and move within one area, never onto an existing name:
  `renameat2(RENAME_NOREPLACE)` where the kernel has it), `entry_delete` (folders recursively,
  `shutil.rmtree` on descriptors, which never follows a link).

On object storage the home area's `outputs` folder lies in the bucket: `objects.py` serves it
(chosen by `objects.bucket_key(place)`, from the checked place), downloads there are redirects to
short-lived signed URLs (`file_url`), and everything else stays on the file system.

The built-in folders of home and team (`models`, `models/<kind>`, `outputs`) and an area's own
root cannot be renamed, moved or deleted. Refusals are `a1111.errors` with a message that names
the place as its user sees it (`Place.display`), never a server path.
"""

from tenants.files.reading import (
    COPY_CHUNK_BYTES,
    Entry,
    Listing,
    file_open,
    file_url,
    folder_list,
    is_folder,
    place_get,
    place_path,
)
from tenants.files.writes import builtin_folders, entry_delete, entry_move, folder_create
from tenants.files.zips import ZipMember, ZipPlan, zip_chunks, zip_plan

__all__ = [
    "COPY_CHUNK_BYTES", "Entry", "Listing", "ZipMember", "ZipPlan", "builtin_folders", "entry_delete", "entry_move",
    "file_open", "file_url", "folder_create", "folder_list", "is_folder", "place_get", "place_path", "zip_chunks", "zip_plan",
]
