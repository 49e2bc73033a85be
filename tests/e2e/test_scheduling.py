"""The scheduler on real Celery worker processes: model affinity, cross-user batching, fair
share under a flood, and nothing lost when the broker loses its contents."""

from __future__ import annotations

import os
import time
from datetime import datetime

import pytest

from tests.harness import Platform, running_platform

pytestmark = pytest.mark.e2e

SMALL = {"width": 64, "height": 64, "steps": 4, "sampler_name": "Euler"}
# Heavy enough that a flood of them cannot drain before a job submitted a second later is placed.
FLOOD_JOB = {"width": 128, "height": 128, "steps": 16, "sampler_name": "Euler"}
SECOND_MODEL = "tiny-b.safetensors"


def _add_second_model(platform: Platform) -> None:
    target = platform.data_dir / "public/models/Stable-diffusion" / SECOND_MODEL
    platform.manage("make_tiny_model", "--seed", "1", "--output", str(target))


@pytest.fixture(scope="module")
def platform():
    # The flood is 100 queued jobs of bob's: above the per-member queue cap's default.
    overrides = {"ATELIER_DISPATCH_TIMEOUT_SECONDS": "8", "ATELIER_MAX_QUEUED_JOBS_PER_USER": "200"}
    with running_platform(workers=2, env_overrides=overrides, before_start=_add_second_model) as platform:
        yield platform


def hold_both_workers(platform: Platform, name: str) -> list[str]:
    """Two of charlie's jobs held on the two workers (tests/e2e/holding.py) until release(name).

    One per model, and the first test warmed one worker with each: affinity puts one on each worker.
    (Two jobs of one model would both prefer the worker that holds it, and the second could wait
    for that worker, which a held job never frees.)"""
    blockers = [
        platform.submit("charlie", **SMALL, prompt=f"hold:{name}"),
        platform.submit("charlie", **SMALL, prompt=f"hold:{name}", override_settings={"sd_model_checkpoint": SECOND_MODEL}),
    ]
    platform.wait_until(
        lambda: all(as_admin(platform, b)["status"] == "running" for b in blockers), timeout=60, what="blockers running"
    )
    return blockers


def as_admin(platform: Platform, job_id: str) -> dict:
    return platform.get("admin", f"/api/v1/jobs/{job_id}").json()


def run(platform: Platform, user: str, **params) -> dict:
    job = platform.wait_job(user, platform.submit(user, **params))
    assert job["status"] == "succeeded", job
    return as_admin(platform, job["id"])


def test_jobs_go_to_the_worker_that_already_holds_their_checkpoint(platform: Platform) -> None:
    # Warm one worker with each model: submitted together, they land on different workers.
    first_a = platform.submit("alice", **SMALL)
    first_b = platform.submit("alice", **SMALL, override_settings={"sd_model_checkpoint": SECOND_MODEL})
    warm_a = platform.wait_job("admin", first_a)["worker"]
    warm_b = platform.wait_job("admin", first_b)["worker"]
    assert warm_a != warm_b
    for _ in range(3):
        assert run(platform, "bob", **SMALL)["worker"] == warm_a
        assert run(platform, "charlie", **SMALL, override_settings={"sd_model_checkpoint": "tiny-b"})["worker"] == warm_b


def test_compatible_jobs_of_different_users_share_one_batch(platform: Platform) -> None:
    # Keep both workers busy, so the next jobs queue up together.
    blockers = hold_both_workers(platform, "blockers-batch")
    alices = platform.submit("alice", **SMALL, seed=1, prompt="alice's idea")
    bobs = platform.submit("bob", **SMALL, seed=2, prompt="bob's idea")
    other = platform.submit("bob", **SMALL, seed=3, override_settings={"sd_model_checkpoint": SECOND_MODEL})
    platform.release("blockers-batch")
    jobs = {job_id: platform.wait_job("admin", job_id) for job_id in (alices, bobs, other, *blockers)}
    assert all(job["status"] == "succeeded" for job in jobs.values()), jobs
    assert jobs[alices]["batch_id"] == jobs[bobs]["batch_id"]
    assert jobs[other]["batch_id"] != jobs[alices]["batch_id"]
    assert jobs[alices]["worker"] == jobs[bobs]["worker"]
    assert jobs[alices]["started_at"] == jobs[bobs]["started_at"] or abs(
        datetime.fromisoformat(jobs[alices]["started_at"]) - datetime.fromisoformat(jobs[bobs]["started_at"])
    ).total_seconds() < 1


def test_cancelling_a_batched_job_drops_it_without_disturbing_the_others(platform: Platform) -> None:
    blockers = hold_both_workers(platform, "blockers-cancel")
    # Held after its first live preview (every 5 steps) until both are seen and alice has cancelled:
    # the batch then sees her cancel at its next step, whatever the speed of the machine.
    shared = {"width": 128, "height": 128, "steps": 24, "sampler_name": "Euler", "prompt": "hold:shared@6 an idea"}
    alices, bobs = platform.submit("alice", **shared, seed=5), platform.submit("bob", **shared, seed=6)
    platform.release("blockers-cancel")
    platform.wait_until(
        lambda: as_admin(platform, alices)["step"] >= 2, timeout=120, what="the shared batch to be running"
    )
    # Each job's live preview is its own image, never the batch's first (issue #13: bob saw alice's).
    previews = platform.wait_until(
        lambda: (lambda a, b: (a, b) if a and b else None)(
            platform.get("alice", f"/api/v1/jobs/{alices}").json().get("preview"),
            platform.get("bob", f"/api/v1/jobs/{bobs}").json().get("preview"),
        ),
        timeout=120, what="both jobs of the shared batch to have a live preview", interval=0.05,
    )
    assert previews[0] != previews[1]
    assert platform.post("alice", f"/api/v1/jobs/{alices}/cancel").status_code == 200
    platform.release("shared")
    alice_job, bob_job = platform.wait_job("admin", alices), platform.wait_job("admin", bobs)
    assert alice_job["batch_id"] == bob_job["batch_id"]
    assert alice_job["status"] == "cancelled" and alice_job["images"] == []
    assert bob_job["status"] == "succeeded" and len(bob_job["images"]) == 1
    assert not [p for p in platform.outputs_of("alice") if p.name.startswith(alices)]
    for blocker in blockers:
        assert platform.wait_job("charlie", blocker)["status"] == "succeeded"


def test_a_flood_from_bob_does_not_hold_up_alices_single_job(platform: Platform) -> None:
    flood = [platform.submit("bob", **FLOOD_JOB, seed=i) for i in range(100)]
    time.sleep(1)
    alices = platform.wait_job("alice", platform.submit("alice", **SMALL, prompt="just one"))
    assert alices["status"] == "succeeded"
    submitted, started = (datetime.fromisoformat(alices[k]) for k in ("created_at", "started_at"))
    bobs = platform.get("bob", "/api/v1/jobs?limit=500").json()["jobs"]
    started_meanwhile = [
        j for j in bobs
        if j["id"] in flood and j["started_at"] and submitted < datetime.fromisoformat(j["started_at"]) < started
    ]
    # Bob may start at most what was already on its way to a worker (his running limit, 8) meanwhile.
    assert len(started_meanwhile) <= 8, len(started_meanwhile)
    # Alice did not wait for the flood: some of it started after her job, or has not started yet
    # (judged by the jobs' own timestamps and states, not by timing, which depends on load).
    started_after = [
        j for j in bobs
        if j["id"] in flood and (not j["started_at"] or datetime.fromisoformat(j["started_at"]) > started)
    ]
    assert started_after, "the whole flood ran before alice's job"
    # The rest of the flood is not needed: cancel it (queued jobs at once, running ones at their next step).
    for job_id in flood:
        assert platform.post("bob", f"/api/v1/jobs/{job_id}/cancel", {}).status_code == 200
    for job_id in flood:
        platform.wait_job("bob", job_id, timeout=300)


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="the broker is Redis only in cluster mode")
def test_nothing_is_lost_when_the_broker_loses_its_messages(platform: Platform) -> None:
    import redis

    broker = redis.Redis.from_url(os.environ["REDIS_URL"])
    jobs = [platform.submit(user, **{**SMALL, "steps": 8}, seed=i) for i, user in enumerate(["alice", "bob", "charlie"] * 8)]
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:  # a broker restart without persistence: everything in it is gone
        broker.flushdb()
        time.sleep(0.3)
    finished = [platform.wait_job("admin", job_id, timeout=240) for job_id in jobs]
    assert [job["status"] for job in finished] == ["succeeded"] * len(jobs)
    assert all(len(job["images"]) == 1 for job in finished)
