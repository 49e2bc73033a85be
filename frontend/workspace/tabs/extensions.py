"""The Extensions tab: the platform's extensions, each on or off for this member only."""

from __future__ import annotations

from typing import Any

import gradio as gr

from frontend.member_selectors import extension_enabled_for_user, extensions_for_user, hidden_tabs_for_user
from frontend.member_services import extensions_set_enabled
from frontend.workspace.extensions import PROMPT_STYLES
from frontend.workspace.jobs import member_errors
from frontend.workspace.tabs.base import Tab, callback


class ExtensionsTab(Tab):
    tab_id = "extensions"

    def build(self) -> None:
        self.intro = self.tr(gr.Markdown(self.t("extensions_intro")), "extensions_intro", "value")
        self.table = gr.Markdown(self.extensions_markdown())
        states = extensions_for_user(self.user)
        self.enabled = self.tr(gr.CheckboxGroup(
            choices=[(e.title, e.name) for e in states if e.available],
            value=[e.name for e in states if e.available and e.enabled],
            label=self.t("extensions_enabled"), elem_id="atelier-extensions",
        ), "extensions_enabled")
        self.apply = self.tr(gr.Button(self.t("extensions_apply"), elem_id="atelier-extensions-apply"),
                             "extensions_apply", "value")

    def wire(self) -> None:
        self.apply.click(self.apply_extensions, inputs=[self.enabled],
                         outputs=[self.table, *self.workspace.style_panels,
                                  *(tab.block for tab in self.workspace.extension_tabs())])

    def enabled_names(self) -> list[str]:
        return [e.name for e in extensions_for_user(self.user) if e.available and e.enabled]

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

    def style_picker_updates(self) -> list[Any]:
        """The prompt-styles panels of the generation tabs, shown while the member has the extension on."""
        visible = extension_enabled_for_user(self.user, PROMPT_STYLES)
        return [gr.Row(visible=visible) for _ in self.workspace.style_panels]

    @callback
    def apply_extensions(self, enabled_names: list[str] | None) -> tuple:
        with member_errors(self.language):
            extensions_set_enabled(user=self.user, enabled_names=list(enabled_names or []))
        gr.Info(self.t("extensions_saved"))
        hidden = hidden_tabs_for_user(self.user)
        tabs = [gr.Tab(visible=tab.visibility_now(hidden)) for tab in self.workspace.extension_tabs()]
        return (self.extensions_markdown(), *self.style_picker_updates(), *tabs)
