"""The member's Gradio workspace: `build_workspace(user) -> gradio.Blocks`.

The session manager (`frontend/workspace/server.py`) calls this once per member process, with
Django configured, and mounts the Blocks at `/ui` behind its guard; one process serves one
member, so every callback acts as `user` and reads only through owner-scoped selectors.

`Workspace` holds what the tabs share (the member, their language and the labels to translate
when it changes, the model lists, the checkpoint and VAE pickers above the tabs) and composes
the tabs of `frontend/workspace/tabs/`: txt2img, img2img (with an inpainting mask painted on
the image), both with a ControlNet panel (`frontend/workspace/controlnet.py`), Extras (upscale and
restore faces, `tabs/extras.py`), Gallery (the
member's own images), PNG Info, Extensions (per-member on/off of the platform's extensions)
and Settings (interface language). Each tab builds its own components and wires its own
callbacks (wrapped by `tabs.base.callback`).

Operators hide tabs (`ATELIER_HIDDEN_TABS`, `Tenant.hidden_workspace_tabs`; ids in
`frontend/workspace/tab_ids.py`): a tab hidden when the member's process starts is not built
(nor are the buttons of other tabs that send to it); one hidden later is hidden by the next
page load, and its functions are refused at each call (`Tab.refusal`).
"""

from html import escape
from typing import Any

import gradio as gr
from django.contrib.auth.models import AbstractUser

from frontend.workspace import compat  # noqa: F401  (before any component: see compat.py)
from frontend.member_selectors import generation_defaults_for_user, hidden_tabs_for_user, language_for_user
from frontend.workspace import controlnet
from frontend.workspace.i18n import text
from frontend.workspace.keys import CTRL_ENTER_JS
from frontend.workspace.styles import picker_settings, style_choices
from frontend.workspace.tab_ids import BEAUTIFUL_PROMPT_TAB, EXTRAS_TAB
from frontend.workspace.tabs.base import callback
from frontend.workspace.tabs.beautiful_prompt import BeautifulPromptTab
from frontend.workspace.tabs.extensions import ExtensionsTab
from frontend.workspace.tabs.extras import ExtrasTab
from frontend.workspace.tabs.gallery import GalleryTab
from frontend.workspace.tabs.generation import controlnet_dropdown
from frontend.workspace.tabs.img2img import Img2ImgTab
from frontend.workspace.tabs.pnginfo import PngInfoTab
from frontend.workspace.tabs.settings import SettingsTab
from frontend.workspace.tabs.txt2img import Txt2ImgTab
from a1111.generation import HIRES_UPSCALERS
from inference.model_registry import model_list_for_user, upscalers_for_user
from tenants.selectors import membership_for_user


class Workspace:
    """One member's workspace: the tabs, and what they share."""

    def __init__(self, user: AbstractUser) -> None:
        self.user = user
        self.hidden_tabs = hidden_tabs_for_user(user)  # at build: these tabs are not built at all
        self.language = language_for_user(user)
        self.defaults = generation_defaults_for_user(user)
        # (component, string key, attribute, format parameters): relabelled when the language changes
        self.i18n: list[tuple[gr.components.Component | gr.blocks.BlockContext, str, str, dict[str, Any]]] = []
        self.i18n_choices: dict[int, tuple[tuple[str, Any], ...]] = {}  # id(component) -> (key, value) choices
        self.style_panels: list[gr.Row] = []  # each generation tab's prompt-styles panel (frontend/workspace/styles.py)
        self.style_pickers: list[gr.Dropdown] = []  # and the style picker in it
        self.controlnet_module_choices = controlnet.preprocessor_choices()
        self.blocks: gr.Blocks | None = None
        self.txt2img = Txt2ImgTab(self)
        self.img2img = Img2ImgTab(self)
        self.extras = ExtrasTab(self)
        self.beautiful_prompt = BeautifulPromptTab(self)
        self.gallery = GalleryTab(self)
        self.pnginfo = PngInfoTab(self)
        self.extensions = ExtensionsTab(self)
        self.settings = SettingsTab(self)

    # --- helpers --------------------------------------------------------------------------
    def t(self, key: str) -> str:
        return text(self.language, key)

    def shows(self, tab_id: str) -> bool:
        """Whether the tab `tab_id` is built in this process (not hidden by the operators at its start)."""
        return tab_id not in self.hidden_tabs

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
                for tab_id, tab in self.built_tabs().items():
                    tab.block = self.tr(gr.Tab(self.t(f"tab_{tab_id}"), id=tab_id, elem_id=f"atelier-tab-{tab_id}",
                                               visible=tab.initially_visible()), f"tab_{tab_id}")
                    with tab.block:
                        tab.build()
            self.wire()
        demo.atelier_workspace = self  # for tests and debugging: the callbacks behind the Blocks
        return demo

    def tabs_by_id(self) -> dict[str, Any]:
        """The tabs in their order on the page, by their Gradio tab id."""
        return {
            "txt2img": self.txt2img, "img2img": self.img2img, EXTRAS_TAB: self.extras,
            BEAUTIFUL_PROMPT_TAB: self.beautiful_prompt,
            "gallery": self.gallery, "pnginfo": self.pnginfo,
            "extensions": self.extensions, "settings": self.settings,
        }

    def extension_tabs(self) -> list[Any]:
        """The built tabs an extension brings (shown while the member has it on)."""
        return [tab for tab_id, tab in self.built_tabs().items() if tab_id == BEAUTIFUL_PROMPT_TAB]

    def built_tabs(self) -> dict[str, Any]:
        """The tabs this process builds: every tab but those the operators hid at its start."""
        return {tab_id: tab for tab_id, tab in self.tabs_by_id().items() if self.shows(tab_id)}

    def header_html(self, team: str, *, loaded: bool = False) -> str:
        """The page header; `loaded`: drawn by a page load's `on_load` (or later), so the controls
        show the member's stored settings (the browser tests wait for `data-loaded` before they type:
        a load's updates arriving after typing would replace what was typed)."""
        marker = ' data-loaded="1"' if loaded else ""
        return (
            f'<div class="atelier-header"{marker} style="display:flex;justify-content:space-between;align-items:baseline;'
            'gap:1rem;padding:.25rem .25rem .5rem;border-bottom:1px solid #e5e7eb">'
            f'<strong style="font-size:1.15rem">{escape(self.t("title"))}</strong>'
            f'<span><span class="atelier-user">{escape(self.user.get_username())}</span>{escape(team)} · '
            f'<a href="/" target="_top">{escape(self.t("home"))}</a> · '
            f'<a href="/files/" target="_top" class="atelier-files">{escape(self.t("files"))}</a> · '
            f'<a href="/docs" target="_top" class="atelier-api-docs">{escape(self.t("api_docs"))}</a></span></div>'
        )

    # --- wiring ---------------------------------------------------------------------------
    def generation_tabs(self) -> list[Any]:
        return [tab for tab in (self.txt2img, self.img2img) if self.shows(tab.tab_id)]

    def controlnet_model_dropdowns(self) -> list[gr.Dropdown]:
        return [unit["model"] for tab in self.generation_tabs() for unit in tab["controlnet"]]

    def send_outputs(self) -> list[Any]:
        """What "Send to img2img" fills, from any tab: img2img's image and fields, and the tab switch."""
        return [*self.img2img.receiving_outputs(), self.tabs]

    def i18n_outputs(self) -> list[Any]:
        return [component for component, _key, _attr, _params in self.i18n] + [self.header]

    def wire(self) -> None:
        for tab in self.built_tabs().values():
            tab.wire()
        self.refresh_models.click(
            self.refresh_model_lists, inputs=self.controlnet_model_dropdowns(),
            outputs=[self.checkpoint, self.vae, *(tab["network"] for tab in self.generation_tabs()),
                     *self.controlnet_model_dropdowns()],
        )
        # On each page load: the member's gallery, and their current language, extensions, saved
        # defaults, options and tabs (they may have changed them, here or on the home page, and the
        # operators may have hidden a tab, since this process started: the Blocks' initial values
        # are those of its start).
        self.blocks.load(self.on_load, outputs=self.on_load_outputs())
        self.blocks.load(None, js=CTRL_ENTER_JS)  # Ctrl+Enter in a prompt box generates (keys.py)

    def on_load_outputs(self) -> list[Any]:
        outputs: list[Any] = []
        if self.shows("gallery"):
            outputs += [self.gallery.images, self.gallery.refs]
        if self.shows("extensions"):
            outputs += [self.extensions.table, self.extensions.enabled]
        return outputs + [*self.style_panels, *self.i18n_outputs()]

    # --- callbacks ------------------------------------------------------------------------
    @callback
    def refresh_model_lists(self, *controlnet_models: str | None) -> tuple:
        """Every model list re-read from the member's, team's and public folders; `controlnet_models`:
        each ControlNet unit's current pick, kept when still there."""
        checkpoints = self.checkpoint_choices()
        networks = self.network_choices()
        controlnets = self.controlnet_model_choices()
        return (
            gr.Dropdown(choices=checkpoints), gr.Dropdown(choices=self.vae_choices()),
            *(gr.Dropdown(choices=networks) for _tab in self.generation_tabs()),
            *(controlnet_dropdown(controlnets, current) for current in controlnet_models),
        )

    def language_updates(self, stored: dict[int, dict[str, Any]] | None = None) -> list[Any]:
        """Every registered component relabelled in the current language, then the header;
        `stored`: more properties by id(component) (the member's settings, from `stored_settings`)."""
        updates = []
        for component, key, attr, params in self.i18n:
            update = {attr: self.t(key).format(**params) if params else self.t(key)}
            if choices := self.i18n_choices.get(id(component)):
                update["choices"] = [(self.t(choice), value) for choice, value in choices]
            update.update((stored or {}).get(id(component), {}))
            updates.append(gr.update(**update))
        membership = membership_for_user(self.user)
        return updates + [self.header_html(f" · {membership.tenant.name}" if membership else "", loaded=True)]

    def stored_settings(self) -> dict[int, dict[str, Any]]:
        """What each control that shows a member's setting shows, by id(component), read from
        the database now (the Blocks' own values are those of when this process started):
        the language, the saved generation defaults, the checkpoint and VAE, the face options."""
        self.language = language_for_user(self.user)
        self.defaults = generation_defaults_for_user(self.user)
        checkpoints, vaes = self.checkpoint_choices(), self.vae_choices()
        checkpoint, vae = self.defaults.get("checkpoint"), self.defaults.get("vae")
        stored = {
            id(self.checkpoint): {"choices": checkpoints, "value": checkpoint if checkpoint in checkpoints
                                  else (checkpoints[0] if checkpoints else None)},
            id(self.vae): {"choices": vaes, "value": vae if vae in vaes else "Automatic"},
        }
        for tab in (self.txt2img, self.img2img, self.settings):
            if self.shows(tab.tab_id):
                stored.update(tab.stored_settings())
        styles = style_choices(self)  # styles saved or deleted since (another browser tab, an operator)
        for picker in self.style_pickers:
            stored[id(picker)] = picker_settings(stored.get(id(picker), {}).get("value"), styles)
        hidden = hidden_tabs_for_user(self.user)
        for tab in self.built_tabs().values():  # a tab hidden since this process started goes
            stored.setdefault(id(tab.block), {})["visible"] = tab.visibility_now(hidden)
        return stored

    @callback
    def on_load(self) -> tuple:
        stored = self.stored_settings()
        updates: list[Any] = []
        if self.shows("gallery"):
            updates += self.gallery.items() if self.gallery.shown_now() else [[], []]
        if self.shows("extensions"):
            updates += [self.extensions.extensions_markdown(), self.extensions.enabled_names()]
        return (*updates, *self.extensions.style_picker_updates(), *self.language_updates(stored))


def build_workspace(user: AbstractUser) -> gr.Blocks:
    """The member's workspace as a Gradio Blocks (not launched)."""
    return Workspace(user).build()
