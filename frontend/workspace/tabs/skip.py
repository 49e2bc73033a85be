"""A generation tab's Skip button, beside Cancel (Interrupt), as in A1111.

Skip asks the member's running job of the tab (`workspace_skip`, owner-scoped) to drop the images
it is making now and go on with the rest: with a batch count of n, the current iteration's images
are dropped and the job ends with the others (`inference/runner/batch.py`).
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from frontend.workspace.jobs import progress_html, workspace_skip
from frontend.workspace.tabs.base import Tab, callback


class SkipsImages(Tab):
    """The tab's `skip` button (built beside `cancel`) and its callback."""

    kind: str
    components: dict[str, Any]

    def build_skip_button(self) -> None:
        self.components["skip"] = self.tr(gr.Button(
            self.t("skip"), elem_id=f"atelier-{self.kind}-skip", scale=1, min_width=90,
        ), "skip", "value")

    def wire_skip_button(self) -> None:
        c = self.components
        c["skip"].click(self.skip, inputs=[c["job_id"]], outputs=[c["progress"]])

    @callback
    def skip(self, public_id: str) -> Any:
        job = workspace_skip(user=self.user, public_id=public_id or "", kind=self.kind)
        if job is None:
            gr.Info(self.t("nothing_to_skip"))
            return gr.skip()
        return progress_html(job, self.language)
