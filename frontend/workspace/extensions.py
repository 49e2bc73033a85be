"""The workspace extensions this platform ships (pure: no Django, no Gradio).

An operator *installs* an extension for everyone by adding an `Extension` row in Django admin
whose `name` is one of `BUILTIN_EXTENSIONS` (the migration adds them all, off by default);
each member then switches it on or off for their own workspace in the Extensions tab.
Arbitrary code is never loaded from a name: an unknown name is listed as unavailable.

Shipped:

* ``prompt-styles`` — A1111's "Styles": a picker under the prompts listing the member's own
  styles, their team's and the public ones (`tenants.PromptStyle`; operators write team and
  public styles in admin, members save their own with 💾 and delete them with 🗑). The styles
  chosen are merged into the prompt and the negative prompt when the job is submitted
  (`a1111/styles.py`: a style's ``{prompt}`` marks where the member's prompt goes; otherwise
  the style is appended with ", "), so the image and its infotext show the merged prompts.
  Off: the picker is hidden and nothing is merged.
* ``beautiful-prompt`` — PAI's BeautifulPrompt: a tab that expands a short prompt into several
  detailed ones with a prompt-generation language model (BLOOM, GPT-2) from the member's
  ``models/promptgen`` folders. Each expansion is a job of its own kind on the GPU workers
  (``inference.services.promptgen_submit``); the workspace never loads the model itself.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BuiltinExtension:
    name: str
    title: str
    description: str


PROMPT_STYLES = "prompt-styles"
BEAUTIFUL_PROMPT = "beautiful-prompt"

BUILTIN_EXTENSIONS: dict[str, BuiltinExtension] = {
    PROMPT_STYLES: BuiltinExtension(
        PROMPT_STYLES,
        "Prompt styles",
        "Adds a style picker under the prompts; the chosen styles are merged into the prompt and "
        "negative prompt at generation (A1111's Styles).",
    ),
    BEAUTIFUL_PROMPT: BuiltinExtension(
        BEAUTIFUL_PROMPT,
        "BeautifulPrompt",
        "Adds a tab that expands a short prompt into detailed ones with a prompt-generation model "
        "(PAI's BeautifulPrompt), with buttons that send a result to txt2img or img2img.",
    ),
}
