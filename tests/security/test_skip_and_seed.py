"""Skip (`/sdapi/v1/skip`, the workspace's Skip) and the ♻️ seed button touch the caller's own jobs only.

Alice and charlie (another tenant) each have a running job. Charlie's skip, over the API and
from his workspace naming alice's job, asks his own job to skip and never hers; an anonymous
skip is refused; `/sdapi/v1/progress` says `skipped` to the skipping member only. Charlie's ♻️
with a ref to alice's image is "not in your gallery", never her seed.
"""

from __future__ import annotations

import pytest
from django.utils import timezone

from frontend.workspace.ui import build_workspace
from inference.models import Job
from inference.services import job_submit
from a1111.generation import parse_generation_request

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _checkpoint(tiny_checkpoint_path):
    return tiny_checkpoint_path


def running_job(user, seed: int = 7) -> Job:
    job = job_submit(user=user, request=parse_generation_request({"prompt": "x", "steps": 4, "n_iter": 2, "seed": seed}))
    Job.objects.filter(pk=job.pk).update(status="running", started_at=timezone.now(), total_steps=8)
    job.refresh_from_db()
    return job


def skips(job: Job) -> int:
    return Job.objects.get(pk=job.pk).skip_requested


def test_the_api_skip_reaches_the_caller_s_own_running_job_only(api, personas) -> None:
    alices, charlies = running_job(personas["alice"]), running_job(personas["charlie"])
    assert api(None).post("/sdapi/v1/skip").status_code == 401
    assert api("charlie").post("/sdapi/v1/skip").status_code == 200
    assert (skips(alices), skips(charlies)) == (0, 1)
    assert api("charlie").get("/sdapi/v1/progress").json()["state"]["skipped"] is True
    assert api("alice").get("/sdapi/v1/progress").json()["state"]["skipped"] is False
    assert not Job.objects.get(pk=charlies.pk).cancel_requested  # a skip is no interrupt any more
    api("alice").post("/sdapi/v1/skip")
    assert (skips(alices), skips(charlies)) == (1, 1)


def test_the_workspace_skip_and_seed_reach_the_member_s_own_job_only(personas) -> None:
    alices, charlies = running_job(personas["alice"]), running_job(personas["charlie"])
    charlies_tab = build_workspace(personas["charlie"]).atelier_workspace.txt2img
    charlies_tab.skip(alices.public_id)  # alice's id: charlie's own running job is the one skipped
    assert (skips(alices), skips(charlies)) == (0, 1)
    Job.objects.filter(pk=charlies.pk).update(status="succeeded")
    charlies_tab.skip(alices.public_id)  # nothing of his runs: nothing happens
    assert skips(alices) == 0
    Job.objects.filter(pk=alices.pk).update(status="succeeded", outputs=["users/alice/outputs/a.png"], seeds=[1234])
    with pytest.raises(Exception, match="not in your gallery"):
        charlies_tab.reuse_seed([alices.public_id, 0], [])
    assert build_workspace(personas["alice"]).atelier_workspace.txt2img.reuse_seed([alices.public_id, 0], []) == 1234
