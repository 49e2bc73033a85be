"""The whole platform as real processes: daphne, Celery workers, the database and broker the
environment selects (SQLite + file broker by default; PostgreSQL + Redis in CI), over loopback."""

from __future__ import annotations

import io
import json

import httpx
import pytest
from PIL import Image
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.harness import Platform, running_platform

pytestmark = pytest.mark.e2e

SMALL = {"prompt": "a lighthouse at dawn", "width": 128, "height": 128, "steps": 6, "sampler_name": "Euler a"}
# Long enough on the tiny model (several seconds) to be caught while running.
# Held at its first step until the test releases it (tests/e2e/holding.py): running for as long as a
# test needs, whatever the machine's speed. Enough steps after the hold that a cancel lands mid-job.
HELD = {"width": 128, "height": 128, "steps": 150, "sampler_name": "Euler"}


@pytest.fixture(scope="module")
def platform():
    with running_platform(workers=1) as platform:
        yield platform


def test_alice_txt2img_lands_in_her_outputs_as_png_with_infotext(platform: Platform) -> None:
    job_id = platform.submit("alice", **SMALL, seed=1234, batch_size=2)
    job = platform.wait_job("alice", job_id)
    assert job["status"] == "succeeded", job
    assert job["seeds"] == [1234, 1235]
    assert len(job["images"]) == 2

    files = [p for p in platform.outputs_of("alice") if p.name.startswith(job_id)]
    assert [p.name for p in files] == [f"{job_id}-0.png", f"{job_id}-1.png"]

    response = platform.get("alice", job["images"][1])
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.size == (128, 128)
    assert image.info["parameters"].startswith("a lighthouse at dawn\nSteps: 6, Sampler: Euler a,")
    assert "Seed: 1235" in image.info["parameters"]
    assert "Model: atelier-tiny" in image.info["parameters"]
    assert response.content == files[1].read_bytes()


def test_same_seed_gives_the_same_image(platform: Platform) -> None:
    first = platform.wait_job("alice", platform.submit("alice", **SMALL, seed=77))
    second = platform.wait_job("alice", platform.submit("alice", **SMALL, seed=77))
    a = platform.get("alice", first["images"][0]).content
    b = platform.get("alice", second["images"][0]).content
    assert Image.open(io.BytesIO(a)).tobytes() == Image.open(io.BytesIO(b)).tobytes()


def test_other_users_get_404_for_every_job_endpoint(platform: Platform) -> None:
    job_id = platform.submit("alice", **SMALL)
    job = platform.wait_job("alice", job_id)
    image_path = job["images"][0]
    for outsider in ("charlie", "bob"):
        assert platform.get(outsider, f"/api/v1/jobs/{job_id}").status_code == 404
        assert platform.get(outsider, image_path).status_code == 404
        assert platform.post(outsider, f"/api/v1/jobs/{job_id}/cancel").status_code == 404
        listed = platform.get(outsider, "/api/v1/jobs").json()["jobs"]
        assert job_id not in [j["id"] for j in listed]
    assert platform.get(None, f"/api/v1/jobs/{job_id}").status_code == 401
    assert platform.get(None, image_path).status_code == 401
    # Operators see every job.
    assert platform.get("admin", f"/api/v1/jobs/{job_id}").status_code == 200


def _ws_url(platform: Platform, job_id: str) -> str:
    return platform.base_url.replace("http://", "ws://") + f"/ws/jobs/{job_id}"


def _read_events(socket) -> tuple[list[dict], int | None]:
    events = []
    try:
        while True:
            events.append(json.loads(socket.recv(timeout=120)))
    except ConnectionClosed as closed:
        return events, closed.rcvd.code if closed.rcvd else None


def test_websocket_streams_progress_to_the_owner_only(platform: Platform) -> None:
    job_id = platform.submit("alice", **{**SMALL, "steps": 20, "width": 256, "height": 256})
    with connect(_ws_url(platform, job_id), additional_headers=platform.headers("alice")) as socket:
        events, _ = _read_events(socket)
    statuses = [e["status"] for e in events]
    assert statuses[-1] == "succeeded"
    running = [e for e in events if e["status"] == "running"]
    steps = [e["step"] for e in running]
    assert steps == sorted(steps) and max(steps) >= 10, steps  # one event per step, in order
    assert events[-1]["progress"] == 1.0 and len(events[-1]["images"]) == 1

    with connect(_ws_url(platform, job_id), additional_headers=platform.headers("charlie")) as socket:
        events, code = _read_events(socket)
    assert events == [] and code == 4404
    with connect(_ws_url(platform, job_id) + "?token=wrong") as socket:
        events, code = _read_events(socket)
    assert events == [] and code == 4401


def test_cancel_stops_a_running_job_at_the_next_step(platform: Platform) -> None:
    job_id = platform.submit("alice", **HELD, prompt="hold:cancelled a held job")
    platform.wait_until(
        lambda: platform.get("alice", f"/api/v1/jobs/{job_id}").json()["step"] >= 1, timeout=120, what="job running"
    )
    response = platform.post("alice", f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200
    platform.release("cancelled")  # the worker sees the cancel when it next reports a step
    job = platform.wait_job("alice", job_id, timeout=60)
    assert job["status"] == "cancelled"
    assert job["step"] < job["total_steps"]
    assert not [p for p in platform.outputs_of("alice") if p.name.startswith(job_id)]


def test_the_probes_of_each_process_kind_pass_on_a_running_platform(platform: Platform) -> None:
    """The web process's /healthz and /readyz over HTTP; the worker's exec probes (`manage.py probe`)
    against its own heartbeat file and row, as Kubernetes runs them (docker/k8s)."""
    import subprocess
    import sys

    from tests.harness import REPO

    assert httpx.get(f"{platform.base_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{platform.base_url}/readyz", timeout=30)
    assert ready.status_code == 200 and ready.json()["status"] == "ok", ready.text
    template = platform.worker_name("w0").split("@")[0] + "@%h"  # as `celery worker -n` is given it

    def probe(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "manage.py", "probe", *args], cwd=REPO, env=platform.env(),
                              capture_output=True, text=True, timeout=120)

    for mode in ("--live", "--ready"):
        result = probe("worker", mode, "-n", template)
        assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    result = probe("worker", "--ready", "-n", "nobody@%h")
    assert result.returncode == 1 and "unregistered" in result.stderr
    for mode in ("--live", "--ready"):  # the sweeper (the dispatcher) touches its file on every pass
        result = probe("sweeper", mode)
        assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


PLOT = {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2, "seed": 5,
        "xyz": {"x": {"type": "seed", "values": "1, 2"}, "y": {"type": "steps", "values": "1-2"}}}


def _wait_group(platform: Platform, group_id: str) -> dict:
    def finished() -> dict | None:
        group = platform.get("alice", f"/api/v1/job-groups/{group_id}").json()
        return group if group["status"] == "finished" else None

    return platform.wait_until(finished, timeout=180, what=f"job group {group_id} to finish")


def test_an_xyz_plot_runs_four_ordinary_metered_jobs_and_stores_its_grid(platform: Platform) -> None:
    from a1111.xyz_grid import grid_layout

    response = platform.post("alice", "/api/v1/job-groups", PLOT)
    assert response.status_code == 201, response.text
    group = _wait_group(platform, response.json()["id"])
    assert group["cells"]["succeeded"] == 4 and [j["status"] for j in group["jobs"]] == ["succeeded"] * 4
    assert [(j["seeds"], j["labels"][:2]) for j in group["jobs"]] == [
        ([1], ["Seed: 1", "Steps: 1"]), ([2], ["Seed: 2", "Steps: 1"]),
        ([1], ["Seed: 1", "Steps: 2"]), ([2], ["Seed: 2", "Steps: 2"]),
    ]
    usage = {r["job"]: r for r in platform.get("alice", "/api/v1/usage").json()["records"]}
    assert all(usage[j["id"]]["images"] == 1 and usage[j["id"]]["status"] == "succeeded" for j in group["jobs"])
    grid = platform.get("alice", group["grid"])
    assert grid.status_code == 200 and grid.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(grid.content))
    labels = (["Seed: 1", "Seed: 2"], ["Steps: 1", "Steps: 2"], [""])
    assert image.size == grid_layout((2, 2, 1), (64, 64), labels).size
    assert image.info["parameters"].startswith("a lighthouse\nSteps: 1,")
    assert [p.name for p in platform.outputs_of("alice") if p.name.startswith(group["id"])] == [f"{group['id']}-grid.png"]


def test_cancelling_a_plot_cancels_its_queued_cells(platform: Platform) -> None:
    held = platform.submit("alice", **HELD, prompt="hold:plot keeps the worker busy")
    platform.wait_until(
        lambda: platform.get("alice", f"/api/v1/jobs/{held}").json()["step"] >= 1, timeout=120, what="job running"
    )
    response = platform.post("alice", "/api/v1/job-groups", PLOT)
    assert response.status_code == 201, response.text
    group_id = response.json()["id"]
    cancelled = platform.post("alice", f"/api/v1/job-groups/{group_id}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "finished" and cancelled.json()["cells"]["cancelled"] == 4
    platform.post("alice", f"/api/v1/jobs/{held}/cancel")
    platform.release("plot")
    assert platform.wait_job("alice", held, timeout=60)["status"] == "cancelled"
    assert platform.get("alice", f"/api/v1/job-groups/{group_id}").json()["grid"] is None


def test_a_worker_killed_mid_job_does_not_lose_it(platform: Platform) -> None:
    """Runs last in this module: it kills the module's worker."""
    job_id = platform.submit("alice", **{**HELD, "steps": 8}, prompt="hold:killed a job its worker dies in")
    platform.wait_until(
        lambda: platform.get("alice", f"/api/v1/jobs/{job_id}").json()["step"] >= 1, timeout=120, what="job running"
    )
    platform.start_worker("w1")
    platform.wait_for_workers(2)
    platform.kill("w0")  # mid-job: held at its first step
    platform.release("killed")  # the second attempt, on w1, runs through

    job = platform.wait_job("admin", job_id, timeout=240)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    assert job["worker"] == platform.worker_name("w1")
    assert [p.name for p in platform.outputs_of("alice") if p.name.startswith(job_id)] == [f"{job_id}-0.png"]
    workers = {w["name"]: w["state"] for w in platform.get("admin", "/api/v1/workers").json()["workers"]}
    assert workers[platform.worker_name("w0")] == "dead"
    usage = platform.get("alice", "/api/v1/usage").json()["records"]
    assert [r["job"] for r in usage].count(job_id) == 1
