"""Multi-host, tested: a control host and two worker hosts (network namespaces), with faults.

The control host (this namespace) runs web, dispatcher, PostgreSQL, a private Redis and moto S3;
each worker host is a namespace with its own DATA_DIR, reaching them over its veth link through
relays (tests/cluster/netns.py). alice, bob and charlie submit jobs, some held mid-run with
`hold:<name>` (tests/e2e/holding.py), and the faults come one at a time, each with its checks:

a. a worker host's link cut mid-job: after the dead-worker timeout (4 s here) the job re-runs on
   the other host; when the link comes back, the stale worker's late finish changes nothing and
   leaves no image behind;
b. a worker host cut from Redis only: its worker cannot hear its queue, so it stops writing its
   heartbeat (inference/runner/lifecycle.py) and is declared dead like a cut host: what it held
   re-runs on the other host (its own late finish loses the compare-and-set), new work goes to
   the other host, nothing is lost; once Redis answers again it comes back online;
c. a worker killed with kill -9 mid-job: re-run elsewhere;
d. Redis restarted (losing every queued message: `--save ""`) with jobs queued and dispatched:
   every job still ends, exactly once.

Finally, over every job: succeeded, exactly the images asked for in S3 under its owner's folder,
exactly one usage record, and no PNG in the bucket that no job names.

Cluster mode only (PostgreSQL: the hosts share one database through a relay), as root.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest

from tests.cluster.netns import Cluster, netns_available

pytestmark = [pytest.mark.e2e, pytest.mark.single_mode]

_why_not = (
    "cluster mode only: set DATABASE_URL to PostgreSQL"
    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))
    else netns_available()
)
if _why_not:
    pytestmark.append(pytest.mark.skip(reason=_why_not))

SMALL = {"width": 64, "height": 64, "steps": 4, "sampler_name": "Euler"}
PERSONAS = ("alice", "bob", "charlie")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    cluster = Cluster(hosts=2)
    try:
        cluster.start_with_workers()
        yield cluster
    except BaseException:
        print(cluster.platform.logs())
        raise
    finally:
        cluster.close()


class Ledger:
    """Every job the test submitted: (owner, id, images asked for)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster, self.jobs = cluster, []

    def submit(self, owner: str, prompt: str, images: int = 1) -> str:
        job_id = self.cluster.platform.submit(owner, **SMALL, prompt=prompt, batch_size=images)
        self.jobs.append((owner, job_id, images))
        return job_id

    def job(self, owner: str, job_id: str) -> dict:
        return self.cluster.platform.get(owner, f"/api/v1/jobs/{job_id}").json()

    def placed(self, job_id: str) -> tuple[str, str, int]:
        """(status, the role of the worker it is on or "", attempts), from the database (the API
        shows a job's worker to operators only)."""
        with _connect(self.cluster) as conn:
            status, worker, attempts = conn.execute(
                "SELECT j.status, coalesce(w.name, ''), j.attempts FROM inference_job j "
                "LEFT JOIN inference_worker w ON w.id = j.worker_id WHERE j.public_id = %s", [job_id]
            ).fetchone()
        return status, worker.split("-", 1)[0], attempts

    def running_on(self, job_id: str) -> str:
        """The role (w1, w2) of the worker running the job, once it runs."""
        def running() -> str | None:
            status, role, _ = self.placed(job_id)
            return role if status == "running" else None

        return self.cluster.platform.wait_until(running, timeout=60, what=f"job {job_id} running")


TASK_ENDED = re.compile(r"Task atelier\.run_batch\[[^\]]+\] (succeeded|raised|failed)")


def tasks_ended(cluster: Cluster, role: str) -> int:
    """How many batches the worker `role` ended so far, by its log (Celery's own lines)."""
    return len(TASK_ENDED.findall(cluster.worker_log(role)))


def _connect(cluster: Cluster):
    import psycopg

    return psycopg.connect(cluster.platform._database)


def _usage_counts(cluster: Cluster) -> dict[str, int]:
    with _connect(cluster) as conn:
        rows = conn.execute(
            "SELECT j.public_id, count(u.id) FROM inference_job j "
            "LEFT JOIN tenants_usagerecord u ON u.job_id = j.id GROUP BY j.public_id"
        ).fetchall()
    return {public_id: count for public_id, count in rows}


def test_jobs_end_exactly_once_across_hosts_and_faults(cluster: Cluster) -> None:
    try:
        _scenario(cluster)
    except BaseException:
        print(cluster.platform.logs())
        raise


def _scenario(cluster: Cluster) -> None:
    platform, ledger = cluster.platform, Ledger(cluster)
    host1, host2 = cluster.hosts

    # Plain jobs from the three personas run on both hosts.
    for owner in PERSONAS:
        ledger.submit(owner, f"a lighthouse for {owner}", images=2)
    for owner, job_id, _ in list(ledger.jobs):
        assert platform.wait_job(owner, job_id)["status"] == "succeeded"

    # (a) a link cut mid-job.
    held = {owner: ledger.submit(owner, f"hold:cut-{owner} a harbour") for owner in ("alice", "charlie")}
    on = {owner: ledger.running_on(job_id) for owner, job_id in held.items()}
    on_host1 = [owner for owner, role in on.items() if role == "w1"]
    assert on_host1, f"one held job runs on each host: {on}"
    victim = on_host1[0]
    other = next(owner for owner in held if owner != victim)
    ended_before = tasks_ended(cluster, "w1")
    host1.link_down()
    assert not host1.reaches(host1.relays["postgres"].server.sockets[0].getsockname()[1])
    platform.release(f"cut-{other}")  # host 2 finishes its own job and is free for the re-run
    moved = platform.wait_until(
        lambda: (placed := ledger.placed(held[victim]))[:2] == ("running", "w2") and placed,
        timeout=60, what="the cut host's job re-running on host 2",
    )
    assert moved[2] == 2, moved  # its second attempt: the first one's writes can no longer land
    platform.release(f"cut-{victim}")
    first = platform.wait_job(victim, held[victim])
    assert first["status"] == "succeeded"
    host1.link_up()
    platform.wait_until(lambda: tasks_ended(cluster, "w1") > ended_before, timeout=120,
                        what="the stale worker on host 1 ending its old attempt")
    assert ledger.job(victim, held[victim])["images"] == first["images"]
    assert_each_job_ended_once(cluster, ledger, finished_only=True)
    platform.wait_for_workers(2)

    # (b) host 2 cut from Redis only, with a job held there.
    job_b = ledger.submit("bob", "hold:redis-cut a mill")
    host = host2 if ledger.running_on(job_b) == "w2" else host1
    host.relays["redis"].cut()
    platform.release("redis-cut")
    assert platform.wait_job("bob", job_b, timeout=120)["status"] == "succeeded"
    during = [ledger.submit(owner, f"while redis is cut for {owner}") for owner in PERSONAS]
    for owner, job_id in zip(PERSONAS, during, strict=True):
        assert platform.wait_job(owner, job_id, timeout=120)["status"] == "succeeded"
    host.relays["redis"].restore()
    platform.wait_for_workers(2)

    # (c) kill -9 a worker mid-job.
    job_c = ledger.submit("charlie", "hold:killed a tower")
    role = ledger.running_on(job_c)
    platform.kill(role)
    platform.release("killed")
    assert platform.wait_job("charlie", job_c, timeout=120)["status"] == "succeeded"
    cluster.start_worker(host1 if role == "w1" else host2, role)
    platform.wait_for_workers(2)

    # (d) Redis restarted, losing its data, with jobs held, dispatched and queued.
    held_d = [ledger.submit(owner, f"hold:redis-restart a bridge for {owner}") for owner in ("alice", "bob")]
    for job_id in held_d:
        ledger.running_on(job_id)
    queued = [ledger.submit(owner, f"queued behind the restart for {owner}") for owner in PERSONAS]
    cluster.redis.restart()
    platform.release("redis-restart")
    for owner, job_id in [*zip(("alice", "bob"), held_d, strict=True), *zip(PERSONAS, queued, strict=True)]:
        assert platform.wait_job(owner, job_id, timeout=180)["status"] == "succeeded"

    assert_each_job_ended_once(cluster, ledger)


def assert_each_job_ended_once(cluster: Cluster, ledger: Ledger, *, finished_only: bool = False) -> None:
    """Every job succeeded with exactly the images asked for, in S3 under its owner's folder, one
    usage record each, and no PNG in the bucket that no job names."""
    usage = _usage_counts(cluster)
    named: set[str] = set()
    for owner, job_id, images in ledger.jobs:
        job = ledger.job(owner, job_id)
        if finished_only and job["status"] in ("queued", "dispatched", "running"):
            continue
        assert job["status"] == "succeeded", job
        assert len(job["images"]) == images, job
        assert usage[job_id] == 1, (job_id, usage[job_id])
        keys = [key for key in cluster.moto.keys(cluster.bucket) if job_id in key]
        assert len(keys) == images, keys
        assert all(f"/users/{owner}/outputs/" in key for key in keys), keys
        named |= set(keys)
    pngs = {key for key in cluster.moto.keys(cluster.bucket) if key.endswith(".png")}
    assert pngs == named, f"orphan PNGs: {sorted(pngs - named)}"


def test_a_worker_that_cannot_reach_storage_fails_the_job_with_a_message(cluster: Cluster) -> None:
    """Both hosts cut from S3 only: the job runs, its images cannot be stored, and it ends failed
    with a message saying so (before, it stayed `running` for ever on a live worker); nothing is
    left in the bucket. Storage back: the next job succeeds."""
    platform = cluster.platform
    for host in cluster.hosts:
        host.relays["s3"].cut()
    try:
        job_id = platform.submit("charlie", **SMALL, prompt="a lighthouse nobody can store")
        job = platform.wait_job("charlie", job_id, timeout=120)
    finally:
        for host in cluster.hosts:
            host.relays["s3"].restore()
    assert job["status"] == "failed", job
    assert job["error"] == "the worker could not store the images: the storage server could not be reached", job
    assert not [key for key in cluster.moto.keys(cluster.bucket) if job_id in key]
    again = platform.submit("charlie", **SMALL, prompt="a lighthouse stored at last")
    assert platform.wait_job("charlie", again, timeout=120)["status"] == "succeeded"
