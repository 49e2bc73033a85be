"""The Extras tab reaches its member's own things only (issue 20: the workspace's Extras tab).

Charlie (tenant B) names alice's gallery image, alice's folder and alice's running Extras job
from his own workspace: he gets "not in your gallery", a refused folder and "nothing to cancel",
and alice's job goes on. (Anonymous callers never reach a workspace: the `/ui/` proxy's login
check, `tests/security/test_workspace_files.py`; a hidden Extras tab's functions are refused
like every tab's, `tests/security/test_workspace_tabs.py`.)
"""

from __future__ import annotations

import pytest
from PIL import Image

from frontend.workspace.extras import FIELDS, workspace_extras_submit
from frontend.workspace.jobs import WorkspaceError
from frontend.workspace.ui import build_workspace
from inference.models import Job
from tenants.workdirs import user_workdir
from tests.security.conftest import run_on_a_worker

pytestmark = pytest.mark.django_db

VALUES = {**{name: None for name in FIELDS}, "resize_mode": "by", "upscaling_resize": 2, "upscaler_1": "Lanczos"}


def test_charlie_cannot_use_alice_s_gallery_folder_or_job(personas) -> None:
    alice, charlie = personas["alice"], personas["charlie"]
    done = workspace_extras_submit(user=alice, source="single", values=VALUES, image=Image.new("RGB", (32, 32)))
    run_on_a_worker([done], name="alice-extras")
    assert done.status == "succeeded"
    with pytest.raises(WorkspaceError, match="not in your gallery"):
        workspace_extras_submit(user=charlie, source="gallery", values=VALUES, gallery_refs=[f"{done.public_id}:0"])
    (user_workdir("alice") / "inputs" / "secret").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32)).save(user_workdir("alice") / "inputs" / "secret" / "a.png")
    for folder in ("../alice/inputs/secret", str(user_workdir("alice") / "inputs" / "secret")):
        with pytest.raises(WorkspaceError, match="Input folder"):
            workspace_extras_submit(user=charlie, source="folder", values=VALUES, folder=folder)
    assert not Job.objects.filter(owner=charlie).exists()

    queued = workspace_extras_submit(user=alice, source="single", values=VALUES, image=Image.new("RGB", (32, 32)))
    charlies_tab = build_workspace(charlie).atelier_workspace.extras
    charlies_tab.cancel(queued.public_id)
    queued.refresh_from_db()
    assert not queued.cancel_requested and queued.status == Job.Status.QUEUED
    # alice's own tab cancels it
    build_workspace(alice).atelier_workspace.extras.cancel(queued.public_id)
    queued.refresh_from_db()
    assert queued.cancel_requested or queued.status == Job.Status.CANCELLED


def test_the_extras_gallery_lists_the_member_s_own_images_only(personas) -> None:
    alice, charlie = personas["alice"], personas["charlie"]
    done = workspace_extras_submit(user=alice, source="single", values=VALUES, image=Image.new("RGB", (32, 32)))
    run_on_a_worker([done], name="alice-gallery")
    alices_tab = build_workspace(alice).atelier_workspace.extras
    charlies_tab = build_workspace(charlie).atelier_workspace.extras
    ref = f"{done.public_id}:0"
    assert ref in {value for _label, value in alices_tab.gallery_choices()}
    assert alices_tab.refresh_extras_gallery([ref])["value"] == [ref]
    assert charlies_tab.gallery_choices() == []
    assert charlies_tab.refresh_extras_gallery([ref])["value"] == []  # a foreign pick is dropped, never kept
    sources = [charlies_tab.extras_from_single(), charlies_tab.extras_from_gallery(), charlies_tab.extras_from_folder()]
    assert sources == ["single", "gallery", "folder"]  # which sub-tab is shown: no data of anyone's


def test_a_page_load_shows_the_member_s_own_last_extras_result_only(personas) -> None:
    alice, charlie = personas["alice"], personas["charlie"]
    done = workspace_extras_submit(user=alice, source="single", values=VALUES, image=Image.new("RGB", (24, 16)))
    run_on_a_worker([done], name="alice-reattach")
    progress, items, info, job_id = list(build_workspace(alice).atelier_workspace.extras.reattach_extras())[-1]
    assert f'data-job="{done.public_id}"' in progress and items[0][0].size == (48, 32) and "Lanczos" in info
    progress, items, info, job_id = list(build_workspace(charlie).atelier_workspace.extras.reattach_extras())[-1]
    assert 'data-status="idle"' in progress and (items, info, job_id) == ([], "", "")
