"""The Settings tab: the interface language, and the face restoration defaults.

The face restoration defaults are A1111's Settings > Face restoration: what "Restore faces"
runs with, stored as the member's own /sdapi/v1/options, so their API calls use them too.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from frontend.member_services import language_set
from frontend.workspace.i18n import LANGUAGE_NAMES, LANGUAGES
from frontend.workspace.jobs import member_errors
from frontend.workspace.tabs.base import Tab, callback
from a1111.generation import FACE_RESTORERS
from inference.selectors import user_options_get
from inference.services import user_options_update


class SettingsTab(Tab):
    tab_id = "settings"

    def build(self) -> None:
        self.language_radio = self.tr(gr.Radio(
            choices=[(LANGUAGE_NAMES[code], code) for code in LANGUAGES], value=self.language,
            label=self.t("language"), elem_id="atelier-language",
        ), "language")
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

    def stored_settings(self) -> dict[int, dict[str, Any]]:
        """The member's language (`workspace.language`, just re-read) and face options, as stored."""
        options = user_options_get(self.user)
        return {
            id(self.language_radio): {"value": self.language},
            id(self.face_model): {"value": options["face_restoration_model"]},
            id(self.code_former_weight): {"value": options["code_former_weight"]},
        }

    def wire(self) -> None:
        # `input`, not `change`: the page load sets the stored language, which is no new choice.
        self.language_radio.input(self.set_language, inputs=[self.language_radio],
                                   outputs=self.workspace.i18n_outputs())
        self.face_settings_save.click(self.save_face_settings, inputs=[self.face_model, self.code_former_weight])

    @callback
    def save_face_settings(self, model: str, weight: float) -> None:
        with member_errors(self.language):
            user_options_update(user=self.user, values={"face_restoration_model": model, "code_former_weight": weight})
        gr.Info(self.t("face_settings_saved"))

    @callback
    def set_language(self, language: str) -> list[Any]:
        with member_errors(self.language):
            language_set(user=self.user, language=language)
        self.workspace.language = language
        gr.Info(self.t("language_saved"))
        return self.workspace.language_updates()
