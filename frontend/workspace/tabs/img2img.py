"""The img2img tab: the generation form on an init image, with an inpainting mask painted on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from frontend.workspace.jobs import WorkspaceError
from frontend.workspace.tabs.base import callback
from frontend.workspace.tabs.generation import GenerationTab

IMG2IMG_FIELDS = ("denoising_strength", "mask_blur", "inpainting_fill", "inpaint_full_res")
MASKED_CONTENT_CHOICES = [("fill", 0), ("original", 1), ("latent noise", 2), ("latent nothing", 3)]


def mask_from_editor(value: dict | None) -> tuple[Image.Image | None, Image.Image | None]:
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


class Img2ImgTab(GenerationTab):
    kind = "img2img"
    tab_id = "img2img"
    own_fields = (*IMG2IMG_FIELDS, "editor")

    def build_source(self) -> None:
        self.components["editor"] = self.tr(gr.ImageEditor(
            label=self.t("init_image"), type="pil", image_mode="RGBA", sources=("upload", "clipboard"),
            brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"), layers=False,
            elem_id="atelier-img2img-editor", height=420,
        ), "init_image")

    def build_options(self) -> None:
        c = self.components
        with gr.Row():
            c["denoising_strength"] = self.tr(gr.Slider(
                0, 1, value=self.workspace.defaults["denoising_strength"], step=0.01, label=self.t("denoising_strength"),
            ), "denoising_strength")
            c["mask_blur"] = self.tr(gr.Slider(0, 64, value=4, step=1, label=self.t("mask_blur")), "mask_blur")
        with gr.Row():
            c["inpainting_fill"] = self.tr(gr.Radio(
                choices=MASKED_CONTENT_CHOICES, value=1, label=self.t("masked_content"),
            ), "masked_content")
            c["inpaint_full_res"] = self.tr(gr.Checkbox(value=False, label=self.t("inpaint_area")), "inpaint_area")

    def generate_callback(self) -> Callable[..., Iterator[tuple]]:
        return self.generate_img2img

    def init_image_and_mask(self, editor: dict | None) -> tuple[Image.Image | None, Image.Image | None]:
        init_image, mask = mask_from_editor(editor)
        if init_image is None:
            raise WorkspaceError(self.t("need_init_image"))
        return init_image, mask

    def receiving_outputs(self) -> list[Any]:
        """What "Send to img2img" fills (the image and its parameters), before the tab switch."""
        i = self.components
        return [i["editor"], i["prompt"], i["negative_prompt"], i["sampler_name"], i["scheduler"], i["steps"],
                i["cfg_scale"], i["width"], i["height"], i["seed"]]

    @callback
    def generate_img2img(self, *args: Any) -> Iterator[tuple]:
        yield from self.submit_and_follow(*args)
