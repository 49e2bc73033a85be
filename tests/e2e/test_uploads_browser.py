"""Issue 17's resumable uploads in a real Chromium on the real platform (`tests/harness.py`): alice
opens the FileBrowser in her `models/Stable-diffusion` folder and uploads a ~3 MB checkpoint in 1 MiB
chunks (`ATELIER_UPLOAD_CHUNK_BYTES`) through `uploads.js`: the progress bar moves, the connection
drops twice (Playwright aborts a chunk's request), she resumes once with the Resume button and once
after reloading the page by choosing the same file again, and the file appears in the folder
with the right size and bytes.

Screenshots go to `artifacts/workspace_browser/` (ignored by git). Needs Playwright and Chromium,
as `tests/e2e/test_workspace_browser.py`, whose browser fixture and helpers this module shares.
"""

from __future__ import annotations

import os

import pytest

from tests.e2e.test_workspace_browser import (  # noqa: F401  (browser, chromium_present: fixtures)
    BROWSER_TEST_MARKS,
    browser,
    chromium_present,
    shot,
    sign_in,
)
from tests.harness import running_platform
from tests.safetensors_files import safetensors_bytes

pytestmark = BROWSER_TEST_MARKS

MIB = 1024 * 1024
NAME = "alices-upload.safetensors"


@pytest.fixture(scope="module")
def platform():
    with running_platform(workers=0, env_overrides={"ATELIER_UPLOAD_CHUNK_BYTES": str(MIB)}) as running:
        yield running


def test_alice_uploads_a_checkpoint_in_chunks_interrupted_twice_and_resumed(platform, browser, tmp_path) -> None:
    # four chunks of a real (random-weight) safetensors file: a model folder takes nothing else
    data = safetensors_bytes({"model.diffusion_model.w": ("U8", (3 * MIB + 12_000,))}, fill=os.urandom(4096))
    source = tmp_path / NAME
    source.write_bytes(data)
    context, page = sign_in(browser, platform, "alice")
    puts: list[int] = []

    def drop_the_2nd_and_4th_chunk(route, request) -> None:
        if request.method == "PUT":
            puts.append(1)
            if len(puts) in (2, 4):
                route.abort()
                return
        route.continue_()

    page.route("**/api/v1/uploads/**", drop_the_2nd_and_4th_chunk)
    page.goto("/files/?area=home&path=models/Stable-diffusion")
    progress, status = page.locator("#upload-progress"), page.locator("#upload-status")
    page.set_input_files("#upload-file", str(source))
    page.wait_for_selector("#upload-resume:visible")
    assert "interrupted" in status.inner_text()
    assert progress.evaluate("p => [p.value, p.max]") == [MIB, len(data)]  # the first chunk is in
    shot(page, "80_upload_interrupted")

    page.click("#upload-resume")  # resume at once: the third try is the second chunk again
    page.wait_for_function("() => document.getElementById('upload-progress').value >= 2 * 1048576")
    page.wait_for_selector("#upload-resume:visible")  # the fourth request dropped too

    page.reload()  # a reload loses the file: the page remembers the session and asks for it again
    page.wait_for_function("() => document.getElementById('upload-status').textContent.includes('choose the same file')")
    assert progress.evaluate("p => p.value") == 2 * MIB
    shot(page, "81_upload_waiting_for_the_file")
    page.set_input_files("#upload-file", str(source))
    row = page.locator(f'tr.file-row[data-name="{NAME}"]')
    row.wait_for(timeout=60_000)  # the page reloads when the upload is complete
    assert "Uploaded home/models/Stable-diffusion/" + NAME in status.inner_text()
    assert "3.0" in row.locator(".size").inner_text()
    shot(page, "82_upload_complete")
    placed = platform.data_dir / "users" / "alice" / "models" / "Stable-diffusion" / NAME
    assert placed.read_bytes() == data
    assert len(puts) == 6  # 4 chunks, 2 of them sent twice: nothing was sent from the start again
    context.close()
