"""The txt2img tab: the generation form with the hires fix, the Script dropdown (X/Y/Z plot,
`tabs/xyz.py`), and "Save as my defaults"."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from frontend.member_services import generation_defaults_save
from frontend.workspace.jobs import member_errors
from frontend.workspace.tabs.base import callback
from frontend.workspace.tabs.generation import GenerationTab
from frontend.workspace.tabs.xyz import SCRIPT_XYZ, XyzScript
from inference.limits import generation_limits

TXT2IMG_FIELDS = ("enable_hr", "hr_upscaler", "hr_scale", "hr_second_pass_steps", "hr_denoising_strength")


class Txt2ImgTab(XyzScript, GenerationTab):
    kind = "txt2img"
    tab_id = "txt2img"
    own_fields = TXT2IMG_FIELDS

    def build_options(self) -> None:
        c = self.components
        with self.tr(gr.Accordion(self.t("hires_fix"), open=False), "hires_fix", "label"):
            with gr.Row():
                c["enable_hr"] = self.tr(gr.Checkbox(value=False, label=self.t("enable_hr"),
                                                     elem_id="atelier-enable-hr"), "enable_hr")
                c["hr_upscaler"] = self.tr(gr.Dropdown(
                    choices=self.workspace.hires_upscaler_choices(), value="Latent", label=self.t("hr_upscaler"),
                ), "hr_upscaler")
            with gr.Row():
                c["hr_scale"] = self.tr(gr.Slider(1, 4, value=2, step=0.05, label=self.t("hr_scale")), "hr_scale")
                c["hr_second_pass_steps"] = self.tr(gr.Slider(
                    0, generation_limits().max_steps, value=0, step=1, label=self.t("hr_second_pass_steps"),
                ), "hr_second_pass_steps")
                c["hr_denoising_strength"] = self.tr(gr.Slider(
                    0, 1, value=0.7, step=0.01, label=self.t("denoising_strength"),
                ), "denoising_strength")
        self.build_script()

    def inputs(self, with_controlnet: bool = True) -> list[Any]:
        """The form's inputs; the generate click's end with the Script's fields (`tabs/xyz.py`)."""
        inputs = super().inputs(with_controlnet)
        return inputs + self.script_inputs() if with_controlnet else inputs

    def build_actions(self) -> None:
        self.components["save_defaults"] = self.tr(
            gr.Button(self.t("save_defaults"), elem_id="atelier-save-defaults"), "save_defaults", "value"
        )

    def generate_callback(self) -> Callable[..., Iterator[tuple]]:
        return self.generate_txt2img

    def wire(self) -> None:
        super().wire()
        self.components["save_defaults"].click(self.save_defaults, inputs=self.inputs(with_controlnet=False))
        self.wire_script()

    @callback
    def generate_txt2img(self, *args: Any) -> Iterator[tuple]:
        args, script = self.split_script(args)
        if script["script"] == SCRIPT_XYZ:
            yield from self.submit_plot_and_follow(args, script)
        else:
            yield from self.submit_and_follow(*args)

    @callback
    def save_defaults(self, *args: Any) -> None:
        values, _editor = self._values(args, with_controlnet=False)  # units hold images: not kept
        with member_errors(self.language):
            generation_defaults_save(user=self.user, values=values)
        gr.Info(self.t("defaults_saved"))
