"""The Extras tab's callbacks as Gradio calls them, with the real extras runner (no browser).

Alice's real Blocks: a single upload upscaled ×2 by Lanczos comes back twice the size, through
the same `extras_submit` the API uses, run by `extras_execute` as a worker runs it and shown by
the tab; a batch of her gallery images and a batch from a folder of her working directory give
one image each; folders outside it (absolute, `..`, through a symlink, missing) are refused with
a message; a face restorer whose weights are not installed is a message naming its field.
The other tenant's side (charlie and alice's things) is in `tests/security/test_workspace_extras.py`.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from PIL import Image

from frontend.workspace.extras import FIELDS, workspace_extras_submit
from frontend.workspace.jobs import WorkspaceError
from frontend.workspace.ui import build_workspace
from inference.models import Job
from tenants.workdirs import user_workdir
from tests.security.conftest import run_on_a_worker

pytestmark = pytest.mark.django_db

LANCZOS_X2 = {"resize_mode": "by", "upscaling_resize": 2, "upscaler_1": "Lanczos"}


def values(**overrides) -> dict:
    base = {name: None for name in FIELDS}
    return {**base, **LANCZOS_X2, **overrides}


def picture(size=(48, 40), colour=(200, 40, 40)) -> Image.Image:
    return Image.new("RGB", size, colour)


def extras_done(user, **kwargs) -> Job:
    job = workspace_extras_submit(user=user, **kwargs)
    run_on_a_worker([job], name=f"extras-{job.public_id}")
    assert job.status == "succeeded", job.error
    return job


def test_the_tab_is_built_and_a_single_upload_comes_back_twice_the_size(personas) -> None:
    workspace = build_workspace(personas["alice"]).atelier_workspace
    assert workspace.extras.block is not None and "Lanczos" in workspace.extras["upscaler_1"].choices[1]
    job = extras_done(personas["alice"], source="single", values=values(), image=picture())
    assert job.kind == "extras" and len(job.outputs) == 1
    assert job.outputs[0].startswith("users/alice/outputs/extras-images/")  # A1111's extras folder
    assert Image.open(settings.DATA_DIR / job.outputs[0]).size == (96, 80)
    # The tab shows the finished job's image and its postprocessing infotext.
    *_, (progress, items, info, job_id) = list(workspace.extras.follow(job))
    assert 'data-status="succeeded"' in progress and job_id == ""
    assert items[0][0].size == (96, 80) and "Postprocess upscaler: Lanczos" in info


def test_a_batch_from_the_gallery_and_from_a_folder(personas) -> None:
    alice = personas["alice"]
    first = extras_done(alice, source="single", values=values(), image=picture())
    job = extras_done(alice, source="gallery", values=values(upscaling_resize=1.5),
                      gallery_refs=[f"{first.public_id}:0"])
    assert Image.open(settings.DATA_DIR / job.outputs[0]).size == (144, 120)
    folder = user_workdir("alice") / "inputs" / "faces"
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(2):
        picture(colour=(index * 90, 90, 9)).save(folder / f"face{index}.png")
    (folder / "notes.txt").write_text("not an image")
    job = extras_done(alice, source="folder", values=values(), folder="inputs/faces")
    assert len(job.outputs) == 2 and job.params["names"] == ["face0", "face1"]


@pytest.mark.parametrize("folder, message", [
    ("", "name a folder"),
    ("/etc", "not an absolute one"),
    ("inputs/../../bob", "'..' is not allowed"),
    ("inputs/nowhere", "there is no folder inputs/nowhere"),
    ("linked", "symbolic link"),
    ("inputs/empty", "no images"),
])
def test_a_folder_outside_the_member_s_own_is_refused_with_a_message(personas, folder, message) -> None:
    workdir = user_workdir("alice")
    (workdir / "inputs" / "empty").mkdir(parents=True, exist_ok=True)
    if not (workdir / "linked").is_symlink():
        (workdir / "linked").symlink_to(settings.DATA_DIR)
    with pytest.raises(WorkspaceError, match=message):
        workspace_extras_submit(user=personas["alice"], source="folder", values=values(), folder=folder)
    assert not Job.objects.filter(kind="extras").exists()


def test_missing_face_restoration_weights_and_an_empty_form_are_messages(personas) -> None:
    with pytest.raises(WorkspaceError, match="gfpgan_visibility.*not installed|not installed.*GFPGAN"):
        workspace_extras_submit(user=personas["alice"], source="single", values=values(gfpgan_visibility=0.5),
                                image=picture())
    with pytest.raises(WorkspaceError, match="Single image: upload an image"):
        workspace_extras_submit(user=personas["alice"], source="single", values=values(), image=None)
    with pytest.raises(WorkspaceError, match="nothing to do"):
        workspace_extras_submit(user=personas["alice"], source="single", values=values(upscaler_1="None"),
                                image=picture())
    with pytest.raises(WorkspaceError, match="upscaler_1"):
        workspace_extras_submit(user=personas["alice"], source="single", values=values(upscaler_1="No Such"),
                                image=picture())
