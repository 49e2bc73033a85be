"""Issue 17's FileBrowser page in a real Chromium on the real platform (`tests/harness.py`: daphne
over loopback, the demo accounts, no worker needed).

alice opens /files/ from the header, makes a folder with the page's form, opens it, finds the
files put into it (written into her DATA_DIR folder, as a workspace or an upload would), renames
one and deletes another through the row buttons (the confirm dialog accepted), goes back with
the breadcrumb and downloads the folder as a zip: its entries are the folder's files. bob, on the
team area, sees it read-only. Screenshots go to `artifacts/workspace_browser/` (ignored by git).
"""

from __future__ import annotations

import re
import zipfile

import pytest

from tests.e2e.test_workspace_browser import (  # noqa: F401  (browser, chromium_present: fixtures)
    BROWSER_TEST_MARKS,
    browser,
    chromium_present,
    shot,
    sign_in,
)
from tests.harness import running_platform

pytestmark = BROWSER_TEST_MARKS

FILES = {"poster.png": b"\x89PNG alice's poster", "notes.txt": b"ink, paper", "draft.txt": b"to be deleted"}


@pytest.fixture(scope="module")
def platform():
    with running_platform(workers=0) as running:
        yield running


def test_alice_makes_a_folder_fills_it_renames_deletes_and_downloads_it_as_a_zip(platform, browser) -> None:
    context, page = sign_in(browser, platform, "alice")
    page.click("header nav a[href='/files/']")
    page.wait_for_url(re.compile(r"/files/$"))
    assert page.locator("#area-home").get_attribute("aria-current") == "page"
    page.fill("#new-folder-name", "moodboard")
    page.click("#new-folder-button")
    row = page.locator("tr.file-row[data-name='moodboard']")
    row.wait_for()
    assert row.get_attribute("data-type") == "folder"

    folder = platform.data_dir / "users" / "alice" / "moodboard"
    assert folder.is_dir()
    for name, data in FILES.items():
        (folder / name).write_bytes(data)
    row.locator("a.open").click()
    page.wait_for_url(re.compile(r"path=moodboard"))
    assert sorted(page.locator("tr.file-row").evaluate_all("rows => rows.map(r => r.dataset.name)")) == sorted(FILES)
    assert "19\xa0bytes" in page.locator("tr.file-row[data-name='poster.png'] td.size").inner_text()
    shot(page, "70_files_folder")

    page.once("dialog", lambda dialog: dialog.accept("final-poster.png"))
    page.locator("tr.file-row[data-name='poster.png'] button.rename").click()
    page.locator("tr.file-row[data-name='final-poster.png']").wait_for()
    page.once("dialog", lambda dialog: dialog.accept())  # "Delete draft.txt?"
    page.locator("tr.file-row[data-name='draft.txt'] button.delete").click()
    page.locator("tr.file-row[data-name='draft.txt']").wait_for(state="detached")
    page.once("dialog", lambda dialog: dialog.accept("../escape"))
    page.locator("tr.file-row[data-name='notes.txt'] button.rename").click()
    message = page.locator("#files-message")
    message.wait_for(state="visible")
    assert "'..'" in message.inner_text()  # refused by the API, said on the page

    page.locator("#breadcrumb a", has_text="My files").click()
    page.wait_for_url(re.compile(r"/files/\?area=home$"))
    with page.expect_download() as download:
        page.locator("tr.file-row[data-name='moodboard'] a.button[download]").click()
    assert download.value.suggested_filename == "moodboard.zip"
    with zipfile.ZipFile(download.value.path()) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist() if not info.is_dir()}
    assert entries == {"moodboard/final-poster.png": FILES["poster.png"], "moodboard/notes.txt": FILES["notes.txt"]}
    shot(page, "71_files_home")
    context.close()

    bob_context, bob_page = sign_in(browser, platform, "bob")
    bob_page.goto("/files/?area=team&path=models")
    assert bob_page.locator("#read-only").is_visible() and bob_page.locator("#new-folder-form").count() == 0
    assert bob_page.locator("button.delete").count() == 0
    bob_page.goto("/files/?area=home&path=moodboard")  # alice's folder name, in bob's own home: not there
    assert "does not exist" in bob_page.locator("#files-message").inner_text()
    bob_context.close()
