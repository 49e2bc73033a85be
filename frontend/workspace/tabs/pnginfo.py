"""The PNG Info tab: the generation parameters stored in a PNG, and "Send to txt2img"."""

from __future__ import annotations

import gradio as gr

from frontend.workspace import gallery
from frontend.workspace.jobs import member_errors
from frontend.workspace.tabs.base import Tab, callback

# What "Send to txt2img" fills, in this order (then the tab switch).
SENT_FIELDS = ("prompt", "negative_prompt", "sampler_name", "scheduler", "steps", "cfg_scale", "width", "height", "seed")


class PngInfoTab(Tab):
    tab_id = "pnginfo"

    def build(self) -> None:
        with gr.Row():
            self.source = self.tr(gr.Image(
                label=self.t("png_source"), type="filepath", image_mode=None, sources=("upload", "clipboard"),
                elem_id="atelier-pnginfo-image",
            ), "png_source")
            with gr.Column():
                self.text = self.tr(gr.Textbox(label=self.t("png_parameters"), lines=6, interactive=False,
                                               elem_id="atelier-pnginfo-text"), "png_parameters")
                self.fields = gr.JSON(value={})
                self.send = self.tr(gr.Button(self.t("send_to_txt2img")), "send_to_txt2img", "value")

    def wire(self) -> None:
        self.source.change(self.read_pnginfo, inputs=[self.source], outputs=[self.text, self.fields])
        txt2img = self.workspace.txt2img
        self.send.click(self.send_pnginfo_to_txt2img, inputs=[self.fields],
                        outputs=[*(txt2img[name] for name in SENT_FIELDS), self.workspace.tabs])

    @callback
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

    @callback
    def send_pnginfo_to_txt2img(self, fields: dict | None) -> tuple:
        values = gallery.params_from_pnginfo(fields or {})
        return (*(values[name] if name in values else gr.skip() for name in SENT_FIELDS), gr.Tabs(selected="txt2img"))
