"""The pure prompt-style merge (`a1111/styles.py`): A1111's `merge_prompts` and `styles` field."""

from __future__ import annotations

import pytest

from a1111.errors import InvalidField
from a1111.styles import StyleText, apply_styles, merge_prompts, read_style_names, with_styles_applied

STYLES = {
    "Watercolor": StyleText("Watercolor", "watercolor painting of {prompt}, soft edges", "photo"),
    "Quality": StyleText("Quality", "masterpiece, best quality", "lowres"),
    "Empty": StyleText("Empty", "", ""),
}


def test_merge_prompts_is_a1111s() -> None:
    assert merge_prompts("art of {prompt}, detailed", "a cat") == "art of a cat, detailed"
    assert merge_prompts("{prompt} and {prompt}", "x") == "x and x"  # every placeholder, as str.replace
    assert merge_prompts(" masterpiece ", " a cat ") == "a cat, masterpiece"  # both stripped, ", " joined
    assert merge_prompts("masterpiece", "") == "masterpiece"
    assert merge_prompts("", " a cat ") == "a cat"
    assert merge_prompts("", "") == ""


def test_styles_apply_in_order_to_both_prompts() -> None:
    prompt, negative = apply_styles("a cat", "", ["Watercolor", "Quality"], STYLES)
    assert prompt == "watercolor painting of a cat, soft edges, masterpiece, best quality"
    assert negative == "photo, lowres"
    # the other order wraps the appended tags too
    prompt, _ = apply_styles("a cat", "", ["Quality", "Watercolor"], STYLES)
    assert prompt == "watercolor painting of a cat, masterpiece, best quality, soft edges"
    assert apply_styles("a cat", "fog", ["Empty"], STYLES) == ("a cat", "fog")


def test_an_unknown_style_is_refused_naming_it_and_its_place() -> None:
    with pytest.raises(InvalidField) as refused:
        apply_styles("a cat", "", ["Quality", "Nope"], STYLES)
    assert refused.value.field == "styles[1]" and "'Nope'" in refused.value.message
    assert "Quality" in refused.value.message  # the names the caller may use


@pytest.mark.parametrize(
    ("body", "field"),
    [({"styles": "Quality"}, "styles"), ({"styles": [1]}, "styles[0]"), ({"styles": ["x" * 101]}, "styles[0]"),
     ({"styles": ["Quality"] * 33}, "styles")],
)
def test_bad_styles_fields_name_the_field(body, field) -> None:
    with pytest.raises(InvalidField) as refused:
        read_style_names(body)
    assert refused.value.field == field


def test_a_body_keeps_what_the_client_sent_and_gets_the_merged_prompts() -> None:
    body = {"prompt": "a cat", "negative_prompt": "fog", "styles": ["Quality"], "steps": 2}
    styled = with_styles_applied(body, STYLES, max_prompt_chars=100)
    assert styled == {**body, "prompt": "a cat, masterpiece, best quality", "negative_prompt": "fog, lowres"}
    assert body["prompt"] == "a cat"  # a copy
    assert with_styles_applied({"prompt": "x", "styles": None}, STYLES, max_prompt_chars=100) == {"prompt": "x", "styles": None}
    with pytest.raises(InvalidField) as refused:
        with_styles_applied({"prompt": 5, "styles": ["Quality"]}, STYLES, max_prompt_chars=100)
    assert refused.value.field == "prompt"
