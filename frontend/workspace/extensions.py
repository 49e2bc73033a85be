"""The workspace extensions this platform ships (pure: no Django, no Gradio).

An operator *installs* an extension for everyone by adding an `Extension` row in Django admin
whose `name` is one of `BUILTIN_EXTENSIONS` (the migration adds them all, off by default);
each member then switches it on or off for their own workspace in the Extensions tab.
Arbitrary code is never loaded from a name: an unknown name is listed as unavailable.

Shipped:

* ``prompt-styles`` — A1111's "Styles": a picker under the prompts. The styles chosen are
  merged into the prompt and the negative prompt when the job is submitted (a style's
  ``{prompt}`` marks where the member's prompt goes; otherwise the style is appended with
  ", "), so the image and its infotext show the merged prompts. Off: the picker is hidden
  and nothing is merged.
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


@dataclass(frozen=True)
class PromptStyle:
    name: str
    prompt: str
    negative_prompt: str = ""


PROMPT_STYLE_LIST: tuple[PromptStyle, ...] = (
    PromptStyle("Cinematic", "{prompt}, cinematic lighting, film grain, shallow depth of field", "cartoon, flat colours"),
    PromptStyle("Watercolor", "watercolor painting of {prompt}, soft edges, paper texture", "photo, 3d render"),
    PromptStyle("Line art", "clean line art of {prompt}, black ink on white, minimal", "colour, shading"),
    PromptStyle("Product shot", "{prompt}, studio product photography, white background, softbox", "clutter, text"),
    PromptStyle("Quality tags", "masterpiece, best quality", "lowres, blurry, jpeg artifacts"),
)
PROMPT_STYLES_BY_NAME = {style.name: style for style in PROMPT_STYLE_LIST}


def _merge(style_text: str, text: str) -> str:
    """A1111 `styles.merge_prompts`: `{prompt}` is replaced, else the style is appended."""
    if not style_text:
        return text
    if "{prompt}" in style_text:
        return style_text.replace("{prompt}", text)
    return f"{text}, {style_text}" if text.strip() else style_text


def apply_styles(prompt: str, negative_prompt: str, style_names: list[str]) -> tuple[str, str]:
    """The prompts with the named styles merged in, in order; unknown names are ignored."""
    for name in style_names:
        style = PROMPT_STYLES_BY_NAME.get(name)
        if style is None:
            continue
        prompt = _merge(style.prompt, prompt)
        negative_prompt = _merge(style.negative_prompt, negative_prompt)
    return prompt, negative_prompt
