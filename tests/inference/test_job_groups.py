"""X/Y/Z plots as job groups (`/api/v1/job-groups`, `inference/job_groups.py`) on the real database.

Cells are ordinary jobs: submitted through `job_submit` (quotas, usage), all or none; cancelling the
group cancels them; the grid is stored once, when the last cell ends. The cells run on the real
batch runner in this process (`run_on_a_worker`, as a worker process runs them).
"""

from __future__ import annotations

import io

import pytest
from django.core.files.storage import default_storage
from PIL import Image

from a1111.pnginfo import read_png_info
from a1111.xyz_grid import grid_layout
from inference.job_groups import job_group_settle
from inference.models import Job, JobGroup
from tenants.models import UsageRecord
from tests.security.conftest import run_on_a_worker

pytestmark = pytest.mark.django_db

BODY = {"prompt": "a red bicycle", "steps": 2, "width": 64, "height": 64, "seed": 42}
PLOT = {"x": {"type": "seed", "values": "1, 2"}, "y": {"type": "steps", "values": "1-2"}}


@pytest.fixture(autouse=True)
def _model(tiny_checkpoint_path):
    return tiny_checkpoint_path


def submit(api, who: str = "alice", xyz=PLOT, **fields) -> str:
    response = api(who).post("/api/v1/job-groups", {**BODY, **fields, "xyz": xyz})
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "queued"
    return response.json()["id"]


def test_a_2x2_plot_is_four_ordinary_jobs_in_a1111_order(api, personas) -> None:
    group_id = submit(api)
    assert group_id.startswith("g_")
    group = JobGroup.objects.get(public_id=group_id)
    assert (group.owner, group.tenant.slug, group.kind, group.finished_at) == (personas["alice"], "studio-a", "xyz", None)
    cells = list(Job.objects.filter(group=group).order_by("group_index"))
    assert [(c.group_index, c.seeds, c.params["steps"], c.status) for c in cells] == [
        (0, [1], 1, "queued"), (1, [2], 1, "queued"), (2, [1], 2, "queued"), (3, [2], 2, "queued"),
    ]
    detail = api("alice").get(f"/api/v1/job-groups/{group_id}").json()
    assert detail["status"] == "queued" and detail["grid"] is None
    assert detail["cells"]["total"] == 4 and detail["cells"]["queued"] == 4 and detail["cells"]["done"] == 0
    assert [j["id"] for j in detail["jobs"]] == [c.public_id for c in cells]
    assert detail["jobs"][3]["labels"] == ["Seed: 2", "Steps: 2", ""]
    assert detail["axes"]["x"] == {"type": "seed", "values": [1, 2], "labels": ["Seed: 1", "Seed: 2"]}
    # each cell is an ordinary job of its owner
    assert api("alice").get(f"/api/v1/jobs/{cells[0].public_id}").json()["status"] == "queued"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"xyz": {"x": {"type": "steps", "values": "0-2"}}}, "xyz.x.values"),
        ({"xyz": {"x": {"type": "sampler", "values": "Nope"}}}, "xyz.x.values"),
        ({"xyz": {"y": {"type": "prompt_sr", "values": "dog, cat"}}}, "xyz.y.values"),
        ({"xyz": {"x": {"type": "speed", "values": "1"}}}, "xyz.x.type"),
        ({"xyz": "seed"}, "xyz"),
        ({}, "xyz"),
        ({"xyz": PLOT, "kind": "img2img"}, "kind"),
        ({"xyz": PLOT, "steps": 0}, "steps"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_queues_nothing(api, body, field) -> None:
    response = api("alice").post("/api/v1/job-groups", {**BODY, **body})
    assert response.status_code == 400, response.content
    assert response.json()["field"] == field
    assert not Job.objects.exists() and not JobGroup.objects.exists()


def test_an_unknown_checkpoint_on_an_axis_is_a_404_naming_the_axis(api) -> None:
    xyz = {"x": {"type": "checkpoint", "values": "atelier-tiny.safetensors, nope.safetensors"}}
    response = api("alice").post("/api/v1/job-groups", {**BODY, "xyz": xyz})
    assert response.status_code == 404 and response.json()["field"] == "xyz.x.values"
    assert not Job.objects.exists() and not JobGroup.objects.exists()


def test_a_plot_over_the_cell_limit_is_refused_naming_the_limit(api, settings) -> None:
    settings.ATELIER_MAX_XYZ_CELLS = 3
    response = api("alice").post("/api/v1/job-groups", {**BODY, "xyz": PLOT})
    assert response.status_code == 400 and response.json()["field"] == "xyz"
    assert "ATELIER_MAX_XYZ_CELLS" in response.json()["error"] and "at most 3" in response.json()["error"]
    assert not Job.objects.exists()


def test_all_or_nothing_a_cell_over_the_queue_quota_leaves_no_cell_queued(api, settings) -> None:
    settings.ATELIER_MAX_QUEUED_JOBS_PER_USER = 5
    assert api("alice").post("/api/v1/jobs", BODY).status_code == 201
    assert api("alice").post("/api/v1/jobs", BODY).status_code == 201
    response = api("alice").post("/api/v1/job-groups", {**BODY, "xyz": PLOT})  # 2 + 4 > 5
    assert response.status_code == 429, response.content
    assert Job.objects.count() == 2 and not JobGroup.objects.exists()
    assert api("alice").post("/api/v1/job-groups", {**BODY, "xyz": {"x": PLOT["x"]}}).status_code == 201  # 2 + 2 fit


def test_cancelling_the_plot_cancels_its_queued_cells(api) -> None:
    group_id = submit(api)
    other = api("alice").post("/api/v1/jobs", BODY).json()["id"]
    response = api("alice").post(f"/api/v1/job-groups/{group_id}/cancel")
    assert response.status_code == 200
    detail = response.json()
    assert detail["status"] == "finished" and detail["cells"]["cancelled"] == 4 and detail["grid"] is None
    assert set(Job.objects.filter(group__public_id=group_id).values_list("status", flat=True)) == {"cancelled"}
    assert Job.objects.get(public_id=other).status == "queued"  # not a cell of the plot
    assert api("alice").get(f"/api/v1/job-groups/{group_id}/grid").status_code == 404


@pytest.mark.django_db(transaction=True)  # the batch runner reports progress from its own thread
def test_the_last_cell_to_end_stores_the_grid_once_with_blank_tiles_for_cancelled_cells(api, personas) -> None:
    from django.conf import settings

    from runtime.engine import WorkerRuntime

    runtime = WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=settings.ATELIER_MODEL_CACHE_DIR)
    group_id = submit(api)
    cells = list(Job.objects.filter(group__public_id=group_id).order_by("group_index"))
    api("alice").post(f"/api/v1/jobs/{cells[1].public_id}/cancel")
    for job in (cells[0], cells[2]):
        run_on_a_worker([job], name=f"cell{job.group_index}", runtime=runtime)
        assert job.status == "succeeded", job.error
    group = JobGroup.objects.get(public_id=group_id)
    assert group.finished_at is None and not group.grid_output  # one cell is still queued
    run_on_a_worker([cells[3]], name="cell3", runtime=runtime)  # the last cell: its finish stores the grid
    group.refresh_from_db()
    assert group.finished_at is not None and group.grid_output.endswith(f"{group_id}-grid.png")
    assert group.grid_output.startswith("users/alice/outputs/")
    finished_at = group.finished_at
    assert job_group_settle(group=group).finished_at == finished_at  # settled once

    # each cell that ran is metered as any job (a cell cancelled while queued used no GPU: no record)
    records = {r.job.group_index: r for r in UsageRecord.objects.filter(job__group=group)}
    assert {i: (r.status, r.images) for i, r in records.items()} == {
        0: ("succeeded", 1), 2: ("succeeded", 1), 3: ("succeeded", 1),
    }

    detail = api("alice").get(f"/api/v1/job-groups/{group_id}").json()
    assert detail["status"] == "finished" and detail["grid"] == f"/api/v1/job-groups/{group_id}/grid"
    response = api("alice").get(detail["grid"])
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    data = b"".join(response.streaming_content)
    grid = Image.open(io.BytesIO(data)).convert("RGB")
    layout = grid_layout((2, 2, 1), (64, 64), (["Seed: 1", "Seed: 2"], ["Steps: 1", "Steps: 2"], [""]))
    assert grid.size == layout.size
    for index, (left, top) in enumerate(layout.boxes):
        tile = grid.crop((left, top, left + 64, top + 64))
        if index == 1:
            assert tile.getcolors() == [(64 * 64, (235, 235, 235))]  # the cancelled cell: a blank tile
        else:
            cell = Image.open(default_storage.open(Job.objects.get(pk=cells[index].pk).outputs[0])).convert("RGB")
            assert tile.tobytes() == cell.tobytes()
    infotext, _ = read_png_info(data)
    assert infotext is not None and "Seed: 1" in infotext  # the first cell's infotext, as A1111's grid


def test_alices_plot_is_404_to_other_members_on_every_endpoint(api, personas, client) -> None:
    group_id = submit(api, "bob")  # bob's plot: alice (his tenant's admin) may see it, charlie may not
    paths = [f"/api/v1/job-groups/{group_id}", f"/api/v1/job-groups/{group_id}/grid"]
    for path in paths:
        assert api("charlie").get(path).status_code == 404
        assert client.get(path).status_code == 401  # anonymous
    assert api("charlie").post(f"/api/v1/job-groups/{group_id}/cancel").status_code == 404
    assert client.post(f"/api/v1/job-groups/{group_id}/cancel").status_code == 401
    assert client.post("/api/v1/job-groups", {**BODY, "xyz": PLOT}, content_type="application/json").status_code == 401
    assert set(Job.objects.filter(group__public_id=group_id).values_list("status", flat=True)) == {"queued"}
    assert api("charlie").get(f"/api/v1/job-groups/{group_id}").json() == {"error": "job group not found"}
    assert api("alice").get(f"/api/v1/job-groups/{group_id}").status_code == 200  # the tenant's admin
    assert api("bob").get(f"/api/v1/job-groups/{group_id}").status_code == 200
