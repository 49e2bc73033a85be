"""The Gallery tab: the member's own images, newest first, with their infotext."""

from __future__ import annotations

import gradio as gr

from frontend.workspace import gallery
from frontend.workspace.jobs import member_errors
from frontend.workspace.tabs.base import PicksImages, callback


class GalleryTab(PicksImages):
    tab_id = "gallery"

    def build(self) -> None:
        with gr.Row():
            self.refresh = self.tr(gr.Button(self.t("refresh_gallery"), scale=0), "refresh_gallery", "value")
        self.images = self.tr(gr.Gallery(
            label=self.t("my_images"), columns=6, height=520, format="png", elem_id="atelier-my-gallery",
            fit_columns=False, object_fit="contain", allow_preview=True,
        ), "my_images")
        self.refs = gr.State([])
        self.selected = gr.State(None)
        self.info = self.tr(gr.Textbox(label=self.t("generation_info"), lines=4, interactive=False,
                                       elem_id="atelier-my-gallery-info"), "generation_info")
        # "Send to img2img" only where there is an img2img tab (operators may hide it).
        self.send = self.tr(gr.Button(self.t("send_to_img2img")), "send_to_img2img", "value") \
            if self.workspace.shows("img2img") else None

    def wire(self) -> None:
        self.refresh.click(self.refresh_gallery, outputs=[self.images, self.refs])
        self.images.select(self.select_image, inputs=[self.refs], outputs=[self.selected, self.info])
        if self.send is not None:
            self.send.click(self.send_to_img2img, inputs=[self.selected, self.refs], outputs=self.workspace.send_outputs())

    def items(self) -> tuple[list, list]:
        """The member's images and their refs, as the gallery and its state take them."""
        items, refs = gallery.gallery_items(self.user)
        return items, [list(ref) for ref in refs]

    @callback(skip_when_refused=2)  # also run after each generation: quiet once the gallery is hidden
    def refresh_gallery(self) -> tuple[list, list]:
        with member_errors(self.language):
            return self.items()
