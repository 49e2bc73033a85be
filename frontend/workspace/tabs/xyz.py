"""The txt2img tab's "Script" dropdown: A1111's X/Y/Z plot, as a job group of ordinary jobs.

`XyzScript` is mixed into the txt2img tab. Picking "X/Y/Z plot" shows the X, Y and Z axis type
and values fields (A1111's labels and value syntax, `a1111/xyz.py`); Generate then submits the
plot (`frontend/workspace/jobs.py` `workspace_submit_plot`: one job per cell, all or none) and
follows it: the bar says "Cell k of n" above the running cell's own bar, and the gallery shows
the grid first, then each cell's images. Cancel cancels every unfinished cell. A reload
reattaches to the member's newest unfinished plot (read from the JobGroup rows, like jobs), and
shows the newest plot's grid and cells when its last cell is the tab's newest result.

The script's fields travel after the ControlNet units in the generate callback's inputs
(`script_inputs`); a caller that leaves them out (older tests, the API) generates one image.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from html import escape
from typing import Any

import gradio as gr

from a1111.xyz import AXIS_NAMES, AXIS_TYPES, XyzPlot
from frontend.workspace.jobs import (
    POLL_SECONDS,
    as_workspace_error,
    member_errors,
    preview_image,
    progress_error_html,
    progress_html,
    workspace_submit_plot,
)
from frontend.workspace.tabs.base import callback
from inference.job_groups import GroupState, job_group_cancel, job_group_state
from inference.models import Job, JobGroup
from inference.selectors import job_group_newest_active_for_owner, job_newest_finished_for_owner
from inference.storage import member_image_open

SCRIPT_NONE = "None"
SCRIPT_XYZ = "X/Y/Z plot"  # A1111's script title
XYZ_FIELDS = ("script", "xyz_x_type", "xyz_x_values", "xyz_y_type", "xyz_y_values", "xyz_z_type", "xyz_z_values")
AXIS_LABELS = [axis_type.label for axis_type in AXIS_TYPES]
DEFAULT_TYPES = {"x": "Seed", "y": "Nothing", "z": "Nothing"}


def plot_axes(values: dict[str, Any]) -> dict[str, Any]:
    """The form's axis fields as the API's `xyz` object (an axis of type Nothing is left out)."""
    axes = {}
    for name in AXIS_NAMES:
        axis_type = values.get(f"xyz_{name}_type") or "Nothing"
        if axis_type != "Nothing":
            axes[name] = {"type": axis_type, "values": values.get(f"xyz_{name}_values") or ""}
    return axes


def own_group(user: Any, public_id: str) -> JobGroup | None:
    """The member's own plot (stricter than `job_group_get_for_user`, as `own_job` is for jobs)."""
    if not public_id or not public_id.startswith("g_"):
        return None
    return JobGroup.objects.filter(owner=user, public_id=public_id).first()


class XyzScript:
    """The Script dropdown and the X/Y/Z plot's callbacks, for the txt2img tab (`GenerationTab`)."""

    components: dict[str, Any]

    def build_script(self) -> None:
        c = self.components
        c["script"] = self.tr(gr.Dropdown(
            choices=[SCRIPT_NONE, SCRIPT_XYZ], value=SCRIPT_NONE, label=self.t("script"), elem_id="atelier-txt2img-script",
        ), "script")
        with gr.Group(visible=False, elem_id="atelier-xyz") as c["xyz_panel"]:
            for name in AXIS_NAMES:
                with gr.Row():
                    c[f"xyz_{name}_type"] = self.tr(gr.Dropdown(
                        choices=AXIS_LABELS, value=DEFAULT_TYPES[name], label=self.t(f"xyz_{name}_type"), scale=1,
                        elem_id=f"atelier-xyz-{name}-type",
                    ), f"xyz_{name}_type")
                    c[f"xyz_{name}_values"] = self.tr(gr.Textbox(
                        value="", label=self.t(f"xyz_{name}_values"), scale=3, elem_id=f"atelier-xyz-{name}-values",
                    ), f"xyz_{name}_values")
            c["xyz_help"] = self.tr(gr.Markdown(self.t("xyz_help")), "xyz_help", "value")

    def script_inputs(self) -> list[Any]:
        return [self.components[name] for name in XYZ_FIELDS]

    def wire_script(self) -> None:
        c = self.components
        c["script"].change(self.script_changed, inputs=[c["script"]], outputs=[c["xyz_panel"]])

    def split_script(self, args: tuple[Any, ...]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """(the form's other arguments, the script's fields): the script's are the last ones, when given."""
        if len(args) != len(self.inputs()):  # the generate click's inputs end with the script's
            return args, {"script": SCRIPT_NONE}
        return args[: -len(XYZ_FIELDS)], dict(zip(XYZ_FIELDS, args[-len(XYZ_FIELDS):], strict=True))

    @callback
    def script_changed(self, script: str | None) -> Any:
        return gr.Group(visible=script == SCRIPT_XYZ)

    # --- submitting and following a plot ---------------------------------------------------
    def submit_plot_and_follow(self, args: tuple[Any, ...], script: dict[str, Any]) -> Iterator[tuple]:
        values, _editor = self._values(args)
        try:
            group = workspace_submit_plot(user=self.user, values=values, axes=plot_axes(script))
        except Exception as exc:  # the reason replaces the previous job's bar, as for one image
            error = as_workspace_error(exc, self.language)
            yield progress_error_html(error.message), gr.skip(), gr.skip(), gr.skip(), "", gr.skip()
            raise error from None
        yield from self.follow_plot(group)

    def plot_progress_html(self, state: GroupState) -> str:
        """'Cell k of n' and the current cell's own bar (the last cell's once the plot has ended)."""
        total = len(state.cells)
        current = next((job for job in state.cells if not job.is_finished), state.cells[-1] if state.cells else None)
        k = min(state.done + (0 if state.group.finished_at else 1), total)
        counter = escape(self.t("xyz_cell").format(k=k, n=total))
        return (
            f'<div class="atelier-xyz-progress" data-group="{escape(state.group.public_id)}" data-cell="{k}" '
            f'data-cells="{total}" data-finished="{1 if state.group.finished_at else 0}">'
            f'<div class="atelier-xyz-cell">{counter}</div>{progress_html(current, self.language)}</div>'
        )

    def follow_plot(self, group: JobGroup, poll_seconds: float = POLL_SECONDS) -> Iterator[tuple]:
        """Yield (progress, result images, refs, info, group id, selection) as the cells run, until every one ended."""
        shown: tuple | None = None
        while True:
            state = job_group_state(group=group)
            if state.group.finished_at is not None:
                break
            current = next((job for job in state.cells if not job.is_finished), None)
            seen = (state.done, current.status if current else "", current.step if current else 0)
            if seen != shown:
                shown = seen
                preview = [(preview_image(current.preview), self.t("preview"))] if current and current.preview else gr.skip()
                yield self.plot_progress_html(state), preview, gr.skip(), gr.skip(), group.public_id, gr.skip()
            time.sleep(poll_seconds)
            group.refresh_from_db()
        yield self.plot_outputs(state)
        if state.counts[Job.Status.CANCELLED]:
            gr.Warning(self.t("status_cancelled"))

    def plot_outputs(self, state: GroupState) -> tuple:
        """The ended plot: its grid first (picking it shows the first cell's parameters, as A1111's
        grid carries them), then each cell's images, captioned with the cell's labels."""
        plot = XyzPlot.from_json(state.group.spec)
        items: list[tuple[Any, str]] = []
        refs: list[tuple[str, int]] = []
        with member_errors(self.language):
            for job in state.cells:
                if job.status != Job.Status.SUCCEEDED:
                    continue
                caption = ", ".join(label for label in plot.cell_labels(job.group_index or 0) if label)
                for position, key in enumerate(job.outputs):
                    items.append((member_image_open(key), caption))
                    refs.append((job.public_id, position))
            if state.group.grid_output and refs:
                items.insert(0, (member_image_open(state.group.grid_output), self.t("xyz_grid")))
                refs.insert(0, refs[0])
        first = next((job for job in state.cells if job.status == Job.Status.SUCCEEDED and job.infotexts), None)
        info = first.infotexts[0] if first else ""
        return self.plot_progress_html(state), items, refs, info, "", None

    # --- the tab's Cancel and page load, aware of plots --------------------------------------
    @callback
    def cancel(self, public_id: str) -> str:
        group = own_group(self.user, public_id) or (None if public_id else job_group_newest_active_for_owner(self.user))
        if group is None or group.finished_at is not None:
            return super().cancel(public_id)  # type: ignore[misc]
        return self.plot_progress_html(job_group_state(group=job_group_cancel(group=group)))

    @callback(skip_when_refused=6)
    def reattach(self) -> Iterator[tuple]:
        active = job_group_newest_active_for_owner(self.user)
        if active is not None:
            yield from self.follow_plot(active)
            return
        finished = job_newest_finished_for_owner(self.user, "txt2img")
        group = finished.group if finished is not None and finished.group_id else None
        if group is not None and group.owner_id == self.user.pk:
            yield self.plot_outputs(job_group_state(group=group))
            return
        yield from super().reattach()  # type: ignore[misc]
