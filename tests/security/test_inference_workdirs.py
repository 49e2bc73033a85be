"""Issue #13 (MEDIUM): writes into a working directory never follow a member's links out of it;
`save_dir` refuses names that only look harmless; working directories are owner-only."""

from __future__ import annotations

import os
import shutil
import stat

import pytest
from django.conf import settings

from inference.storage import UnsafeOutputPath, member_file_save
from tenants.workdirs import user_workdir

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _model(tiny_checkpoint_path):
    yield tiny_checkpoint_path
    for name in ("alice", "bob"):  # the test DATA_DIR lives for the session: leave no links behind
        shutil.rmtree(user_workdir(name), ignore_errors=True)


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.parametrize("save_dir", ["tmp\n", "Models/Lora", "MODELS", "models ", "models./x", "tmp /x"])
def test_save_dir_look_alikes_are_refused_naming_the_field(api, save_dir) -> None:
    body = {"prompt": "x", "steps": 2, "width": 64, "height": 64, "alwayson_scripts": {"save_dir": save_dir}}
    native = api("alice").post("/api/v1/jobs", body)
    assert native.status_code == 400 and native.json()["field"] == "alwayson_scripts.save_dir", native.content
    sdapi = api("alice").post("/sdapi/v1/txt2img", body)
    assert sdapi.status_code == 422 and "alwayson_scripts.save_dir" in sdapi.json()["detail"]


def test_a_plain_save_dir_is_still_accepted(api) -> None:
    body = {"prompt": "x", "steps": 2, "alwayson_scripts": {"save_dir": "tmp/outputs v2"}}
    assert api("alice").post("/api/v1/jobs", body).status_code == 201


def test_a_write_through_a_link_to_another_members_folder_is_refused(personas, tmp_path) -> None:
    alice, bob = user_workdir("alice"), user_workdir("bob")
    (alice / "tmp").symlink_to(bob / "outputs", target_is_directory=True)
    (alice / "away").symlink_to(tmp_path, target_is_directory=True)
    bobs_files_before = set(bob.rglob("*"))  # other tests of the session may have left bob's images
    for key in ("users/alice/tmp/x.png", "users/alice/tmp/new/x.png", "users/alice/away/x.png"):
        with pytest.raises(UnsafeOutputPath) as refused:
            member_file_save(key, b"png")
        assert str(settings.DATA_DIR) not in str(refused.value) and "save_dir" in str(refused.value)
    (alice / "outputs" / "linked.png").symlink_to(bob / "outputs" / "victim.png")
    with pytest.raises(UnsafeOutputPath):
        member_file_save("users/alice/outputs/linked.png", b"png")
    assert set(bob.rglob("*")) == bobs_files_before and not list(tmp_path.iterdir())


def test_a_link_that_stays_inside_the_members_folder_is_followed(personas) -> None:
    alice = user_workdir("alice")
    (alice / "latest").symlink_to(alice / "outputs", target_is_directory=True)
    assert member_file_save("users/alice/latest/2000-01-01/x.png", b"png") == "users/alice/latest/2000-01-01/x.png"
    assert (alice / "outputs" / "2000-01-01" / "x.png").read_bytes() == b"png"


def test_working_directories_and_written_files_are_owner_only(personas) -> None:
    alice = user_workdir("alice")
    assert _mode(alice) == 0o700
    assert _mode(alice / "outputs") == 0o700 and _mode(alice / "models" / "Lora") == 0o700
    member_file_save("users/alice/tmp/outputs/2000-01-01/x.png", b"png")
    assert _mode(alice / "tmp") == 0o700 and _mode(alice / "tmp" / "outputs" / "2000-01-01") == 0o700
    assert _mode(alice / "tmp" / "outputs" / "2000-01-01" / "x.png") == 0o600


@pytest.mark.django_db(transaction=True)
def test_a_job_whose_save_dir_links_into_another_members_outputs_fails_and_writes_nothing_there(personas) -> None:
    from a1111.generation import parse_generation_request
    from inference.services import job_submit
    from tests.security.conftest import run_on_a_worker

    alice, bob = user_workdir("alice"), user_workdir("bob")
    (alice / "tmp").symlink_to(bob / "outputs", target_is_directory=True)
    request = parse_generation_request({"prompt": "x", "steps": 2, "width": 64, "height": 64,
                                        "alwayson_scripts": {"save_dir": "tmp"}})
    job = job_submit(user=personas["alice"], request=request)
    run_on_a_worker([job], name="workdirs")
    assert job.status == "failed" and "outside your working directory" in job.error
    assert str(settings.DATA_DIR) not in job.error
    # Every file a job writes (images, control maps) is named after it. Bob's folder is not compared
    # whole: a job of another test may still be finishing there on a loaded machine.
    assert not [path for path in bob.rglob("*") if path.name.startswith(job.public_id)]
