"""Prompt schedules (prompt editing, alternation) against AUTOMATIC1111 1.10's documented examples:
`modules/prompt_parser.py`'s docstring (10 steps; hires 10 + 10) and its header comment (100 steps).
Pure: no DB, no torch."""

from __future__ import annotations

import pytest

from a1111.prompt_schedules import composable_parts, conditioning_index, prompt_schedule

ALTERNATING = [[s, "a" if s % 2 else "(b:1.1)"] for s in range(1, 11)]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("test", [[10, "test"]]),
        ("a [b:3]", [[3, "a "], [10, "a b"]]),
        ("a [b: 3]", [[3, "a "], [10, "a b"]]),
        ("a [[[b]]:2]", [[2, "a "], [10, "a [[b]]"]]),
        ("[(a:2):3]", [[3, ""], [10, "(a:2)"]]),
        ("a [b : c : 1] d", [[1, "a b  d"], [10, "a  c  d"]]),
        ("a[b:[c:d:2]:1]e", [[1, "abe"], [2, "ace"], [10, "ade"]]),
        ("a [unbalanced", [[10, "a [unbalanced"]]),
        ("a [b:.5] c", [[5, "a  c"], [10, "a b c"]]),
        # A1111's docstring says [[5, 'a  c'], [10, 'a {b|d{ c']] ("not handling this right now"), but
        # its grammar rejects the prompt (a "|" outside an alternation), so 1.10 leaves it as it is.
        ("a [{b|d{:.5] c", [[10, "a [{b|d{:.5] c"]]),
        ("((a][:b:c [d:3]", [[3, "((a][:b:c "], [10, "((a][:b:c d"]]),
        ("[a|(b:1.1)]", ALTERNATING),
        ("[fe|]male", [[s, "female" if s % 2 else "male"] for s in range(1, 11)]),
        ("[fe|||]male", [[s, "female" if s % 4 == 1 else "male"] for s in range(1, 11)]),
        # boundaries A1111's arithmetic gives: 0 and below never apply, >= steps always, "1.0" is all steps
        ("[cat:dog:0]", [[10, "dog"]]),
        ("[cat:dog:1]", [[1, "cat"], [10, "dog"]]),
        ("[cat:dog:10]", [[10, "cat"]]),
        ("[cat:dog:25]", [[10, "cat"]]),
        ("[cat:dog:1.0]", [[10, "cat"]]),
        ("[cat:dog:0.99]", [[9, "cat"], [10, "dog"]]),
        ("[cat:dog:-3]", [[10, "dog"]]),
        ("[cat:dog:1e999]", [[10, "cat"]]),  # A1111 raises on int(inf); past the end is what it says
        ("[cat::0.5] [:dog:3]", [[3, "cat "], [5, "cat dog"], [10, " dog"]]),
        ("a|b [c:1]", [[10, "a|b [c:1]"]]),  # a "|" outside brackets: the grammar fails, no schedule
        ("[a:b:c] \\[x:3\\] (y:[z:2])", [[2, "[a:b:c] \\[x:3\\] (y:)"], [10, "[a:b:c] \\[x:3\\] (y:z)"]]),
    ],
)
def test_schedules_follow_a1111s_documented_examples(prompt: str, expected: list[list]) -> None:
    assert prompt_schedule(prompt, 10) == tuple((end, text) for end, text in expected)


def test_the_header_example_over_100_steps_and_hires_and_old_scheduling() -> None:
    prompt = (
        "fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75]"
        "[ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]"
    )
    assert prompt_schedule(prompt, 100) == (
        (25, "fantasy landscape with a mountain and an oak in foreground shoddy"),
        (50, "fantasy landscape with a lake and an oak in foreground in background shoddy"),
        (60, "fantasy landscape with a lake and an oak in foreground in background masterful"),
        (75, "fantasy landscape with a lake and an oak in background masterful"),
        (100, "fantasy landscape with a lake and a christmas tree in background masterful"),
    )
    # hires (10 first-pass steps, 10 hires steps): fractions count from 1.0, whole numbers after step 10
    assert prompt_schedule("a [b:.5] c", 10, hires_steps=10) == ((10, "a b c"),)
    assert prompt_schedule("a [b:1.5] c", 10, hires_steps=10) == ((5, "a  c"), (10, "a b c"))
    assert prompt_schedule("[x:y:14]", 10, hires_steps=8) == ((4, "x"), (8, "y"))
    assert prompt_schedule("[x|y]", 10, hires_steps=3) == ((1, "x"), (2, "y"), (3, "x"))
    # use_old_scheduling: < 1 is a fraction, anything else a step, also in the hires pass
    assert prompt_schedule("[x:y:1.0] [u:v:0.5]", 10, old_scheduling=True) == ((1, "x u"), (5, "y u"), (10, "y v"))
    assert prompt_schedule("a [b:.5] c", 10, hires_steps=4, old_scheduling=True) == ((5, "a  c"), (10, "a b c"))


def test_which_entry_conditions_each_step() -> None:
    # A1111's reconstruct_cond_batch: step k (0-based) takes the first entry ending at or after k
    edit = prompt_schedule("[cat:dog:2]", 4)
    assert [edit[conditioning_index(edit, step)][1] for step in range(4)] == ["cat", "cat", "cat", "dog"]
    alternation = prompt_schedule("[a|b]", 4)
    assert [alternation[conditioning_index(alternation, step)][1] for step in range(5)] == ["a", "a", "b", "a", "b"]
    assert prompt_schedule("(a:1.2) [b] [c:d] \\[e:3\\]", 4) == ((4, "(a:1.2) [b] [c:d] \\[e:3\\]"),)
    with pytest.raises(ValueError):
        prompt_schedule("x", 0)


@pytest.mark.parametrize(
    ("prompt", "parts"),
    [
        ("a cat AND a dog :1.2", (("a cat", 1.0), (" a dog", 1.2))),  # A1111 keeps the leading space
        ("a:1 AND b: -0.5 AND c:.5 ", (("a", 1.0), (" b", -0.5), (" c", 0.5))),
        ("a cat :1.5", (("a cat", 1.5),)),  # no AND: the weight still scales the guidance
        ("x AND", (("x", 1.0), ("", 1.0))),
        ("[a AND b:c:0.5]", (("[a", 1.0), (" b:c:0.5]", 1.0))),  # AND splits before schedules are read
        ("a cat ", (("a cat ", 1.0),)),  # nothing to split: the text as given
        ("(cat:1.2), ANDROID", (("(cat:1.2), ANDROID", 1.0),)),
    ],
)
def test_composable_parts_follow_a1111s_split_and_weights(prompt: str, parts: tuple) -> None:
    assert composable_parts(prompt) == parts


def test_hostile_prompts_finish() -> None:
    deep = "[" * 200 + "a:1]" * 200  # deeper than any real prompt: left unscheduled
    assert prompt_schedule(deep, 20) == ((20, deep),)
    soup = ("[a:" * 60 + "(b|" + ":]" * 20) * 500  # no quadratic backtracking
    assert prompt_schedule(soup, 20)[-1][0] == 20
    assert composable_parts("a" + " " * 90000 + "b :2") == (("a" + " " * 90000 + "b", 2.0),)  # linear
    many = "[a:b:0.5]" * 5000
    assert prompt_schedule(many, 150) == ((75, "a" * 5000), (150, "b" * 5000))
