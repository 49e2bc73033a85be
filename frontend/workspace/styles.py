"""The Styles panel under each generation tab's prompts (the "prompt-styles" extension).

The picker lists the styles the member may use (`tenants.selectors.prompt_styles_for_user`):
their own, their team's and the public ones, one per name (their own shadows a team or public
style of that name), each labelled with whose it is. 💾 saves the tab's prompt and negative
prompt as the member's own style under the name typed (or, with no name typed, under the one
style picked: A1111's overwrite); 🗑 deletes the member's own picked styles, and refuses a
team or public style with a message (operators manage those in admin). After either, every
picker of the workspace is re-listed. The styles chosen are merged when a job is submitted
(`frontend/workspace/jobs.py`, `a1111/styles.py`), as `/sdapi/v1` merges a request's `styles`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

from frontend.member_selectors import extension_enabled_for_user
from frontend.workspace.extensions import PROMPT_STYLES
from frontend.workspace.jobs import WorkspaceError, member_errors
from frontend.workspace.tabs.base import Tab, callback
from tenants.models import PromptStyle
from tenants.selectors import prompt_styles_for_user
from tenants.services import prompt_style_delete, prompt_style_save

if TYPE_CHECKING:
    from frontend.workspace.ui import Workspace

_SCOPE_KEYS = {PromptStyle.Scope.USER: "style_scope_user", PromptStyle.Scope.TENANT: "style_scope_tenant"}


def style_choices(workspace: Workspace) -> list[tuple[str, str]]:
    """(label, name) of every style the member may use now, labelled with whose it is."""
    choices = []
    for style in prompt_styles_for_user(workspace.user):
        key = _SCOPE_KEYS.get(style.scope)
        choices.append((f"{style.name} ({workspace.t(key)})" if key else style.name, style.name))
    return choices


def picker_settings(current: Any, choices: list[tuple[str, str]]) -> dict[str, Any]:
    """A picker's choices and value: the picks in `current` that are still there."""
    names = {name for _label, name in choices}
    picked = current if isinstance(current, (list, tuple)) else []
    return {"choices": choices, "value": [name for name in picked if name in names]}


def picker_update(current: Any, choices: list[tuple[str, str]]) -> gr.Dropdown:
    """A picker re-listed, keeping the picks that are still there."""
    return gr.Dropdown(multiselect=True, **picker_settings(current, choices))


class StylesPanel(Tab):
    """One generation tab's Styles panel; its functions belong to that tab (hiding the tab
    refuses them). `workspace.style_panels` holds each panel's row (shown while the extension is
    on) and `workspace.style_pickers` each picker."""

    def __init__(self, workspace: Workspace, tab_id: str) -> None:
        super().__init__(workspace)
        self.tab_id = tab_id

    def build(self, picked: list[str] | None) -> gr.Dropdown:
        kind = self.tab_id
        with gr.Row(equal_height=True, visible=extension_enabled_for_user(self.user, PROMPT_STYLES),
                    elem_id=f"atelier-{kind}-styles-panel") as self.row:
            self.picker = self.tr(gr.Dropdown(
                **picker_settings(picked, style_choices(self.workspace)), multiselect=True,
                label=self.t("styles"), elem_id=f"atelier-{kind}-styles", scale=4,
            ), "styles")
            self.name = self.tr(gr.Textbox(label=self.t("style_name"), max_lines=1, scale=2,
                                           elem_id=f"atelier-{kind}-style-name"), "style_name")
            self.save = self.tr(gr.Button(self.t("style_save"), scale=0, min_width=48,
                                          elem_id=f"atelier-{kind}-style-save"), "style_save", "value")
            self.delete = self.tr(gr.Button(self.t("style_delete"), scale=0, min_width=48,
                                            elem_id=f"atelier-{kind}-style-delete"), "style_delete", "value")
        self.workspace.style_panels.append(self.row)
        self.workspace.style_pickers.append(self.picker)
        return self.picker

    def wire(self, prompt: gr.Textbox, negative_prompt: gr.Textbox) -> None:
        pickers = self.workspace.style_pickers
        self.save.click(self.save_style, inputs=[self.name, prompt, negative_prompt, self.picker, *pickers],
                        outputs=[self.name, *pickers])
        self.delete.click(self.delete_style, inputs=[self.picker, *pickers], outputs=pickers)

    @callback
    def save_style(self, name: str | None, prompt: str | None, negative_prompt: str | None,
                   picked: list[str] | None, *current: list[str] | None) -> tuple:
        """Save the prompts as the member's own style `name` (none typed: the one style picked)."""
        name = (name or "").strip()
        if not name and len(picked or []) == 1:
            name = picked[0]
        with member_errors(self.language):
            style = prompt_style_save(user=self.user, name=name, prompt=prompt or "",
                                      negative_prompt=negative_prompt or "")
        gr.Info(self.t("style_saved").format(name=style.name))
        choices = style_choices(self.workspace)
        return "", *(picker_update(value, choices) for value in current)

    @callback
    def delete_style(self, picked: list[str] | None, *current: list[str] | None) -> tuple:
        """Delete the member's own picked styles (a team or public one: refused, nothing deleted)."""
        if not picked:
            raise WorkspaceError(self.t("style_pick_to_delete"))
        own = {style.name for style in prompt_styles_for_user(self.user) if style.scope == PromptStyle.Scope.USER}
        with member_errors(self.language):
            for name in sorted(picked, key=lambda name: name in own):  # a refusal before any deletion
                prompt_style_delete(user=self.user, name=name)
        gr.Info(self.t("style_deleted").format(name=", ".join(picked)))
        choices = style_choices(self.workspace)
        return tuple(picker_update(value, choices) for value in current)
