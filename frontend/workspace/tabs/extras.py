"""The Extras tab (A1111's "Extras"): upscale and restore faces of one image, a batch of the
member's gallery images, or a folder of their working directory.

Sub-tabs pick where the images come from (Single image, Batch from Gallery, Batch from folder);
the fields are A1111's (resize by a factor or to a size, upscaler 1 and an optional upscaler 2
blended by its visibility, GFPGAN and CodeFormer visibilities and CodeFormer's weight). Generate
queues one "extras" job through `frontend/workspace/extras.py` (the service path of
`/sdapi/v1/extra-single-image` and `extra-batch-images`), then follows the member's Job row to
its images, as the generation tabs do (a page load follows the member's running Extras job, or
shows the last one's images); Cancel stops it at its next image. A face restorer whose
weights are not installed is refused at submission with the service's message saying what to
install.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from a1111.extras import BUILTIN_RESIZERS, EXTRAS_KIND
from frontend.member_selectors import gallery_for_user
from frontend.workspace.extras import FIELDS, workspace_extras_submit
from frontend.workspace.jobs import (
    POLL_SECONDS,
    WorkspaceError,
    as_workspace_error,
    member_errors,
    progress_error_html,
    progress_html,
    watch_job,
    workspace_cancel,
)
from frontend.workspace.tab_ids import EXTRAS_TAB
from frontend.workspace.tabs.base import Tab, callback
from inference.model_registry import upscalers_for_user
from inference.models import Job
from inference.selectors import job_newest_active_for_owner, job_newest_finished_for_owner
from inference.storage import member_image_open

RESIZE_MODES = (("ex_scale_by", "by"), ("ex_scale_to", "to"))


def gallery_choice_label(entry: Any) -> str:
    prompt = entry.prompt if len(entry.prompt) <= 40 else entry.prompt[:39] + "…"
    return f"{entry.created_at:%m-%d %H:%M} · {prompt or '-'} · #{entry.index + 1}"


class ExtrasTab(Tab):
    tab_id = EXTRAS_TAB

    def __init__(self, workspace: Any) -> None:
        super().__init__(workspace)
        self.components: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        return self.components[name]

    def upscaler_choices(self) -> list[str]:
        return [*BUILTIN_RESIZERS, *(name for name, _entry in upscalers_for_user(self.user))]

    def gallery_choices(self) -> list[tuple[str, str]]:
        return [(gallery_choice_label(entry), f"{entry.job_id}:{entry.index}") for entry in gallery_for_user(self.user)]

    # --- layout ---------------------------------------------------------------------------
    def build(self) -> None:
        c = self.components
        c["source"] = gr.State("single")
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Tabs(elem_id="atelier-extras-sources"):
                    with self.tr(gr.Tab(self.t("ex_single"), elem_id="atelier-extras-single"), "ex_single") as single:
                        c["image"] = self.tr(gr.Image(type="pil", label=self.t("ex_image"), sources=["upload"],
                                                      elem_id="atelier-extras-image", height=320), "ex_image")
                    with self.tr(gr.Tab(self.t("ex_gallery"), elem_id="atelier-extras-gallery"), "ex_gallery") as gallery:
                        with gr.Row(equal_height=True):
                            c["gallery_refs"] = self.tr(gr.Dropdown(
                                choices=self.gallery_choices(), value=[], multiselect=True, scale=4,
                                label=self.t("ex_gallery_pick"), elem_id="atelier-extras-gallery-pick",
                            ), "ex_gallery_pick")
                            c["gallery_refresh"] = self.tr(gr.Button(self.t("refresh_gallery"), scale=1),
                                                           "refresh_gallery", "value")
                    with self.tr(gr.Tab(self.t("ex_folder"), elem_id="atelier-extras-folder"), "ex_folder") as folder:
                        c["folder"] = self.tr(gr.Textbox(
                            label=self.t("ex_folder_path"), placeholder="inputs/faces", info=self.t("ex_folder_info"),
                            elem_id="atelier-extras-folder-path",
                        ), "ex_folder_path")
                c["source_tabs"] = {"single": single, "gallery": gallery, "folder": folder}
                with gr.Row():
                    c["resize_mode"] = self.tr(self.workspace.tr_choices(gr.Radio(
                        choices=[(self.t(key), value) for key, value in RESIZE_MODES], value="by",
                        label=self.t("ex_resize_mode"), elem_id="atelier-extras-resize-mode",
                    ), RESIZE_MODES), "ex_resize_mode")
                    c["upscaling_resize"] = self.tr(gr.Slider(1, 8, value=2, step=0.05, label=self.t("ex_resize"),
                                                              elem_id="atelier-extras-resize"), "ex_resize")
                with gr.Row():
                    c["upscaling_resize_w"] = self.tr(gr.Number(value=512, precision=0, minimum=1,
                                                                label=self.t("ex_resize_w")), "ex_resize_w")
                    c["upscaling_resize_h"] = self.tr(gr.Number(value=512, precision=0, minimum=1,
                                                                label=self.t("ex_resize_h")), "ex_resize_h")
                    c["upscaling_crop"] = self.tr(gr.Checkbox(value=True, label=self.t("ex_crop")), "ex_crop")
                upscalers = self.upscaler_choices()
                with gr.Row():
                    c["upscaler_1"] = self.tr(gr.Dropdown(choices=upscalers, value="Lanczos", label=self.t("ex_upscaler_1"),
                                                          elem_id="atelier-extras-upscaler-1"), "ex_upscaler_1")
                    c["upscaler_2"] = self.tr(gr.Dropdown(choices=upscalers, value="None", label=self.t("ex_upscaler_2"),
                                                          elem_id="atelier-extras-upscaler-2"), "ex_upscaler_2")
                    c["extras_upscaler_2_visibility"] = self.tr(gr.Slider(
                        0, 1, value=0, step=0.001, label=self.t("ex_upscaler_2_visibility"),
                    ), "ex_upscaler_2_visibility")
                with gr.Row():
                    c["gfpgan_visibility"] = self.tr(gr.Slider(0, 1, value=0, step=0.001, label=self.t("ex_gfpgan"),
                                                               elem_id="atelier-extras-gfpgan"), "ex_gfpgan")
                    c["codeformer_visibility"] = self.tr(gr.Slider(
                        0, 1, value=0, step=0.001, label=self.t("ex_codeformer"), elem_id="atelier-extras-codeformer",
                    ), "ex_codeformer")
                    c["codeformer_weight"] = self.tr(gr.Slider(0, 1, value=0, step=0.001,
                                                               label=self.t("ex_codeformer_weight")),
                                                     "ex_codeformer_weight")
            with gr.Column(scale=2):
                with gr.Row():
                    c["generate"] = self.tr(gr.Button(self.t("generate"), variant="primary", scale=3,
                                                      elem_id="atelier-extras-generate"), "generate", "value")
                    c["cancel"] = self.tr(gr.Button(self.t("cancel"), variant="stop", scale=1,
                                                    elem_id="atelier-extras-cancel"), "cancel", "value")
                c["progress"] = gr.HTML(progress_html(None, self.language), elem_id="atelier-extras-progress")
                c["job_id"] = gr.Textbox(value="", visible=False)
                c["result"] = self.tr(gr.Gallery(label=self.t("output"), columns=2, height=420, format="png",
                                                 elem_id="atelier-extras-result", object_fit="contain"), "output")
                c["info"] = self.tr(gr.Textbox(label=self.t("generation_info"), lines=3, interactive=False,
                                               elem_id="atelier-extras-info"), "generation_info")

    # --- wiring ---------------------------------------------------------------------------
    def inputs(self) -> list[Any]:
        c = self.components
        return [c["source"], c["image"], c["gallery_refs"], c["folder"], *(c[name] for name in FIELDS)]

    def outputs(self) -> list[Any]:
        c = self.components
        return [c["progress"], c["result"], c["info"], c["job_id"]]

    def wire(self) -> None:
        c = self.components
        for source, tab in c["source_tabs"].items():
            tab.select(getattr(self, f"extras_from_{source}"), outputs=[c["source"]], show_progress="hidden")
        c["generate"].click(self.generate_extras, inputs=self.inputs(), outputs=self.outputs(),
                            show_progress_on=[c["result"]])
        c["cancel"].click(self.cancel, inputs=[c["job_id"]], outputs=[c["progress"]])
        c["gallery_refresh"].click(self.refresh_extras_gallery, inputs=[c["gallery_refs"]], outputs=[c["gallery_refs"]])
        self.workspace.blocks.load(self.refresh_extras_gallery, inputs=[c["gallery_refs"]],
                                   outputs=[c["gallery_refs"]], show_progress="hidden")
        # A reload (or a second browser tab) follows the running Extras job, or shows the last result.
        self.workspace.blocks.load(self.reattach_extras, outputs=self.outputs(), concurrency_limit=None,
                                   show_progress="hidden")

    # --- callbacks ------------------------------------------------------------------------
    @callback
    def extras_from_single(self) -> str:
        return "single"

    @callback
    def extras_from_gallery(self) -> str:
        return "gallery"

    @callback
    def extras_from_folder(self) -> str:
        return "folder"

    @callback(skip_when_refused=1)
    def refresh_extras_gallery(self, current: list | None = None) -> dict[str, Any]:
        """The member's gallery as choices again; picks no longer in it are dropped."""
        choices = self.gallery_choices()
        values = {value for _label, value in choices}
        return gr.update(choices=choices, value=[ref for ref in current or [] if ref in values])

    @callback
    def generate_extras(self, source: str, image: Any, gallery_refs: list | None, folder: str | None,
                   *fields: Any) -> Iterator[tuple]:
        """Queue the Extras job as the member and follow it to its images."""
        values = dict(zip(FIELDS, fields, strict=True))
        try:
            job = workspace_extras_submit(user=self.user, source=source or "single", values=values, image=image,
                                          gallery_refs=gallery_refs, folder=folder)
        except Exception as exc:
            error = as_workspace_error(exc, self.language)
            yield progress_error_html(error.message), gr.skip(), gr.skip(), ""
            raise error from None
        yield from self.follow(job)

    def finished_outputs(self, job: Job) -> tuple:
        """(progress, images, info, job id) of a finished job: its images when it succeeded, else its bar only."""
        html = progress_html(job, self.language)
        if job.status != Job.Status.SUCCEEDED:
            return html, [], "", ""
        with member_errors(self.language):
            images = [member_image_open(key) for key in job.outputs]
        names = job.params.get("names") or []
        items = [(image, names[index] if index < len(names) else "") for index, image in enumerate(images)]
        return html, items, job.infotexts[-1] if job.infotexts else "", ""

    def follow(self, job: Job) -> Iterator[tuple]:
        """Yield (progress, images, info, job id) as the job moves, until it ends."""
        current = job
        for current, queue in watch_job(self.user, job.public_id, poll_seconds=POLL_SECONDS):
            if not current.is_finished:
                yield progress_html(current, self.language, queue), gr.skip(), gr.skip(), job.public_id
        yield self.finished_outputs(current)
        if current.status == Job.Status.FAILED:
            raise WorkspaceError(current.error or self.t("status_failed"))
        if current.status == Job.Status.CANCELLED:
            gr.Warning(self.t("status_cancelled"))

    @callback(skip_when_refused=4)  # a page load of a tab hidden since the process started: nothing
    def reattach_extras(self) -> Iterator[tuple]:
        """On each page load: the member's running or queued Extras job followed to its images,
        else their newest finished one's result (read from their own Job rows)."""
        active = job_newest_active_for_owner(self.user, EXTRAS_KIND)
        if active is not None:
            yield from self.follow(active)
            return
        finished = job_newest_finished_for_owner(self.user, EXTRAS_KIND)
        yield self.finished_outputs(finished) if finished else (progress_html(None, self.language), [], "", "")

    @callback
    def cancel(self, public_id: str) -> str:
        job = workspace_cancel(user=self.user, public_id=public_id or "", kind=EXTRAS_KIND)
        if job is None:
            gr.Info(self.t("nothing_to_cancel"))
            return gr.skip()
        return progress_html(job, self.language)
