"""The member's Gradio workspace: `build_workspace(user) -> gradio.Blocks`.

The session manager (`frontend/workspace/server.py`) calls this once per member process, with
Django configured, and mounts the Blocks at `/ui` behind its guard; one process serves one
member, so every callback acts as `user` and reads only through owner-scoped selectors.

Tabs: txt2img, img2img (with an inpainting mask painted on the image), both with a ControlNet
panel (`frontend/workspace/controlnet.py`), Gallery (the member's own images), PNG Info,
Extensions (per-member on/off of the platform's extensions) and Settings (interface language).
Generation goes through `inference.services.job_submit` and is followed by polling the
member's Job row (see `frontend/workspace/jobs.py`).

Gradio runs sync callbacks in worker threads; each callback is wrapped by `_callback`, which
drops stale database connections the way Django does around a request, and turns a
`WorkspaceError` into a `gr.Error` toast (never a traceback).
"""

import functools
import inspect
import time
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr
import numpy as np
from django.contrib.auth.models import AbstractUser
from django.db import close_old_connections, connection
from PIL import Image

from frontend.workspace import compat  # noqa: F401  (before any component: see compat.py)
from frontend.member_selectors import (
    extension_enabled_for_user,
    extensions_for_user,
    generation_defaults_for_user,
    language_for_user,
)
from frontend.member_services import extensions_set_enabled, generation_defaults_save, language_set
from frontend.workspace import controlnet, gallery
from frontend.workspace.extensions import PROMPT_STYLE_LIST, PROMPT_STYLES
from frontend.workspace.i18n import LANGUAGE_NAMES, LANGUAGES, text
from frontend.workspace.jobs import (
    WorkspaceError,
    as_workspace_error,
    job_images,
    member_errors,
    own_job,
    preview_image,
    progress_html,
    storage_image,
    workspace_cancel,
    workspace_submit,
)
from a1111.generation import FACE_RESTORERS, HIRES_UPSCALERS
from inference.model_registry import model_list_for_user, upscalers_for_user
from inference.models import Job
from a1111.samplers import SAMPLERS, SCHEDULES
from inference.selectors import user_options_get
from inference.services import user_options_update
from tenants.selectors import membership_for_user

POLL_SECONDS = 0.25

# The form fields of each generation tab, in the order the callbacks receive them.
COMMON_FIELDS = (
    "prompt", "negative_prompt", "styles", "sampler_name", "scheduler", "steps", "cfg_scale",
    "width", "height", "seed", "n_iter", "batch_size", "tiling", "restore_faces",
)
TXT2IMG_FIELDS = ("enable_hr", "hr_upscaler", "hr_scale", "hr_second_pass_steps", "hr_denoising_strength")
IMG2IMG_FIELDS = ("denoising_strength", "mask_blur", "inpainting_fill", "inpaint_full_res")
MASKED_CONTENT_CHOICES = [("fill", 0), ("original", 1), ("latent noise", 2), ("latent nothing", 3)]


def _fresh_connections() -> None:
    """Django closes unusable or expired connections around each request; do the same around
    each callback (Gradio's threads live long). Not inside a transaction (tests)."""
    if not connection.in_atomic_block:
        close_old_connections()


def _callback(fn: Callable) -> Callable:
    """Wrap a Gradio callback method: fresh DB connections, and every error as a gr.Error
    toast with a message for the member (never a traceback; unexpected ones are logged)."""

    def as_gradio_error(exc: Exception, args: tuple) -> gr.Error:
        language = getattr(args[0], "language", "en") if args else "en"
        return gr.Error(as_workspace_error(exc, language).message, print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
            _fresh_connections()
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:
                raise as_gradio_error(exc, args) from None
        return generator

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        _fresh_connections()
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            raise as_gradio_error(exc, args) from None
    return call


def _mask_from_editor(value: dict | None) -> tuple[Image.Image | None, Image.Image | None]:
    """(init image, mask) from gr.ImageEditor's value: the background is the image; anything
    painted on the layers is the area to inpaint (white on black). No strokes: no mask."""
    if not value or value.get("background") is None:
        return None, None
    background = value["background"].convert("RGB")
    mask = None
    for layer in value.get("layers") or []:
        if layer is None:
            continue
        alpha = layer.convert("RGBA").getchannel("A").point(lambda a: 255 if a > 0 else 0)
        if alpha.size != background.size:
            alpha = alpha.resize(background.size)
        mask = alpha if mask is None else Image.fromarray(np.maximum(np.asarray(mask), np.asarray(alpha)))
    if mask is not None and mask.getbbox() is None:
        mask = None
    return background, mask


class Workspace:
    """One member's workspace: its components and the callbacks wired to them."""

    def __init__(self, user: AbstractUser) -> None:
        self.user = user
        self.language = language_for_user(user)
        self.defaults = generation_defaults_for_user(user)
        # (component, string key, attribute, format parameters): relabelled when the language changes
        self.i18n: list[tuple[gr.components.Component | gr.blocks.BlockContext, str, str, dict[str, Any]]] = []
        self.i18n_choices: dict[int, tuple[tuple[str, Any], ...]] = {}  # id(component) -> (key, value) choices
        self.style_pickers: list[gr.Dropdown] = []
        self.controlnet_module_choices = controlnet.preprocessor_choices()
        self.blocks: gr.Blocks | None = None

    # --- helpers --------------------------------------------------------------------------
    def t(self, key: str) -> str:
        return text(self.language, key)

    def tr(self, component: Any, key: str, attr: str = "label", **params: Any) -> Any:
        """Register a component whose `attr` is the translation of `key` (formatted with `params`)."""
        self.i18n.append((component, key, attr, params))
        return component

    def tr_choices(self, component: Any, choices: tuple[tuple[str, Any], ...]) -> Any:
        """Register a component (already registered with `tr`) whose choices are (string key, value)."""
        self.i18n_choices[id(component)] = tuple(choices)
        return component

    def checkpoint_choices(self) -> list[str]:
        return [entry.title for entry in model_list_for_user(self.user, "Stable-diffusion")]

    def vae_choices(self) -> list[str]:
        return ["Automatic", "None"] + [entry.title for entry in model_list_for_user(self.user, "VAE")]

    def hires_upscaler_choices(self) -> list[str]:
        """The built-in latent and pixel resizers, then the member's ESRGAN-family models."""
        return [*HIRES_UPSCALERS, *(name for name, _entry in upscalers_for_user(self.user))]

    def controlnet_model_choices(self) -> list[str]:
        return controlnet.model_choices(self.user)

    def network_choices(self) -> list[tuple[str, str]]:
        """(label, text to insert into the prompt) for every LoRA, hypernetwork and embedding
        the member may use: their own, their team's, the public ones."""
        choices = []
        for kind, tag in (("Lora", "lora"), ("hypernetworks", "hypernet"), ("embeddings", None)):
            for entry in model_list_for_user(self.user, kind):
                stem = entry.model_name.rsplit("/", 1)[-1]
                insert = f"<{tag}:{stem}:1>" if tag else stem
                choices.append((f"{tag or 'embedding'}: {entry.model_name} ({entry.scope})", insert))
        return choices

    # --- layout ---------------------------------------------------------------------------
    def build(self) -> gr.Blocks:
        membership = membership_for_user(self.user)
        team = f" · {membership.tenant.name}" if membership else ""
        with gr.Blocks(title=self.t("title"), analytics_enabled=False) as demo:
            self.blocks = demo
            self.header = gr.HTML(self.header_html(team))
            with gr.Row(equal_height=True):
                checkpoints = self.checkpoint_choices()
                default_checkpoint = self.defaults.get("checkpoint")
                self.checkpoint = self.tr(gr.Dropdown(
                    choices=checkpoints,
                    value=default_checkpoint if default_checkpoint in checkpoints else (checkpoints[0] if checkpoints else None),
                    label=self.t("checkpoint"), elem_id="atelier-checkpoint", scale=3,
                ), "checkpoint")
                vaes = self.vae_choices()
                self.vae = self.tr(gr.Dropdown(
                    choices=vaes, value=self.defaults.get("vae") if self.defaults.get("vae") in vaes else "Automatic",
                    label=self.t("vae"), scale=2,
                ), "vae")
                self.refresh_models = self.tr(gr.Button(self.t("refresh"), scale=0), "refresh", "value")
            with gr.Tabs() as self.tabs:
                with self.tr(gr.Tab(self.t("tab_txt2img"), id="txt2img"), "tab_txt2img"):
                    self.txt2img = self.generation_tab("txt2img")
                with self.tr(gr.Tab(self.t("tab_img2img"), id="img2img"), "tab_img2img"):
                    self.img2img = self.generation_tab("img2img")
                with self.tr(gr.Tab(self.t("tab_gallery"), id="gallery"), "tab_gallery"):
                    self.gallery_tab()
                with self.tr(gr.Tab(self.t("tab_pnginfo"), id="pnginfo"), "tab_pnginfo"):
                    self.pnginfo_tab()
                with self.tr(gr.Tab(self.t("tab_extensions"), id="extensions"), "tab_extensions"):
                    self.extensions_tab()
                with self.tr(gr.Tab(self.t("tab_settings"), id="settings"), "tab_settings"):
                    self.settings_tab()
            self.wire()
        demo.atelier_workspace = self  # for tests and debugging: the callbacks behind the Blocks
        return demo

    def header_html(self, team: str) -> str:
        from html import escape

        return (
            '<div class="atelier-header" style="display:flex;justify-content:space-between;align-items:baseline;'
            'gap:1rem;padding:.25rem .25rem .5rem;border-bottom:1px solid #e5e7eb">'
            f'<strong style="font-size:1.15rem">{escape(self.t("title"))}</strong>'
            f'<span><span class="atelier-user">{escape(self.user.get_username())}</span>{escape(team)} · '
            f'<a href="/" target="_top">{escape(self.t("home"))}</a></span></div>'
        )

    def generation_tab(self, kind: str) -> dict[str, Any]:
        d = self.defaults
        c: dict[str, Any] = {}
        with gr.Row():
            with gr.Column(scale=3):
                if kind == "img2img":
                    c["editor"] = self.tr(gr.ImageEditor(
                        label=self.t("init_image"), type="pil", image_mode="RGBA", sources=("upload", "clipboard"),
                        brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"), layers=False,
                        elem_id="atelier-img2img-editor", height=420,
                    ), "init_image")
                c["prompt"] = self.tr(gr.Textbox(
                    value=d["prompt"], label=self.t("prompt"), lines=3, elem_id=f"atelier-{kind}-prompt",
                ), "prompt")
                c["negative_prompt"] = self.tr(gr.Textbox(
                    value=d["negative_prompt"], label=self.t("negative_prompt"), lines=2,
                    elem_id=f"atelier-{kind}-negative",
                ), "negative_prompt")
                # The "prompt-styles" extension's panel: present only while the member has it on.
                c["styles"] = self.tr(gr.Dropdown(
                    choices=[style.name for style in PROMPT_STYLE_LIST], value=d.get("styles") or [], multiselect=True,
                    label=self.t("styles"), visible=extension_enabled_for_user(self.user, PROMPT_STYLES),
                    elem_id=f"atelier-{kind}-styles",
                ), "styles")
                self.style_pickers.append(c["styles"])
                with self.tr(gr.Accordion(self.t("networks"), open=False), "networks"):
                    with gr.Row(equal_height=True):
                        c["network"] = self.tr(gr.Dropdown(
                            choices=self.network_choices(), value=None, label=self.t("network_pick"), scale=4,
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
                    c["steps"] = self.tr(gr.Slider(1, 150, value=d["steps"], step=1, label=self.t("steps"),
                                                   elem_id=f"atelier-{kind}-steps"), "steps")
                with gr.Row():
                    c["width"] = self.tr(gr.Slider(64, 2048, value=d["width"], step=8, label=self.t("width"),
                                                   elem_id=f"atelier-{kind}-width"), "width")
                    c["height"] = self.tr(gr.Slider(64, 2048, value=d["height"], step=8, label=self.t("height"),
                                                    elem_id=f"atelier-{kind}-height"), "height")
                with gr.Row():
                    c["cfg_scale"] = self.tr(gr.Slider(1, 30, value=d["cfg_scale"], step=0.5,
                                                       label=self.t("cfg_scale")), "cfg_scale")
                    c["seed"] = self.tr(gr.Number(value=d["seed"], precision=0, label=self.t("seed"),
                                                  elem_id=f"atelier-{kind}-seed"), "seed")
                with gr.Row():
                    c["n_iter"] = self.tr(gr.Slider(1, 16, value=d["n_iter"], step=1, label=self.t("n_iter")), "n_iter")
                    c["batch_size"] = self.tr(gr.Slider(1, 8, value=d["batch_size"], step=1,
                                                        label=self.t("batch_size")), "batch_size")
                    with gr.Column(min_width=120):
                        c["tiling"] = self.tr(gr.Checkbox(value=bool(d.get("tiling")), label=self.t("tiling"),
                                                          elem_id=f"atelier-{kind}-tiling"), "tiling")
                        c["restore_faces"] = self.tr(gr.Checkbox(
                            value=bool(d.get("restore_faces")), label=self.t("restore_faces"),
                            elem_id=f"atelier-{kind}-restore-faces",
                        ), "restore_faces")
                if kind == "txt2img":
                    with self.tr(gr.Accordion(self.t("hires_fix"), open=False), "hires_fix", "label"):
                        with gr.Row():
                            c["enable_hr"] = self.tr(gr.Checkbox(value=False, label=self.t("enable_hr"),
                                                                 elem_id="atelier-enable-hr"), "enable_hr")
                            c["hr_upscaler"] = self.tr(gr.Dropdown(
                                choices=self.hires_upscaler_choices(), value="Latent", label=self.t("hr_upscaler"),
                            ), "hr_upscaler")
                        with gr.Row():
                            c["hr_scale"] = self.tr(gr.Slider(1, 4, value=2, step=0.05, label=self.t("hr_scale")),
                                                    "hr_scale")
                            c["hr_second_pass_steps"] = self.tr(gr.Slider(
                                0, 150, value=0, step=1, label=self.t("hr_second_pass_steps"),
                            ), "hr_second_pass_steps")
                            c["hr_denoising_strength"] = self.tr(gr.Slider(
                                0, 1, value=0.7, step=0.01, label=self.t("denoising_strength"),
                            ), "denoising_strength")
                if kind == "img2img":
                    with gr.Row():
                        c["denoising_strength"] = self.tr(gr.Slider(
                            0, 1, value=d["denoising_strength"], step=0.01, label=self.t("denoising_strength"),
                        ), "denoising_strength")
                        c["mask_blur"] = self.tr(gr.Slider(0, 64, value=4, step=1, label=self.t("mask_blur")), "mask_blur")
                    with gr.Row():
                        c["inpainting_fill"] = self.tr(gr.Radio(
                            choices=MASKED_CONTENT_CHOICES, value=1, label=self.t("masked_content"),
                        ), "masked_content")
                        c["inpaint_full_res"] = self.tr(
                            gr.Checkbox(value=False, label=self.t("inpaint_area")), "inpaint_area"
                        )
                c["controlnet"] = controlnet.build_panel(
                    self, kind, self.controlnet_model_choices(), self.controlnet_module_choices
                )
            with gr.Column(scale=2):
                with gr.Row():
                    c["generate"] = self.tr(gr.Button(
                        self.t("generate"), variant="primary", elem_id=f"atelier-{kind}-generate", scale=3,
                    ), "generate", "value")
                    c["cancel"] = self.tr(gr.Button(
                        self.t("cancel"), variant="stop", elem_id=f"atelier-{kind}-cancel", scale=1,
                    ), "cancel", "value")
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
                    c["send_to_img2img"] = self.tr(
                        gr.Button(self.t("send_to_img2img"), elem_id=f"atelier-{kind}-send-img2img"),
                        "send_to_img2img", "value",
                    )
                    if kind == "txt2img":
                        c["save_defaults"] = self.tr(
                            gr.Button(self.t("save_defaults"), elem_id="atelier-save-defaults"), "save_defaults", "value"
                        )
        return c

    def gallery_tab(self) -> None:
        with gr.Row():
            self.my_gallery_refresh = self.tr(gr.Button(self.t("refresh_gallery"), scale=0), "refresh_gallery", "value")
        self.my_gallery = self.tr(gr.Gallery(
            label=self.t("my_images"), columns=6, height=520, format="png", elem_id="atelier-my-gallery",
            fit_columns=False, object_fit="contain", allow_preview=True,
        ), "my_images")
        self.my_gallery_refs = gr.State([])
        self.my_gallery_selected = gr.State(None)
        self.my_gallery_info = self.tr(gr.Textbox(label=self.t("generation_info"), lines=4, interactive=False,
                                                  elem_id="atelier-my-gallery-info"), "generation_info")
        self.my_gallery_send = self.tr(gr.Button(self.t("send_to_img2img")), "send_to_img2img", "value")

    def pnginfo_tab(self) -> None:
        with gr.Row():
            self.png_source = self.tr(gr.Image(
                label=self.t("png_source"), type="filepath", image_mode=None, sources=("upload", "clipboard"),
                elem_id="atelier-pnginfo-image",
            ), "png_source")
            with gr.Column():
                self.png_text = self.tr(gr.Textbox(label=self.t("png_parameters"), lines=6, interactive=False,
                                                   elem_id="atelier-pnginfo-text"), "png_parameters")
                self.png_fields = gr.JSON(value={})
                self.png_send = self.tr(gr.Button(self.t("send_to_txt2img")), "send_to_txt2img", "value")

    def extensions_tab(self) -> None:
        self.extensions_intro = self.tr(gr.Markdown(self.t("extensions_intro")), "extensions_intro", "value")
        self.extensions_table = gr.Markdown(self.extensions_markdown())
        states = extensions_for_user(self.user)
        self.extensions_enabled = self.tr(gr.CheckboxGroup(
            choices=[(e.title, e.name) for e in states if e.available],
            value=[e.name for e in states if e.available and e.enabled],
            label=self.t("extensions_enabled"), elem_id="atelier-extensions",
        ), "extensions_enabled")
        self.extensions_apply = self.tr(gr.Button(self.t("extensions_apply"), elem_id="atelier-extensions-apply"),
                                        "extensions_apply", "value")

    def extensions_markdown(self) -> str:
        states = extensions_for_user(self.user)
        if not states:
            return self.t("no_extensions")
        rows = []
        for e in states:
            note = "" if e.available else f" {self.t('extension_unavailable')}"
            mark = "✅" if e.enabled and e.available else "⬜"
            description = e.description.replace("|", "\\|").replace("\n", " ")
            rows.append(f"| {mark} | **{e.title}** (`{e.name}`){note} | {description} |")
        return "| | | |\n|---|---|---|\n" + "\n".join(rows)

    def settings_tab(self) -> None:
        self.language_radio = self.tr(gr.Radio(
            choices=[(LANGUAGE_NAMES[code], code) for code in LANGUAGES], value=self.language,
            label=self.t("language"), elem_id="atelier-language",
        ), "language")
        # A1111's Settings > Face restoration: the defaults "Restore faces" runs with (the
        # member's own /sdapi/v1/options, so their API calls use them too)
        options = user_options_get(self.user)
        with gr.Group():
            self.face_model = self.tr(gr.Radio(
                choices=list(FACE_RESTORERS), value=options["face_restoration_model"],
                label=self.t("face_restoration_model"), elem_id="atelier-face-model",
            ), "face_restoration_model")
            self.code_former_weight = self.tr(gr.Slider(
                0, 1, step=0.01, value=options["code_former_weight"], label=self.t("code_former_weight"),
            ), "code_former_weight")
            self.face_settings_save = self.tr(gr.Button(self.t("save_face_settings")), "save_face_settings", "value")

    # --- wiring ---------------------------------------------------------------------------
    def generation_inputs(self, kind: str, with_controlnet: bool = True) -> list[Any]:
        """The form's components in the order `_values` reads them: the fields, img2img's image,
        then each ControlNet unit's `controlnet.UNIT_FIELDS`."""
        c = self.txt2img if kind == "txt2img" else self.img2img
        inputs = [self.checkpoint, self.vae] + [c[name] for name in COMMON_FIELDS]
        if kind == "txt2img":
            inputs += [c[name] for name in TXT2IMG_FIELDS]
        if kind == "img2img":
            inputs += [c[name] for name in IMG2IMG_FIELDS] + [c["editor"]]
        if with_controlnet:
            inputs += [unit[name] for unit in c["controlnet"] for name in controlnet.UNIT_FIELDS]
        return inputs

    def controlnet_model_dropdowns(self) -> list[gr.Dropdown]:
        return [unit["model"] for c in (self.txt2img, self.img2img) for unit in c["controlnet"]]

    def generation_outputs(self, c: dict[str, Any]) -> list[Any]:
        return [c["progress"], c["result"], c["result_refs"], c["info"], c["job_id"], c["selected"]]

    def send_outputs(self) -> list[Any]:
        i = self.img2img
        return [i["editor"], i["prompt"], i["negative_prompt"], i["sampler_name"], i["scheduler"], i["steps"],
                i["cfg_scale"], i["width"], i["height"], i["seed"], self.tabs]

    def wire(self) -> None:
        for kind, c in (("txt2img", self.txt2img), ("img2img", self.img2img)):
            run = self.generate_txt2img if kind == "txt2img" else self.generate_img2img
            c["generate"].click(
                run, inputs=self.generation_inputs(kind), outputs=self.generation_outputs(c),
                show_progress_on=[c["result"]],
            ).then(self.refresh_gallery, outputs=[self.my_gallery, self.my_gallery_refs])
            c["cancel"].click(self.cancel, inputs=[c["job_id"]], outputs=[c["progress"]])
            c["result"].select(self.select_image, inputs=[c["result_refs"]], outputs=[c["selected"], c["info"]])
            c["send_to_img2img"].click(
                self.send_to_img2img, inputs=[c["selected"], c["result_refs"]], outputs=self.send_outputs()
            )
            c["network_insert"].click(self.insert_network, inputs=[c["prompt"], c["network"]], outputs=[c["prompt"]])
            for unit in c["controlnet"]:
                unit["module"].change(self.controlnet_module_changed, inputs=[unit["module"]],
                                      outputs=[unit["processor_res"], unit["threshold_a"], unit["threshold_b"]])
                unit["image"].upload(self.controlnet_image_uploaded, outputs=[unit["enabled"]])  # as the extension
                unit["refresh"].click(self.refresh_controlnet_models, inputs=[unit["model"]], outputs=[unit["model"]])
        self.txt2img["save_defaults"].click(
            self.save_defaults, inputs=self.generation_inputs("txt2img", with_controlnet=False),
        )
        self.refresh_models.click(
            self.refresh_model_lists, inputs=self.controlnet_model_dropdowns(),
            outputs=[self.checkpoint, self.vae, self.txt2img["network"], self.img2img["network"],
                     *self.controlnet_model_dropdowns()],
        )
        self.my_gallery_refresh.click(self.refresh_gallery, outputs=[self.my_gallery, self.my_gallery_refs])
        self.my_gallery.select(self.select_image, inputs=[self.my_gallery_refs],
                               outputs=[self.my_gallery_selected, self.my_gallery_info])
        self.my_gallery_send.click(
            self.send_to_img2img, inputs=[self.my_gallery_selected, self.my_gallery_refs], outputs=self.send_outputs()
        )
        self.png_source.change(self.read_pnginfo, inputs=[self.png_source], outputs=[self.png_text, self.png_fields])
        t = self.txt2img
        self.png_send.click(self.send_pnginfo_to_txt2img, inputs=[self.png_fields], outputs=[
            t["prompt"], t["negative_prompt"], t["sampler_name"], t["scheduler"], t["steps"], t["cfg_scale"],
            t["width"], t["height"], t["seed"], self.tabs,
        ])
        self.extensions_apply.click(
            self.apply_extensions, inputs=[self.extensions_enabled],
            outputs=[self.extensions_table, *self.style_pickers],
        )
        self.language_radio.change(self.set_language, inputs=[self.language_radio], outputs=self.i18n_outputs())
        self.face_settings_save.click(self.save_face_settings, inputs=[self.face_model, self.code_former_weight])
        # On each page load: the member's gallery, and their current language and extensions
        # (they may have changed them from the home page since this process started).
        self.blocks.load(self.on_load, outputs=[self.my_gallery, self.my_gallery_refs, self.extensions_table,
                                          self.extensions_enabled, *self.style_pickers, *self.i18n_outputs()])

    def i18n_outputs(self) -> list[Any]:
        return [component for component, _key, _attr, _params in self.i18n] + [self.header]

    # --- callbacks ------------------------------------------------------------------------
    def _values(
        self, args: tuple[Any, ...], kind: str, with_controlnet: bool = True
    ) -> tuple[dict[str, Any], dict | None]:
        """The form's values by field name (ControlNet units as a list under "controlnet_units"),
        and img2img's editor value."""
        names = ["checkpoint", "vae", *COMMON_FIELDS]
        if kind == "txt2img":
            names += TXT2IMG_FIELDS
        if kind == "img2img":
            names += [*IMG2IMG_FIELDS, "editor"]
        if with_controlnet:
            values = dict(zip(names, args[:len(names)], strict=True))
            values["controlnet_units"] = controlnet.units_from_args(args[len(names):])
        else:
            values = dict(zip(names, args, strict=True))
        return values, values.pop("editor", None)

    def submit(self, kind: str, *args: Any) -> Job:
        """Validate the form and submit the job as the member (no waiting)."""
        values, editor = self._values(args, kind)
        init_image, mask = _mask_from_editor(editor) if kind == "img2img" else (None, None)
        if kind == "img2img" and init_image is None:
            raise WorkspaceError(self.t("need_init_image"))
        for number, unit in controlnet.enabled_units(values["controlnet_units"]):
            if unit.get("image") is None and kind == "txt2img":  # img2img: the unit uses the init image
                raise WorkspaceError(self.t("controlnet_need_image").format(index=number))
            if not unit.get("model"):
                raise WorkspaceError(self.t("controlnet_need_model").format(index=number))
        return workspace_submit(user=self.user, kind=kind, values=values, init_image=init_image, mask=mask)

    @_callback
    def generate_txt2img(self, *args: Any) -> Iterator[tuple]:
        yield from self.follow(self.submit("txt2img", *args))

    @_callback
    def generate_img2img(self, *args: Any) -> Iterator[tuple]:
        yield from self.follow(self.submit("img2img", *args))

    def follow(self, job: Job, poll_seconds: float = POLL_SECONDS) -> Iterator[tuple]:
        """Yield (progress, result images, refs, info, job id, selection) as the job moves, until it ends."""
        seen = None
        public_id = job.public_id
        while True:
            current = own_job(self.user, public_id)
            if current is None:
                raise WorkspaceError("This job is gone.")
            if (current.status, current.step) != seen:
                seen = (current.status, current.step)
                if not current.is_finished:
                    # The worker's live preview of the first image, every few steps (no refs: not pickable).
                    preview = [(preview_image(current.preview), self.t("preview"))] if current.preview else gr.skip()
                    yield progress_html(current, self.language), preview, gr.skip(), gr.skip(), public_id, gr.skip()
            if current.is_finished:
                break
            time.sleep(poll_seconds)
        html = progress_html(current, self.language)
        if current.status == Job.Status.SUCCEEDED:
            with member_errors(self.language):
                images = job_images(current)
                # This job's ControlNet detect maps, after its images, as the extension shows them
                # (not pickable: `refs` covers the images only).
                maps = [storage_image(key) for key in current.control_maps]
            seeds = current.seeds or [None] * len(images)
            items = [(image, f"seed {seed}" if seed is not None else "") for image, seed in zip(images, seeds)]
            items += [(image, self.t("controlnet_detected_map")) for image in maps]
            refs = [(public_id, index) for index in range(len(images))]
            info = current.infotexts[0] if current.infotexts else ""
            yield html, items, refs, info, "", None  # a new result: nothing picked in it yet
        elif current.status == Job.Status.FAILED:
            yield html, gr.skip(), gr.skip(), gr.skip(), "", gr.skip()
            raise WorkspaceError(current.error or text(self.language, "status_failed"))
        else:
            gr.Warning(self.t("status_cancelled"))
            yield html, gr.skip(), gr.skip(), gr.skip(), "", gr.skip()

    @_callback
    def cancel(self, public_id: str) -> str:
        job = workspace_cancel(user=self.user, public_id=public_id or "")
        if job is None:
            gr.Info(self.t("nothing_to_cancel"))
            return gr.skip()
        return progress_html(job, self.language)

    @_callback
    def select_image(self, refs: list, evt: gr.SelectData) -> tuple[Any, str]:
        index = evt.index if isinstance(evt.index, int) else (evt.index or [0])[0]
        if not refs or not 0 <= index < len(refs):
            return None, ""
        ref = refs[index]
        with member_errors(self.language):
            _image, _params, infotext = gallery.image_and_params(self.user, ref)
        return list(ref), infotext

    @_callback
    def send_to_img2img(self, ref: Any, refs: list | None = None) -> tuple:
        """The picked image (else the first one shown) and its parameters, into img2img."""
        ref = ref or (refs[0] if refs else None)
        if not ref:
            raise WorkspaceError(self.t("select_image_first"))
        with member_errors(self.language):
            image, params, _infotext = gallery.image_and_params(self.user, ref)
        return (
            image, params.get("prompt", ""), params.get("negative_prompt", ""), params.get("sampler_name", "Euler a"),
            params.get("scheduler", "Automatic"), params.get("steps", 20), params.get("cfg_scale", 7.0),
            params.get("width", image.width), params.get("height", image.height), params.get("seed", -1),
            gr.Tabs(selected="img2img"),
        )

    @_callback
    def insert_network(self, prompt: str, insert: str | None) -> str:
        if not insert:
            return prompt
        return f"{prompt}, {insert}" if prompt and prompt.strip() else insert

    @_callback
    def save_defaults(self, *args: Any) -> None:
        values, _editor = self._values(args, "txt2img", with_controlnet=False)  # units hold images: not kept
        with member_errors(self.language):
            generation_defaults_save(user=self.user, values=values)
        gr.Info(self.t("defaults_saved"))

    @_callback
    def refresh_model_lists(self, *controlnet_models: str | None) -> tuple:
        """Every model list re-read from the member's, team's and public folders; `controlnet_models`:
        each ControlNet unit's current pick, kept when still there."""
        checkpoints = self.checkpoint_choices()
        networks = self.network_choices()
        controlnets = self.controlnet_model_choices()
        return (
            gr.Dropdown(choices=checkpoints), gr.Dropdown(choices=self.vae_choices()),
            gr.Dropdown(choices=networks), gr.Dropdown(choices=networks),
            *(self._controlnet_dropdown(controlnets, current) for current in controlnet_models),
        )

    @staticmethod
    def _controlnet_dropdown(choices: list[str], current: str | None) -> gr.Dropdown:
        return gr.Dropdown(choices=choices, value=current if current in choices else None)

    @_callback
    def refresh_controlnet_models(self, current: str | None) -> gr.Dropdown:
        return self._controlnet_dropdown(self.controlnet_model_choices(), current)

    @_callback
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

    @_callback
    def controlnet_image_uploaded(self) -> bool:
        return True

    @_callback
    def refresh_gallery(self) -> tuple[list, list]:
        with member_errors(self.language):
            items, refs = gallery.gallery_items(self.user)
        return items, [list(ref) for ref in refs]

    @_callback
    def read_pnginfo(self, path: str | None) -> tuple[str, dict]:
        if not path:
            return "", {}
        with open(path, "rb") as handle:
            data = handle.read()
        with member_errors(self.language):
            infotext, fields = gallery.png_info(data)
        if infotext is None:
            return self.t("png_none"), {}
        return infotext, fields

    @_callback
    def send_pnginfo_to_txt2img(self, fields: dict | None) -> tuple:
        values = gallery.params_from_pnginfo(fields or {})
        names = ("prompt", "negative_prompt", "sampler_name", "scheduler", "steps", "cfg_scale", "width", "height", "seed")
        return (*(values[name] if name in values else gr.skip() for name in names), gr.Tabs(selected="txt2img"))

    @_callback
    def apply_extensions(self, enabled_names: list[str] | None) -> tuple:
        with member_errors(self.language):
            extensions_set_enabled(user=self.user, enabled_names=list(enabled_names or []))
        gr.Info(self.t("extensions_saved"))
        return (self.extensions_markdown(), *self.style_picker_updates())

    def style_picker_updates(self) -> list[Any]:
        visible = extension_enabled_for_user(self.user, PROMPT_STYLES)
        return [gr.Dropdown(visible=visible) for _ in self.style_pickers]

    @_callback
    def save_face_settings(self, model: str, weight: float) -> None:
        with member_errors(self.language):
            user_options_update(user=self.user, values={"face_restoration_model": model, "code_former_weight": weight})
        gr.Info(self.t("face_settings_saved"))

    @_callback
    def set_language(self, language: str) -> list[Any]:
        with member_errors(self.language):
            language_set(user=self.user, language=language)
        self.language = language
        gr.Info(self.t("language_saved"))
        return self.language_updates()

    def language_updates(self) -> list[Any]:
        updates = []
        for component, key, attr, params in self.i18n:
            update = {attr: self.t(key).format(**params) if params else self.t(key)}
            if choices := self.i18n_choices.get(id(component)):
                update["choices"] = [(self.t(choice), value) for choice, value in choices]
            updates.append(gr.update(**update))
        membership = membership_for_user(self.user)
        return updates + [self.header_html(f" · {membership.tenant.name}" if membership else "")]

    @_callback
    def on_load(self) -> tuple:
        self.language = language_for_user(self.user)
        items, refs = gallery.gallery_items(self.user)
        states = extensions_for_user(self.user)
        enabled = [e.name for e in states if e.available and e.enabled]
        return (
            items, [list(ref) for ref in refs], self.extensions_markdown(), enabled,
            *self.style_picker_updates(), *self.language_updates(),
        )


def build_workspace(user: AbstractUser) -> gr.Blocks:
    """The member's workspace as a Gradio Blocks (not launched)."""
    return Workspace(user).build()
