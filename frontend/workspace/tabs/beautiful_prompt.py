"""The BeautifulPrompt tab (the `beautiful-prompt` extension; PAI's preset extension, A1111's promptgen).

A short prompt, a prompt-generation model (the member's own, their team's and the public ones,
`promptgen_models_for_user`), the sampling settings, Generate and Cancel. Generate submits one
promptgen job through `promptgen_submit` (the workers run the language model; this process never
imports torch or transformers) and follows the member's Job row as the image tabs do: the bar
moves one step per new token, then each result shows in a row of its own with "to txt2img" and
"to img2img", which put it into that tab's prompt (appended or in place of it, the member's
choice) and switch to that tab. "My last expansions" lists the member's own promptgen jobs; a
pick shows its results again. A page load follows a running expansion or shows the last one.

The tab is built unless the operators hid it; it is shown while the member has the extension on
(the Extensions tab), and its functions are refused while it is off (`BeautifulPromptTab.refusal`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
from django.conf import settings
from django.contrib.auth.models import AbstractUser

from a1111.promptgen import (
    MAX_REPETITION_PENALTY,
    MAX_SEED,
    MAX_TEMPERATURE,
    MAX_TOP_K,
    MAX_TOP_P,
    MIN_REPETITION_PENALTY,
    MIN_TEMPERATURE,
    MIN_TOP_P,
    PROMPTGEN_KIND,
    PromptgenRequest,
    parse_promptgen_request,
)
from frontend.member_selectors import extension_enabled_for_user, promptgen_history_for_user
from frontend.workspace.extensions import BEAUTIFUL_PROMPT
from frontend.workspace.jobs import (
    POLL_SECONDS,
    WorkspaceError,
    as_workspace_error,
    member_errors,
    own_job,
    progress_error_html,
    progress_html,
    watch_job,
    workspace_cancel,
)
from frontend.workspace.tab_ids import BEAUTIFUL_PROMPT_TAB
from frontend.workspace.tabs.base import Tab, callback
from inference.limits import promptgen_limits
from inference.models import Job
from inference.selectors import job_newest_active_for_owner, job_newest_finished_for_owner, promptgen_models_for_user
from inference.services import promptgen_submit
from tenants.selectors import tenant_for_user
from tenants.workdirs import public_model_dir, tenant_model_dir, user_model_dir

RESULT_SLOTS = 8  # result rows built (the form asks for at most this many; the API allows up to 16)
HISTORY_LENGTH = 20
SEND_MODES = (("bp_append", "append"), ("bp_replace", "replace"))

# The form's fields, in the order the callbacks receive them.
FIELDS = ("prompt", "model", "temperature", "top_k", "top_p", "repetition_penalty", "max_length", "num_results", "seed")


def sent_prompt(current: str | None, result: str, mode: str | None) -> str:
    """The prompt after sending `result` to it: in place of it, or appended with ", " (the default)."""
    current = current or ""
    if mode == "replace" or not current.strip():
        return result
    return f"{current.rstrip().rstrip(',')}, {result}"


def _shown(folder: Path) -> str:
    """A models folder as a member sees it: relative to the platform's data folder when inside it."""
    try:
        return folder.resolve().relative_to(Path(settings.DATA_DIR).resolve()).as_posix()
    except ValueError:
        return str(folder)


def promptgen_folders(user: AbstractUser) -> dict[str, str]:
    """Where a member's, their team's and the public prompt-generation models go, as shown to them."""
    tenant = tenant_for_user(user)
    return {
        "user_folder": _shown(user_model_dir(user.get_username(), PROMPTGEN_KIND)),
        "team_folder": _shown(tenant_model_dir(tenant.slug, PROMPTGEN_KIND)) if tenant else "-",
        "public_folder": _shown(public_model_dir(PROMPTGEN_KIND)),
    }


def history_label(job: Job) -> str:
    prompt = str(job.params.get("prompt", ""))
    prompt = prompt if len(prompt) <= 60 else prompt[:57] + "…"
    model = (job.params.get("resolved_model") or {}).get("name") or job.params.get("model", "")
    return f"{job.created_at:%Y-%m-%d %H:%M} · {prompt} · {model} · {len(job.texts)}"


class BeautifulPromptTab(Tab):
    tab_id = BEAUTIFUL_PROMPT_TAB

    def __init__(self, workspace: Any) -> None:
        super().__init__(workspace)
        self.components: dict[str, Any] = {}
        self.result_rows: list[gr.Row] = []
        self.result_texts: list[gr.Textbox] = []

    def __getitem__(self, name: str) -> Any:
        return self.components[name]

    # --- what the member may do -----------------------------------------------------------
    def refusal(self, needs: tuple[str, ...] = (), hidden: frozenset[str] | None = None) -> str | None:
        refused = super().refusal(needs, hidden)
        if refused is None and not extension_enabled_for_user(self.user, BEAUTIFUL_PROMPT):
            return self.t("bp_extension_off")
        return refused

    def initially_visible(self) -> bool:
        return extension_enabled_for_user(self.user, BEAUTIFUL_PROMPT)

    def model_choices(self) -> list[tuple[str, str]]:
        return [(f"{entry.title} ({entry.scope})", entry.title) for entry in promptgen_models_for_user(self.user)]

    def history_choices(self) -> list[tuple[str, str]]:
        return [(history_label(job), job.public_id) for job in promptgen_history_for_user(self.user, HISTORY_LENGTH)]

    # --- layout ---------------------------------------------------------------------------
    def build(self) -> None:
        c, limits = self.components, promptgen_limits()
        defaults = PromptgenRequest(prompt="", model="")
        models = self.model_choices()
        self.tr(gr.Markdown(self.t("bp_intro")), "bp_intro", "value")
        folders = promptgen_folders(self.user)
        c["no_models"] = self.tr(gr.Markdown(
            self.t("bp_no_models").format(**folders), visible=not models, elem_id="atelier-bp-no-models",
        ), "bp_no_models", "value", **folders)
        with gr.Row():
            with gr.Column(scale=3):
                c["prompt"] = self.tr(gr.Textbox(label=self.t("bp_prompt"), lines=2, elem_id="atelier-bp-prompt",
                                                 max_length=limits.max_prompt_chars), "bp_prompt")
                with gr.Row(equal_height=True):
                    c["model"] = self.tr(gr.Dropdown(
                        choices=models, value=models[0][1] if models else None, label=self.t("bp_model"),
                        elem_id="atelier-bp-model", scale=4,
                    ), "bp_model")
                    c["refresh"] = self.tr(gr.Button(self.t("refresh"), scale=1, elem_id="atelier-bp-refresh"),
                                           "refresh", "value")
                with self.tr(gr.Accordion(self.t("bp_sampling"), open=False), "bp_sampling"):
                    with gr.Row():
                        c["temperature"] = self.tr(gr.Slider(
                            MIN_TEMPERATURE, MAX_TEMPERATURE, value=defaults.temperature, step=0.01,
                            label=self.t("bp_temperature"), elem_id="atelier-bp-temperature",
                        ), "bp_temperature")
                        c["top_k"] = self.tr(gr.Slider(0, min(MAX_TOP_K, 200), value=defaults.top_k, step=1,
                                                       label=self.t("bp_top_k")), "bp_top_k")
                        c["top_p"] = self.tr(gr.Slider(MIN_TOP_P, MAX_TOP_P, value=defaults.top_p, step=0.01,
                                                       label=self.t("bp_top_p")), "bp_top_p")
                    with gr.Row():
                        c["repetition_penalty"] = self.tr(gr.Slider(
                            MIN_REPETITION_PENALTY, MAX_REPETITION_PENALTY, value=defaults.repetition_penalty,
                            step=0.01, label=self.t("bp_repetition_penalty"),
                        ), "bp_repetition_penalty")
                        c["max_length"] = self.tr(gr.Slider(
                            1, limits.max_length, value=min(defaults.max_length, limits.max_length), step=1,
                            label=self.t("bp_max_length"), elem_id="atelier-bp-max-length",
                        ), "bp_max_length")
                        slots = max(1, min(RESULT_SLOTS, limits.max_results))
                        c["num_results"] = self.tr(gr.Slider(
                            1, slots, value=min(defaults.num_results, slots), step=1,
                            label=self.t("bp_num_results"), elem_id="atelier-bp-num-results",
                        ), "bp_num_results")
                        c["seed"] = self.tr(gr.Number(value=-1, precision=0, minimum=-1, maximum=MAX_SEED,
                                                      label=self.t("seed"), elem_id="atelier-bp-seed"), "seed")
                c["history"] = self.tr(gr.Dropdown(
                    choices=self.history_choices(), value=None, label=self.t("bp_history"), elem_id="atelier-bp-history",
                ), "bp_history")
            with gr.Column(scale=3):
                with gr.Row():
                    c["generate"] = self.tr(gr.Button(self.t("generate"), variant="primary", scale=3,
                                                      elem_id="atelier-bp-generate"), "generate", "value")
                    c["cancel"] = self.tr(gr.Button(self.t("cancel"), variant="stop", scale=1,
                                                    elem_id="atelier-bp-cancel"), "cancel", "value")
                c["progress"] = gr.HTML(progress_html(None, self.language), elem_id="atelier-bp-progress")
                c["job_id"] = gr.Textbox(value="", visible=False)
                c["send_mode"] = self.tr(self.workspace.tr_choices(gr.Radio(
                    choices=[(self.t(key), value) for key, value in SEND_MODES], value="append",
                    label=self.t("bp_send_mode"), elem_id="atelier-bp-send-mode",
                ), SEND_MODES), "bp_send_mode")
                c["to_txt2img"], c["to_img2img"] = [], []
                for index in range(RESULT_SLOTS):
                    with gr.Row(visible=False, equal_height=True, elem_id=f"atelier-bp-result-{index}") as row:
                        text = self.tr(gr.Textbox(
                            label=self.t("bp_result").format(index=index + 1), lines=3, scale=4,
                            elem_id=f"atelier-bp-result-{index}-text", buttons=["copy"],
                        ), "bp_result", index=index + 1)
                        with gr.Column(scale=1, min_width=120):
                            c["to_txt2img"].append(self.tr(gr.Button(
                                self.t("bp_to_txt2img"), size="sm", elem_id=f"atelier-bp-result-{index}-txt2img",
                            ), "bp_to_txt2img", "value"))
                            if self.workspace.shows("img2img"):
                                c["to_img2img"].append(self.tr(gr.Button(
                                    self.t("bp_to_img2img"), size="sm", elem_id=f"atelier-bp-result-{index}-img2img",
                                ), "bp_to_img2img", "value"))
                    self.result_rows.append(row)
                    self.result_texts.append(text)

    # --- wiring ---------------------------------------------------------------------------
    def inputs(self) -> list[Any]:
        return [self.components[name] for name in FIELDS]

    def outputs(self) -> list[Any]:
        """(progress, job id, history, each result's text, each result's row)."""
        c = self.components
        return [c["progress"], c["job_id"], c["history"], *self.result_texts, *self.result_rows]

    def wire(self) -> None:
        c = self.components
        c["generate"].click(self.generate_prompts, inputs=self.inputs(), outputs=self.outputs(),
                            show_progress_on=[c["progress"]])
        c["cancel"].click(self.cancel_prompts, inputs=[c["job_id"]], outputs=[c["progress"]])
        c["refresh"].click(self.refresh_promptgen_models, inputs=[c["model"]], outputs=[c["model"], c["no_models"]])
        c["history"].input(self.show_expansion, inputs=[c["history"]], outputs=[c["prompt"], *self.result_texts,
                                                                                 *self.result_rows])
        txt2img_prompt = self.workspace.txt2img["prompt"]
        for text, button in zip(self.result_texts, c["to_txt2img"]):
            button.click(self.send_prompt_to_txt2img, inputs=[text, c["send_mode"], txt2img_prompt],
                         outputs=[txt2img_prompt, self.workspace.tabs])
        if c["to_img2img"]:
            img2img_prompt = self.workspace.img2img["prompt"]
            for text, button in zip(self.result_texts, c["to_img2img"]):
                button.click(self.send_prompt_to_img2img, inputs=[text, c["send_mode"], img2img_prompt],
                             outputs=[img2img_prompt, self.workspace.tabs])
        self.workspace.blocks.load(self.reattach_prompts, outputs=self.outputs(), concurrency_limit=None,
                                   show_progress="hidden")

    # --- what the outputs show ------------------------------------------------------------
    def results_updates(self, texts: list[str]) -> list[Any]:
        """Each result row's text and visibility: the first `len(texts)` rows shown, the rest hidden."""
        shown = texts[:len(self.result_texts)]
        values = [gr.Textbox(value=shown[i] if i < len(shown) else "") for i in range(len(self.result_texts))]
        rows = [gr.Row(visible=i < len(shown)) for i in range(len(self.result_rows))]
        return [*values, *rows]

    def history_update(self, selected: str | None = None) -> gr.Dropdown:
        return gr.Dropdown(choices=self.history_choices(), value=selected)

    def finished_outputs(self, job: Job) -> tuple:
        """(progress, job id, history, results…) of a finished job: its texts when it succeeded;
        failed or cancelled, its bar and no results (nothing of an earlier expansion under it)."""
        texts = list(job.texts) if job.status == Job.Status.SUCCEEDED else []
        return (progress_html(job, self.language), "", self.history_update(), *self.results_updates(texts))

    def skip_results(self) -> list[Any]:
        return [gr.skip() for _ in range(len(self.result_texts) + len(self.result_rows))]

    # --- callbacks ------------------------------------------------------------------------
    def submit(self, *args: Any) -> Job:
        """Validate the form and queue the expansion as the member."""
        values = dict(zip(FIELDS, args, strict=True))
        if values.get("seed") in (None, ""):
            values["seed"] = -1
        with member_errors(self.language):
            request = parse_promptgen_request(values, promptgen_limits())
            return promptgen_submit(user=self.user, request=request)

    @callback
    def generate_prompts(self, *args: Any) -> Iterator[tuple]:
        try:
            job = self.submit(*args)
        except Exception as exc:
            error = as_workspace_error(exc, self.language)
            yield (progress_error_html(error.message), "", gr.skip(), *self.results_updates([]))
            raise error from None
        yield from self.follow(job)

    def follow(self, job: Job, poll_seconds: float = POLL_SECONDS) -> Iterator[tuple]:
        """Yield the outputs as the job moves (the bar), then its results when it ends."""
        public_id = job.public_id
        current = job
        for current, queue in watch_job(self.user, public_id, poll_seconds=poll_seconds):
            if not current.is_finished:
                yield (progress_html(current, self.language, queue), public_id, gr.skip(), *self.skip_results())
        yield self.finished_outputs(current)
        if current.status == Job.Status.FAILED:
            raise WorkspaceError(current.error or self.t("status_failed"))
        if current.status == Job.Status.CANCELLED:
            gr.Warning(self.t("status_cancelled"))
        elif not current.texts:
            gr.Warning(self.t("bp_no_results"))

    @callback(skip_when_refused=3 + 2 * RESULT_SLOTS)
    def reattach_prompts(self) -> Iterator[tuple]:
        """On each page load: the member's running expansion followed to its results, else the
        last one's results (their own Job rows only)."""
        active = job_newest_active_for_owner(self.user, PROMPTGEN_KIND)
        if active is None:
            finished = job_newest_finished_for_owner(self.user, PROMPTGEN_KIND)
            if finished is None:
                yield (progress_html(None, self.language), "", self.history_update(), *self.results_updates([]))
            else:
                yield self.finished_outputs(finished)
            return
        yield from self.follow(active)

    @callback
    def cancel_prompts(self, public_id: str) -> Any:
        job = workspace_cancel(user=self.user, public_id=public_id or "", kind=PROMPTGEN_KIND)
        if job is None:
            gr.Info(self.t("nothing_to_cancel"))
            return gr.skip()
        return progress_html(job, self.language)

    @callback
    def refresh_promptgen_models(self, current: str | None) -> tuple:
        models = self.model_choices()
        values = [value for _label, value in models]
        value = current if current in values else (values[0] if values else None)
        return gr.Dropdown(choices=models, value=value), gr.Markdown(visible=not models)

    @callback
    def show_expansion(self, public_id: str | None) -> tuple:
        """An earlier expansion of the member's (picked in "My last expansions"): its prompt and results."""
        job = own_job(self.user, public_id or "")
        if job is None or job.kind != PROMPTGEN_KIND:
            return (gr.skip(), *self.skip_results())
        return (job.params.get("prompt", ""), *self.results_updates(list(job.texts)))

    def _sent(self, result: str | None, mode: str | None, current: str | None, tab: str) -> tuple:
        if not (result or "").strip():
            raise WorkspaceError(self.t("bp_empty_result"))
        return sent_prompt(current, result.strip(), mode), gr.Tabs(selected=tab)

    @callback
    def send_prompt_to_txt2img(self, result: str | None, mode: str | None, current: str | None) -> tuple:
        return self._sent(result, mode, current, "txt2img")

    @callback(needs=("img2img",))
    def send_prompt_to_img2img(self, result: str | None, mode: str | None, current: str | None) -> tuple:
        return self._sent(result, mode, current, "img2img")
