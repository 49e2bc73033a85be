"""The ModelZoo: models registered by URL, downloaded in the background, verified and placed.

An operator registers a download in Django admin (`ModelDownloadAdmin`), into a public model
folder or a team's; a tenant admin may register one into their own team's folder
(`model_download_register` checks who may). Nothing is fetched in a request: the sweeper
(`manage.py sweeper`, which `manage.py serve` runs in the embedded default) starts one
`ModelDownloader` thread, which takes the oldest queued download, one at a time per sweeper, and:

1. fetches it through the platform's SSRF-safe fetcher (`inference/inputs/fetch.py`): http(s)
   only, public addresses only, except hosts on `ATELIER_MODEL_DOWNLOAD_ALLOWED_HOSTS` (internal
   mirrors); each redirect hop is checked again; at most `ATELIER_MODEL_DOWNLOAD_MAX_BYTES`;
2. streams it to a part file in the target folder's staging folder (`.atelier-downloads/`, on
   the same file system as the target, removed again when empty), hashing as it goes and writing its progress (and reading
   a cancel) about once a second;
3. verifies it: the size the server declared, the expected SHA-256 when one was given, and that a
   `.safetensors` file is one (its header parses); pickled formats (`.ckpt`, `.pt`, `.pth`,
   `.bin`) are refused at registration unless `ATELIER_ALLOW_PICKLED_MODELS` (upscalers' and face
   models' `.pth` always pass: workers read them weights-only);
4. places it with a hard link from the part file, which never replaces an existing name (a name
   already taken fails the download, saying so), every folder opened without following links
   (`tenants.filespace.open_dir_nofollow`); the hash is remembered in `ModelFileHash`, so the
   registry, which scans folders per request, lists it at once without hashing it again.

A failure records a message an operator can act on and deletes the part file, except when the
connection broke off halfway: the part (`<public id>.part`) is kept and a retry resumes it with
a `Range` request (a server that ignores it sends the whole file, which replaces the part; the
hash covers the whole file either way). A download whose downloader stopped reporting (its
sweeper died) for `ATELIER_MODEL_DOWNLOAD_STALE_SECONDS` is queued again and resumes the same way;
the downloader holds an exclusive `flock` on the part while it writes, so a downloader wrongly
thought dead is never written over (the download goes back to the queue until it lets go).

`registering.py` checks and queues (who may, which URL, folder, name, format and hash), cancels
and retries; `fetching.py` does one download's bytes (fetch, verify, place); `running.py` claims
the next download, records how it ended, and is the sweeper's `ModelDownloader` thread.
"""

from inference.model_downloads.fetching import STAGING_FOLDER, folder_display, target_folder
from inference.model_downloads.registering import (
    download_kinds,
    model_download_cancel,
    model_download_check,
    model_download_register,
    model_download_retry,
)
from inference.model_downloads.running import (
    ModelDownloader,
    downloads_requeue_stale,
    model_download_claim_next,
    model_download_run,
    model_download_run_next,
)

__all__ = [
    "STAGING_FOLDER", "ModelDownloader", "download_kinds", "downloads_requeue_stale", "folder_display",
    "model_download_cancel", "model_download_check", "model_download_claim_next", "model_download_register",
    "model_download_retry", "model_download_run", "model_download_run_next", "target_folder",
]
