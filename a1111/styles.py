"""Prompt styles as A1111 applies them (pure: no Django).

A style is a named pair of texts, a prompt and a negative prompt (A1111's `styles.csv` rows,
here the `tenants.PromptStyle` rows a member may use). A request's `styles` lists names; each
named style is merged into the prompts in order, as `modules/styles.py` does:

* a style text containing `{prompt}` replaces it with the prompt so far;
* otherwise the style text is appended after ", " (empty parts dropped, both stripped);
* an empty style text leaves the prompt as it was (stripped, as A1111's join does).

One difference from A1111, which silently skips a name it does not know: here an unknown name
is an `InvalidField` naming `styles[i]` and the style. Skipping would generate (and bill) an
image with a prompt the client did not ask for, and they would not know.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from a1111.errors import RequestValidationError
from a1111.fields import read_str

MAX_STYLES = 32  # names in one request
MAX_STYLE_NAME_CHARS = 100
PROMPT_PLACEHOLDER = "{prompt}"


@dataclass(frozen=True)
class StyleText:
    """What a style adds: its prompt and negative prompt (each may hold `{prompt}`)."""

    name: str
    prompt: str = ""
    negative_prompt: str = ""


def merge_prompts(style_prompt: str, prompt: str) -> str:
    """A1111 `styles.merge_prompts`: `{prompt}` in the style is replaced by `prompt`; otherwise
    the two are joined with ", " (each stripped, empty ones left out)."""
    if PROMPT_PLACEHOLDER in style_prompt:
        return style_prompt.replace(PROMPT_PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), style_prompt.strip()) if part)


def read_style_names(data: Mapping[str, Any], name: str = "styles") -> list[str]:
    """A request's `styles`: a list of style names (None or absent: none). `InvalidField` naming
    the field (or the item) for anything else."""
    value = data.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise RequestValidationError(name, f"must be a list of style names, got {type(value).__name__}")
    if len(value) > MAX_STYLES:
        raise RequestValidationError(name, f"at most {MAX_STYLES} styles, got {len(value)}")
    names = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise RequestValidationError(
                f"{name}[{index}]", f"must be a style name (a string), got {type(item).__name__}"
            )
        if len(item) > MAX_STYLE_NAME_CHARS:
            raise RequestValidationError(f"{name}[{index}]", f"must be at most {MAX_STYLE_NAME_CHARS} characters")
        names.append(item)
    return names


def apply_styles(
    prompt: str, negative_prompt: str, names: Sequence[str], available: Mapping[str, StyleText],
    *, field: str = "styles",
) -> tuple[str, str]:
    """The prompts with the styles `names` merged in, in order (A1111's `apply_styles_to_prompt`
    on each). `available`: the styles the caller may use, by name. A name not there raises
    `InvalidField` on `styles[i]` (the same answer for a style that does not exist and for one
    that is someone else's)."""
    for index, style_name in enumerate(names):
        style = available.get(style_name)
        if style is None:
            known = ", ".join(sorted(available)[:20]) or "none"
            raise RequestValidationError(
                f"{field}[{index}]", f"unknown style {style_name!r}; the styles you may use: {known}"
            )
        prompt = merge_prompts(style.prompt, prompt)
        negative_prompt = merge_prompts(style.negative_prompt, negative_prompt)
    return prompt, negative_prompt


def with_styles_applied(
    body: Mapping[str, Any], available: Mapping[str, StyleText], *, max_prompt_chars: int,
) -> dict[str, Any]:
    """A txt2img/img2img body with its `styles` merged into `prompt` and `negative_prompt` (a copy;
    `body` itself is what the client sent, for the echo). No styles: the body as it is. The merged
    prompts are checked against the limits by the generation parser afterwards, like any prompt.

    As A1111 1.10, the styles go into a hires-fix `hr_prompt` / `hr_negative_prompt` too; an empty
    one stays empty (it means the first pass's prompt, styles included)."""
    names = read_style_names(body)
    if not names:
        return dict(body)
    prompt = read_str(body, "prompt", "", max_prompt_chars)
    negative_prompt = read_str(body, "negative_prompt", "", max_prompt_chars)
    prompt, negative_prompt = apply_styles(prompt, negative_prompt, names, available)
    styled = {**body, "prompt": prompt, "negative_prompt": negative_prompt}
    hr_prompt = read_str(body, "hr_prompt", "", max_prompt_chars)
    hr_negative_prompt = read_str(body, "hr_negative_prompt", "", max_prompt_chars)
    if hr_prompt or hr_negative_prompt:
        hr_styled = apply_styles(hr_prompt, hr_negative_prompt, names, available)
        if hr_prompt:
            styled["hr_prompt"] = hr_styled[0]
        if hr_negative_prompt:
            styled["hr_negative_prompt"] = hr_styled[1]
    return styled
