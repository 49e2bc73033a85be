"""The seed buttons of the generation tabs (A1111's 🎲 and ♻️ beside the seed field).

🎲 puts -1 (a random seed) in the field; ♻️ puts in the seed of the image the tab shows: the
picked image of the result, else its first image, else the first image of the member's newest
finished job of the tab's kind. Seeds are read from the member's own Job rows (`image_seed`,
owner-scoped), never from what the browser sends as a seed.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from frontend.workspace.jobs import WorkspaceError, member_errors, own_job
from frontend.workspace.tabs.base import Tab, callback
from inference.selectors import job_newest_finished_for_owner

RANDOM_SEED = "\U0001f3b2"  # 🎲
REUSE_SEED = "\u267b\ufe0f"  # ♻️


def image_seed(user: Any, ref: Any) -> int:
    """The seed of image `ref` ((job public id, index)) of the member's own job."""
    try:
        public_id, index = str(ref[0]), int(ref[1])
    except (TypeError, ValueError, IndexError):
        raise WorkspaceError("Pick an image first.") from None
    job = own_job(user, public_id)
    if job is None or not 0 <= index < len(job.outputs) or index >= len(job.seeds):
        raise WorkspaceError("That image is not in your gallery.")
    return job.seeds[index]


class SeedButtons(Tab):
    """A generation tab's 🎲 and ♻️ buttons: built beside its `seed` field, wired to it."""

    kind: str
    components: dict[str, Any]

    def build_seed_buttons(self) -> None:
        c = self.components
        with gr.Column(min_width=50, scale=0):
            c["seed_random"] = gr.Button(RANDOM_SEED, size="sm", elem_id=f"atelier-{self.kind}-seed-random")
            c["seed_reuse"] = gr.Button(REUSE_SEED, size="sm", elem_id=f"atelier-{self.kind}-seed-reuse")

    def wire_seed_buttons(self) -> None:
        c = self.components
        c["seed_random"].click(self.random_seed, outputs=[c["seed"]], show_progress="hidden")
        c["seed_reuse"].click(self.reuse_seed, inputs=[c["selected"], c["result_refs"]], outputs=[c["seed"]],
                              show_progress="hidden")

    @callback
    def random_seed(self) -> int:
        return -1

    @callback
    def reuse_seed(self, selected: Any, refs: list | None) -> Any:
        """The seed of the picked (else the first) image shown, else of the newest finished job's first image."""
        ref = selected or (refs[0] if refs else None)
        with member_errors(self.language):
            if ref:
                return image_seed(self.user, ref)
            job = job_newest_finished_for_owner(self.user, self.kind)
        if job is not None and job.status == "succeeded" and job.seeds:
            return job.seeds[0]
        gr.Info(self.t("no_seed_to_reuse"))
        return gr.skip()
