"""The generation form txt2img and img2img share: its fields, ControlNet panel, result gallery
and the callbacks that submit a job as the member and follow it to its images.

Generation goes through `inference.services.job_submit` (`frontend/workspace/jobs.py`) and
is followed by polling the member's Job row. `txt2img.py` and `img2img.py` add their own
fields and their generate callback.

The Job rows, not this process's memory, are what a tab shows: on every page load (a reload,
a second browser tab) `reattach` follows the member's newest running or queued job of the
tab's kind, or shows the newest finished one, and Cancel finds the running job the same way.
A job that could not be submitted, failed or was cancelled replaces the previous job's bar and
preview: nothing of an earlier job stays on screen as if it were the current one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr
from PIL import Image

from frontend.member_selectors import GENERATION_DEFAULTS
from frontend.workspace import controlnet
from frontend.workspace.i18n import text
from frontend.workspace.jobs import (
    POLL_SECONDS,
    WorkspaceError,
    as_workspace_error,
    member_errors,
    preview_image,
    progress_error_html,
    progress_html,
    watch_job,
    workspace_cancel,
    workspace_submit,
)
from frontend.workspace.styles import StylesPanel
from frontend.workspace.tabs.base import PicksImages, callback
from frontend.workspace.tabs.seed import SeedButtons
from frontend.workspace.tabs.skip import SkipsImages
from inference.limits import generation_limits
from inference.models import Job
from inference.selectors import job_newest_active_for_owner, job_newest_finished_for_owner
from a1111.samplers import SAMPLERS, SCHEDULES
from inference.storage import member_image_open


# The form fields of each generation tab, in the order the callbacks receive them.
COMMON_FIELDS = (
    "prompt", "negative_prompt", "styles", "sampler_name", "scheduler", "steps", "cfg_scale",
    "width", "height", "seed", "n_iter", "batch_size", "tiling", "restore_faces",
)


def controlnet_dropdown(choices: list[str], current: str | None) -> gr.Dropdown:
    """A ControlNet model list, keeping the unit's current pick while it is still there."""
    return gr.Dropdown(choices=choices, value=current if current in choices else None)


class GenerationTab(SeedButtons, SkipsImages, PicksImages):
    """One generation form (`kind` is "txt2img" or "img2img"); its components by field name."""

    kind: str
    own_fields: tuple[str, ...] = ()  # after COMMON_FIELDS, in the order the callbacks receive them

    def __init__(self, workspace: Any) -> None:
        super().__init__(workspace)
        self.components: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        return self.components[name]

    # --- layout ---------------------------------------------------------------------------
    def build(self) -> None:
        kind, d, c = self.kind, self.workspace.defaults, self.components
        lim = generation_limits()  # the sliders carry this deployment's real bounds (the API's too)
        with gr.Row():
            with gr.Column(scale=3):
                self.build_source()
                c["prompt"] = self.tr(gr.Textbox(
                    value=d["prompt"], label=self.t("prompt"), lines=3, elem_id=f"atelier-{kind}-prompt",
                ), "prompt")
                c["negative_prompt"] = self.tr(gr.Textbox(
                    value=d["negative_prompt"], label=self.t("negative_prompt"), lines=2,
                    elem_id=f"atelier-{kind}-negative",
                ), "negative_prompt")
                # The "prompt-styles" extension's panel: shown only while the member has it on.
                self.styles_panel = StylesPanel(self.workspace, kind)
                c["styles"] = self.styles_panel.build(d.get("styles"))
                with self.tr(gr.Accordion(self.t("networks"), open=False), "networks"):
                    with gr.Row(equal_height=True):
                        c["network"] = self.tr(gr.Dropdown(
                            choices=self.workspace.network_choices(), value=None, label=self.t("network_pick"), scale=4,
                        ), "network_pick")
                        c["network_insert"] = self.tr(
                            gr.Button(self.t("network_insert"), scale=1), "network_insert", "value"
                        )
                with gr.Row():
                    c["sampler_name"] = self.tr(gr.Dropdown(
                        choices=[s.name for s in SAMPLERS], value=d["sampler_name"], label=self.t("sampler"),
                    ), "sampler")
                    c["scheduler"] = self.tr(gr.Dropdown(
                        choices=[s.label for s in SCHEDULES], value=d["scheduler"], label=self.t("scheduler"),
                    ), "scheduler")
                    c["steps"] = self.tr(gr.Slider(1, lim.max_steps, value=d["steps"], step=1,
                                                   label=self.t("steps"),
                                                   elem_id=f"atelier-{kind}-steps"), "steps")
                with gr.Row():
                    c["width"] = self.tr(gr.Slider(lim.min_size, lim.max_size, step=8, label=self.t("width"),
                                                   value=d["width"],
                                                   elem_id=f"atelier-{kind}-width"), "width")
                    c["height"] = self.tr(gr.Slider(lim.min_size, lim.max_size, step=8, label=self.t("height"),
                                                    value=d["height"],
                                                    elem_id=f"atelier-{kind}-height"), "height")
                with gr.Row():
                    c["cfg_scale"] = self.tr(gr.Slider(1, 30, value=d["cfg_scale"], step=0.5,
                                                       label=self.t("cfg_scale")), "cfg_scale")
                    c["seed"] = self.tr(gr.Number(value=d["seed"], precision=0, label=self.t("seed"),
                                                  elem_id=f"atelier-{kind}-seed"), "seed")
                    self.build_seed_buttons()  # 🎲 ♻️
                with gr.Row():
                    c["n_iter"] = self.tr(gr.Slider(1, lim.max_n_iter, value=d["n_iter"],
                                                    step=1, label=self.t("n_iter"),
                                                    elem_id=f"atelier-{kind}-n-iter"), "n_iter")
                    c["batch_size"] = self.tr(gr.Slider(1, lim.max_batch_size, step=1,
                                                        value=d["batch_size"],
                                                        label=self.t("batch_size")), "batch_size")
                    with gr.Column(min_width=120):
                        c["tiling"] = self.tr(gr.Checkbox(value=bool(d.get("tiling")), label=self.t("tiling"),
                                                          elem_id=f"atelier-{kind}-tiling"), "tiling")
                        c["restore_faces"] = self.tr(gr.Checkbox(
                            value=bool(d.get("restore_faces")), label=self.t("restore_faces"),
                            elem_id=f"atelier-{kind}-restore-faces",
                        ), "restore_faces")
                self.build_options()
                c["controlnet"] = controlnet.build_panel(
                    self.workspace, kind, self.workspace.controlnet_model_choices(),
                    self.workspace.controlnet_module_choices,
                )
            with gr.Column(scale=2):
                with gr.Row(elem_classes=["atelier-generate-row"]):  # pinned on phones (server.WORKSPACE_CSS)
                    c["generate"] = self.tr(gr.Button(
                        self.t("generate"), variant="primary", elem_id=f"atelier-{kind}-generate", scale=3,
                    ), "generate", "value")
                    c["cancel"] = self.tr(gr.Button(
                        self.t("cancel"), variant="stop", elem_id=f"atelier-{kind}-cancel", scale=1,
                    ), "cancel", "value")
                    self.build_skip_button()
                c["progress"] = gr.HTML(progress_html(None, self.language), elem_id=f"atelier-{kind}-progress")
                c["job_id"] = gr.Textbox(value="", visible=False)
                c["result"] = self.tr(gr.Gallery(
                    label=self.t("output"), columns=2, height=420, format="png", elem_id=f"atelier-{kind}-result",
                    object_fit="contain",
                ), "output")
                c["result_refs"] = gr.State([])
                c["selected"] = gr.State(None)
                c["info"] = self.tr(gr.Textbox(label=self.t("generation_info"), lines=4, interactive=False,
                                               elem_id=f"atelier-{kind}-info"), "generation_info")
                with gr.Row():
                    if self.workspace.shows("img2img"):  # operators may hide img2img
                        c["send_to_img2img"] = self.tr(
                            gr.Button(self.t("send_to_img2img"), elem_id=f"atelier-{kind}-send-img2img"),
                            "send_to_img2img", "value",
                        )
                    self.build_actions()

    def stored_settings(self) -> dict[int, dict[str, Any]]:
        """The member's saved defaults (`workspace.defaults`, just re-read) for the fields they cover."""
        d, c = self.workspace.defaults, self.components
        return {id(c[name]): {"value": d[name]} for name in GENERATION_DEFAULTS if name in c}

    def build_source(self) -> None:
        """Components above the prompt (img2img's image)."""

    def build_options(self) -> None:
        """The tab's own fields, under the common ones."""

    def build_actions(self) -> None:
        """Buttons beside "Send to img2img"."""

    # --- wiring ---------------------------------------------------------------------------
    def generate_callback(self) -> Callable[..., Iterator[tuple]]:
        """The tab's generate callback (its own name: `generate_txt2img`, `generate_img2img`)."""
        raise NotImplementedError

    def inputs(self, with_controlnet: bool = True) -> list[Any]:
        """The form's components in the order `_values` reads them: the fields, then each
        ControlNet unit's `controlnet.UNIT_FIELDS`."""
        c = self.components
        inputs = [self.workspace.checkpoint, self.workspace.vae] + [c[name] for name in (*COMMON_FIELDS, *self.own_fields)]
        if with_controlnet:
            inputs += [unit[name] for unit in c["controlnet"] for name in controlnet.UNIT_FIELDS]
        return inputs

    def outputs(self) -> list[Any]:
        c = self.components
        return [c["progress"], c["result"], c["result_refs"], c["info"], c["job_id"], c["selected"]]

    def wire(self) -> None:
        c, gallery = self.components, self.workspace.gallery
        generated = c["generate"].click(
            self.generate_callback(), inputs=self.inputs(), outputs=self.outputs(), show_progress_on=[c["result"]],
        )
        if self.workspace.shows("gallery"):
            generated.then(gallery.refresh_gallery, outputs=[gallery.images, gallery.refs])
        c["cancel"].click(self.cancel, inputs=[c["job_id"]], outputs=[c["progress"]])
        self.wire_seed_buttons()
        self.wire_skip_button()
        # Each page load follows the member's running job of this tab (or shows the last result);
        # one stream per browser tab, so no concurrency limit (each only polls a row).
        self.workspace.blocks.load(self.reattach, outputs=self.outputs(), concurrency_limit=None, show_progress="hidden")
        c["result"].select(self.select_image, inputs=[c["result_refs"]], outputs=[c["selected"], c["info"]])
        if "send_to_img2img" in c:
            c["send_to_img2img"].click(
                self.send_to_img2img, inputs=[c["selected"], c["result_refs"]], outputs=self.workspace.send_outputs()
            )
        self.styles_panel.wire(c["prompt"], c["negative_prompt"])
        c["network_insert"].click(self.insert_network, inputs=[c["prompt"], c["network"]], outputs=[c["prompt"]])
        for unit in c["controlnet"]:
            unit["module"].change(self.controlnet_module_changed, inputs=[unit["module"]],
                                  outputs=[unit["processor_res"], unit["threshold_a"], unit["threshold_b"]])
            unit["image"].upload(self.controlnet_image_uploaded, outputs=[unit["enabled"]])  # as the extension
            unit["refresh"].click(self.refresh_controlnet_models, inputs=[unit["model"]], outputs=[unit["model"]])

    # --- callbacks ------------------------------------------------------------------------
    def _values(self, args: tuple[Any, ...], with_controlnet: bool = True) -> tuple[dict[str, Any], dict | None]:
        """The form's values by field name (ControlNet units as a list under "controlnet_units"),
        and img2img's editor value."""
        names = ["checkpoint", "vae", *COMMON_FIELDS, *self.own_fields]
        if with_controlnet:
            values = dict(zip(names, args[:len(names)], strict=True))
            values["controlnet_units"] = controlnet.units_from_args(args[len(names):])
        else:
            values = dict(zip(names, args, strict=True))
        return values, values.pop("editor", None)

    def submit(self, *args: Any) -> Job:
        """Validate the form and submit the job as the member (no waiting)."""
        values, editor = self._values(args)
        init_image, mask = self.init_image_and_mask(editor)
        for number, unit in controlnet.enabled_units(values["controlnet_units"]):
            if unit.get("image") is None and self.kind == "txt2img":  # img2img: the unit uses the init image
                raise WorkspaceError(self.t("controlnet_need_image").format(index=number))
            if not unit.get("model"):
                raise WorkspaceError(self.t("controlnet_need_model").format(index=number))
        return workspace_submit(user=self.user, kind=self.kind, values=values, init_image=init_image, mask=mask)

    def init_image_and_mask(self, editor: dict | None) -> tuple[Image.Image | None, Image.Image | None]:
        """The job's init image and inpainting mask (txt2img: none)."""
        return None, None

    def submit_and_follow(self, *args: Any) -> Iterator[tuple]:
        """Submit the form and follow the job; a refusal replaces the previous job's bar with its
        reason (and a toast), so the earlier job's state does not stay on screen."""
        try:
            job = self.submit(*args)
        except Exception as exc:
            error = as_workspace_error(exc, self.language)
            yield progress_error_html(error.message), gr.skip(), gr.skip(), gr.skip(), "", gr.skip()
            raise error from None
        yield from self.follow(job)

    def finished_outputs(self, job: Job) -> tuple:
        """(progress, result images, refs, info, job id, selection) of a finished job: its images
        when it succeeded; when it failed or was cancelled, its bar and nothing else (no preview
        of it, no image of an earlier job under its bar)."""
        html = progress_html(job, self.language)
        if job.status != Job.Status.SUCCEEDED:
            return html, [], [], "", "", None
        with member_errors(self.language):
            images = [member_image_open(key) for key in job.outputs]  # their infotext kept
            # This job's ControlNet detect maps, after its images, as the extension shows them
            # (not pickable: `refs` covers the images only).
            maps = [member_image_open(key) for key in job.control_maps]
        seeds = job.seeds or [None] * len(images)
        items = [(image, f"seed {seed}" if seed is not None else "") for image, seed in zip(images, seeds)]
        items += [(image, self.t("controlnet_detected_map")) for image in maps]
        refs = [(job.public_id, index) for index in range(len(images))]
        info = job.infotexts[0] if job.infotexts else ""
        return html, items, refs, info, "", None  # a new result: nothing picked in it yet

    @callback(skip_when_refused=6)  # a page load of a tab hidden since the process started: nothing
    def reattach(self) -> Iterator[tuple]:
        """On each page load: the member's newest running or queued job of this tab's kind,
        followed to its images, else the newest finished one's result (read from the Job rows)."""
        active = job_newest_active_for_owner(self.user, self.kind)
        finished = job_newest_finished_for_owner(self.user, self.kind)
        if active is None:
            yield self.finished_outputs(finished) if finished else (
                progress_html(None, self.language), [], [], "", "", None
            )
            return
        if finished is not None and finished.status == Job.Status.SUCCEEDED:
            # the last result stays under the running job's bar until its preview comes
            yield (progress_html(active, self.language), *self.finished_outputs(finished)[1:4], active.public_id, None)
        yield from self.follow(active)

    def follow(self, job: Job, poll_seconds: float = POLL_SECONDS) -> Iterator[tuple]:
        """Yield (progress, result images, refs, info, job id, selection) as the job moves, until it ends."""
        public_id = job.public_id
        current = job
        for current, queue in watch_job(self.user, public_id, poll_seconds=poll_seconds):
            if not current.is_finished:
                # The worker's live preview of the first image, every few steps (no refs: not pickable).
                preview = [(preview_image(current.preview), self.t("preview"))] if current.preview else gr.skip()
                yield progress_html(current, self.language, queue), preview, gr.skip(), gr.skip(), public_id, gr.skip()
        yield self.finished_outputs(current)
        if current.status == Job.Status.FAILED:
            raise WorkspaceError(current.error or text(self.language, "status_failed"))
        if current.status == Job.Status.CANCELLED:
            gr.Warning(self.t("status_cancelled"))

    @callback
    def cancel(self, public_id: str) -> str:
        job = workspace_cancel(user=self.user, public_id=public_id or "", kind=self.kind)
        if job is None:
            gr.Info(self.t("nothing_to_cancel"))
            return gr.skip()
        return progress_html(job, self.language)

    @callback
    def insert_network(self, prompt: str, insert: str | None) -> str:
        if not insert:
            return prompt
        return f"{prompt}, {insert}" if prompt and prompt.strip() else insert

    @callback
    def refresh_controlnet_models(self, current: str | None) -> gr.Dropdown:
        return controlnet_dropdown(self.workspace.controlnet_model_choices(), current)

    @callback
    def controlnet_module_changed(self, module: str | None) -> tuple:
        """The preprocessor's resolution and threshold sliders, with the extension's labels,
        ranges and defaults; hidden where it has none."""
        sliders = []
        for spec in controlnet.threshold_sliders(module):
            if spec is None:
                sliders.append(gr.Slider(visible=False))
            else:
                sliders.append(gr.Slider(
                    minimum=spec.minimum, maximum=spec.maximum, value=spec.value, step=spec.step,
                    label=self.t(spec.label_key), visible=True,
                ))
        return (gr.Slider(visible=(module or "none") != "none"), *sliders)

    @callback
    def controlnet_image_uploaded(self) -> bool:
        return True
