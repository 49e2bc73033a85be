"""Prompt expansion (BeautifulPrompt) on real worker processes: through the API, two members'
expansions sharing one batch, each member's usage, cancellation and ownership.

The tiny random-weight GPT-2 and BLOOM models are placed in the platform's public promptgen folder
as an operator would place a model folder (what `manage.py make_tiny_model --promptgen all` writes;
built once in this process, then copied: a second process importing transformers costs seconds).
"""

from __future__ import annotations

import pytest

import shutil

from tests.harness import Platform, running_platform

pytestmark = pytest.mark.e2e

EXPAND = {"prompt": "a cat", "model": "atelier-tiny-bloom", "num_results": 3, "max_length": 12, "seed": 42}
# An image job held on the worker (tests/e2e/holding.py) so that expansions queue up behind it.
BLOCKER = {"width": 64, "height": 64, "steps": 2, "sampler_name": "Euler"}


@pytest.fixture(scope="module")
def platform(tiny_promptgen_models):
    def place_models(platform: Platform) -> None:
        for folder in tiny_promptgen_models.values():
            shutil.copytree(folder, platform.data_dir / "public/models/promptgen" / folder.name)

    with running_platform(workers=1, before_start=place_models) as platform:
        yield platform


def expand(platform: Platform, user: str, **fields) -> dict:
    response = platform.post(user, "/api/v1/promptgen", {**EXPAND, **fields}, timeout=120)
    assert response.status_code in (200, 201), response.text
    return response.json()


def test_the_models_are_listed_and_an_expansion_waits_for_its_texts(platform: Platform) -> None:
    names = {m["name"] for m in platform.get("alice", "/api/v1/promptgen/models").json()["models"]}
    assert {"atelier-tiny-gpt2", "atelier-tiny-bloom"} <= names
    job = expand(platform, "alice")
    assert job["status"] == "succeeded" and job["kind"] == "promptgen"
    assert len(job["texts"]) == 3 and all(isinstance(text, str) for text in job["texts"])
    assert expand(platform, "alice")["texts"] == job["texts"]  # the same seed: the same texts
    gpt2 = expand(platform, "bob", model="atelier-tiny-gpt2", num_results=2)
    assert len(gpt2["texts"]) == 2 and all(text.startswith("a cat") for text in gpt2["texts"])
    # without waiting: the job to poll
    queued = expand(platform, "alice", wait=False)
    assert queued["poll"] == f"/api/v1/jobs/{queued['id']}"
    assert len(platform.wait_job("alice", queued["id"])["texts"]) == 3


def test_two_members_expansions_share_one_batch_and_each_is_billed(platform: Platform) -> None:
    before = {user: platform.get(user, "/api/v1/usage").json()["texts"] for user in ("alice", "charlie")}
    blocker = platform.submit("bob", **BLOCKER, prompt="hold:pg-blocker")
    platform.wait_until(lambda: platform.get("bob", f"/api/v1/jobs/{blocker}").json()["status"] == "running",
                        timeout=60, what="the blocker running")
    alices = expand(platform, "alice", wait=False, seed=1)["id"]
    charlies = expand(platform, "charlie", wait=False, seed=2, prompt="a castle", temperature=0.7, num_results=2)["id"]
    platform.release("pg-blocker")
    jobs = {job_id: platform.wait_job("admin", job_id) for job_id in (alices, charlies)}
    assert all(job["status"] == "succeeded" for job in jobs.values()), jobs
    assert jobs[alices]["batch_id"] and jobs[alices]["batch_id"] == jobs[charlies]["batch_id"]
    assert (len(jobs[alices]["texts"]), len(jobs[charlies]["texts"])) == (3, 2)
    for user, job_id, count in (("alice", alices, 3), ("charlie", charlies, 2)):
        usage = platform.get(user, "/api/v1/usage").json()
        assert usage["texts"] == before[user] + count
        record = next(r for r in usage["records"] if r["job"] == job_id)
        assert (record["kind"], record["texts"], record["images"]) == ("promptgen", count, 0)
        assert record["gpu_seconds"] > 0


def test_cancel_stops_a_running_expansion_at_the_next_token(platform: Platform) -> None:
    job_id = expand(platform, "alice", wait=False, prompt="hold:pg-cancel-a@1 hold:pg-cancel-b@2 a cat",
                    max_length=200)["id"]
    try:
        platform.wait_until(lambda: platform.get("alice", f"/api/v1/jobs/{job_id}").json()["step"] >= 1,
                            timeout=60, what="the expansion running")
        assert platform.post("alice", f"/api/v1/jobs/{job_id}/cancel").status_code == 200
        platform.release("pg-cancel-a")  # the worker sees the cancel when it next reports a token
        job = platform.wait_job("alice", job_id, timeout=60)
        assert job["status"] == "cancelled" and job["texts"] == [] and job["step"] < job["total_steps"]
    finally:
        platform.release("pg-cancel-a")
        platform.release("pg-cancel-b")
    record = next(r for r in platform.get("alice", "/api/v1/usage").json()["records"] if r["job"] == job_id)
    assert (record["status"], record["texts"]) == ("cancelled", 0)


def test_other_members_get_404_for_alices_expansion(platform: Platform) -> None:
    job_id = expand(platform, "alice")["id"]
    for outsider in ("bob", "charlie"):
        assert platform.get(outsider, f"/api/v1/jobs/{job_id}").status_code == 404
        assert platform.post(outsider, f"/api/v1/jobs/{job_id}/cancel").status_code == 404
    assert platform.get("alice", f"/api/v1/jobs/{job_id}").json()["texts"]
