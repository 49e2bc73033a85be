"""The txt2img tab's Script dropdown: an X/Y/Z plot from the workspace (`frontend/workspace/tabs/xyz.py`).

The member's real Blocks are built and their callbacks called as Gradio calls them; the worker's
part is played by `finish` (claim, store PNGs, succeed), as in test_workspace_ui.py.
"""

from __future__ import annotations

import gradio as gr
import pytest

from frontend.workspace.tabs.xyz import SCRIPT_NONE, SCRIPT_XYZ
from inference.models import Job, JobGroup
from tests.frontend.test_workspace_ui import args, finish, form, unit, workspace_for

pytestmark = pytest.mark.django_db


def plot_args(x_type="Seed", x_values="1, 2", y_type="Steps", y_values="1-2", z_type="Nothing", z_values="", **fields):
    """The generate click's arguments: the form, the ControlNet units, then the Script's fields."""
    return (*args(form(batch_size=1, **fields), units=[unit()]), SCRIPT_XYZ, x_type, x_values, y_type, y_values,
            z_type, z_values)


def test_the_script_dropdown_reveals_the_axes_fields(personas) -> None:
    tab = workspace_for(personas["alice"]).txt2img
    assert tab["script"].value == SCRIPT_NONE and tab["xyz_panel"].visible is False
    assert tab.script_changed(SCRIPT_XYZ).visible is True
    assert tab.script_changed(SCRIPT_NONE).visible is False
    assert tab["xyz_x_type"].value == "Seed" and "Prompt S/R" in [c[0] for c in tab["xyz_y_type"].choices]


def test_generate_with_the_plot_submits_its_cells_and_shows_the_grid_then_the_cells(personas, tiny_checkpoint_path) -> None:
    alice = workspace_for(personas["alice"]).txt2img
    stream = alice.generate_txt2img(*plot_args())
    progress, _items, _refs, _info, group_id, _selected = next(stream)
    group = JobGroup.objects.get(public_id=group_id)
    assert group.owner == personas["alice"]
    assert 'data-cell="1" data-cells="4"' in progress and "Cell 1 of 4" in progress
    cells = list(Job.objects.filter(group=group).order_by("group_index"))
    assert [(c.seeds, c.params["steps"], c.params["prompt"]) for c in cells] == [
        ([1], 1, "a lighthouse at dawn"), ([2], 1, "a lighthouse at dawn"),
        ([1], 2, "a lighthouse at dawn"), ([2], 2, "a lighthouse at dawn"),
    ]
    finish(cells[0])
    for job in cells[1:]:
        finish(job)
    *_, last = stream
    progress, items, refs, info, job_id, _selected = last
    assert 'data-finished="1"' in progress and "Cell 4 of 4" in progress and job_id == ""
    assert [caption for _image, caption in items] == [
        "Grid", "Seed: 1, Steps: 1", "Seed: 2, Steps: 1", "Seed: 1, Steps: 2", "Seed: 2, Steps: 2",
    ]
    assert items[0][0].width > 2 * 64 and items[0][0].height > 2 * 96  # the grid: 2×2 cells and labels
    assert refs == [(cells[0].public_id, 0), *((c.public_id, 0) for c in cells)]
    assert "Seed: 1" in info
    # A reload shows the plot again: its grid first
    reloaded = next(workspace_for(personas["alice"]).txt2img.reattach())
    assert [caption for _image, caption in reloaded[1]][0] == "Grid"


def test_a_bad_axis_is_refused_naming_the_field_and_queues_nothing(personas, tiny_checkpoint_path) -> None:
    stream = workspace_for(personas["alice"]).txt2img.generate_txt2img(*plot_args(y_type="Prompt S/R", y_values="dog, cat"))
    refused = next(stream)
    assert 'data-status="error"' in refused[0] and "xyz.y.values" in refused[0]
    with pytest.raises(gr.Error, match="Prompt S/R"):
        next(stream)
    assert not Job.objects.exists() and not JobGroup.objects.exists()


def test_cancel_and_reload_reach_the_members_own_plot_only(personas, tiny_checkpoint_path) -> None:
    alice, charlie = workspace_for(personas["alice"]).txt2img, workspace_for(personas["charlie"]).txt2img
    group_id = next(alice.generate_txt2img(*plot_args()))[4]
    charlie.cancel(group_id)  # charlie cannot cancel alice's plot, even with its id
    assert next(charlie.reattach())[4] == ""  # nor does his page reattach to it
    assert set(Job.objects.filter(group__public_id=group_id).values_list("status", flat=True)) == {"queued"}
    reloaded = next(workspace_for(personas["alice"]).txt2img.reattach())  # alice reloads: her plot
    assert reloaded[4] == group_id and "Cell 1 of 4" in reloaded[0]
    cancelled = alice.cancel("")  # the id was lost with the reload: her newest unfinished plot
    assert f'data-group="{group_id}"' in cancelled and 'data-finished="1"' in cancelled
    assert set(Job.objects.filter(group__public_id=group_id).values_list("status", flat=True)) == {"cancelled"}
