"""A1111 prompt syntax (reference/a1111.md §4): attention, BREAK, extra networks, embeddings,
the LoRA batching key. Pure: no DB, no torch."""

from __future__ import annotations

import dataclasses

import pytest

from a1111.prompts import (
    MAX_BRACKET_DEPTH,
    MAX_PROMPT_CHARS,
    ExtraNetwork,
    ParsedPrompt,
    PromptError,
    extract_extra_networks,
    find_embeddings,
    lora_key,
    parse_prompt,
    parse_prompt_attention,
)

# --------------------------------------------------------------------------- attention


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the docstring examples of A1111's prompt_parser.parse_prompt_attention
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("\\(literal\\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.5730000000000004),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641000000000006),
                (".", 1.1),
            ],
        ),
    ],
)
def test_a1111_docstring_examples(text: str, expected: list[tuple[str, float]]) -> None:
    assert parse_prompt_attention(text) == expected  # exact floats: same operations in the same order


def test_house_weight_is_1_3_times_1_1_squared() -> None:
    segments = dict(parse_prompt_attention("a (((house:1.3)) b"))
    assert segments["house"] == pytest.approx(1.3 * 1.1 * 1.1)
    assert segments["house"] == pytest.approx(1.573)


def test_square_brackets_divide_and_nest() -> None:
    assert parse_prompt_attention("[word]") == [("word", 1 / 1.1)]
    ((text, weight),) = parse_prompt_attention("[[word]]")
    assert text == "word" and weight == pytest.approx(1 / 1.1 / 1.1)
    assert parse_prompt_attention("[unbalanced") == [("unbalanced", 1 / 1.1)]


def test_explicit_weights() -> None:
    assert parse_prompt_attention("(cat:1.3)") == [("cat", 1.3)]
    assert parse_prompt_attention("(cat:0)") == [("cat", 0.0)]
    assert parse_prompt_attention("(cat:-0.5)") == [("cat", -0.5)]
    assert parse_prompt_attention("(cat:+.5)") == [("cat", 0.5)]
    assert parse_prompt_attention("a (b (c:2) d) e") == [("a ", 1.0), ("b ", 1.1), ("c", 2.2), (" d", 1.1), (" e", 1.0)]


def test_escapes() -> None:
    assert parse_prompt_attention("\\[x\\)") == [("[x)", 1.0)]
    assert parse_prompt_attention("a\\\\b") == [("a\\b", 1.0)]
    assert parse_prompt_attention("(a \\(b\\))") == [("a (b)", 1.1)]
    # a backslash before an ordinary character is dropped, as in A1111
    assert parse_prompt_attention("a\\b") == [("ab", 1.0)]


def test_stray_closers_and_colons_are_text() -> None:
    assert parse_prompt_attention("a) b] c") == [("a) b] c", 1.0)]
    assert parse_prompt_attention("time: 12:30") == [("time: 12:30", 1.0)]
    assert parse_prompt_attention("score:1.5)") == [("score:1.5)", 1.0)]  # no open "(" to apply it to
    assert parse_prompt_attention("[a:1.5]") == [("a:1.5", 1 / 1.1)]


def test_mixed_unbalanced_brackets_apply_to_the_end() -> None:
    ((text, weight),) = parse_prompt_attention("([a")
    assert text == "a" and weight == pytest.approx(1.1 / 1.1)
    assert parse_prompt_attention("a (b") == [("a ", 1.0), ("b", 1.1)]


def test_empty_and_bracket_only_prompts() -> None:
    assert parse_prompt_attention("") == [("", 1.0)]
    assert parse_prompt_attention("()") == [("", 1.0)]
    assert parse_prompt_attention("(:1.2)") == [("", 1.0)]


def test_merges_adjacent_runs_of_equal_weight() -> None:
    assert parse_prompt_attention("(a)(b) c") == [("ab", 1.1), (" c", 1.0)]
    assert parse_prompt_attention("a (b:1.0) c") == [("a b c", 1.0)]


def test_malformed_explicit_weight_raises_prompt_error() -> None:
    with pytest.raises(PromptError, match="1.2.3"):
        parse_prompt_attention("(cat:1.2.3)")


# --------------------------------------------------------------------------- BREAK


def test_break_marker_swallows_surrounding_whitespace() -> None:
    assert parse_prompt_attention("a cat BREAK a dog") == [("a cat", 1.0), ("BREAK", -1.0), ("a dog", 1.0)]
    assert parse_prompt_attention("BREAK") == [("", 1.0), ("BREAK", -1.0), ("", 1.0)]


def test_break_must_be_a_separate_upper_case_word() -> None:
    assert parse_prompt_attention("BREAKFAST") == [("BREAKFAST", 1.0)]
    assert parse_prompt_attention("a break b") == [("a break b", 1.0)]
    assert parse_prompt_attention("a,BREAK,b") == [("a,", 1.0), ("BREAK", -1.0), (",b", 1.0)]


def test_break_inside_weighted_text() -> None:
    assert parse_prompt_attention("(a) BREAK (b)") == [("a", 1.1), ("", 1.0), ("BREAK", -1.0), ("", 1.0), ("b", 1.1)]
    # A1111 quirk: the brackets multiply the marker too, so it is no longer a break
    assert parse_prompt_attention("(a BREAK b)") == [("a", 1.1), ("BREAK", -1.1), ("b", 1.1)]
    assert not parse_prompt("(a BREAK b)").has_break


def test_parse_prompt_reports_break() -> None:
    parsed = parse_prompt("sky BREAK sea")
    assert parsed.has_break
    assert ("BREAK", -1.0) in parsed.segments
    assert not parse_prompt("sky sea").has_break


# --------------------------------------------------------------------------- LoRA and other extra networks


def _one(text: str) -> ExtraNetwork:
    parsed = parse_prompt(text)
    assert len(parsed.extra_networks) == 1
    return parsed.extra_networks[0]


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("<lora:foo>", ExtraNetwork("lora", "foo", 1.0, 1.0, None)),
        ("<lora:foo:0.7>", ExtraNetwork("lora", "foo", 0.7, 0.7, None)),
        ("<lora:foo:-1>", ExtraNetwork("lora", "foo", -1.0, -1.0, None)),
        ("<lora:foo:0.8:0.5>", ExtraNetwork("lora", "foo", 0.8, 0.5, None)),
        ("<lora:foo:0.8:0.5:16>", ExtraNetwork("lora", "foo", 0.8, 0.5, 16)),
        ("<lora:foo:unet=0.5:te=0.8>", ExtraNetwork("lora", "foo", 0.8, 0.5, None)),
        ("<lora:foo:te=0.3>", ExtraNetwork("lora", "foo", 0.3, 0.3, None)),  # unet defaults to te
        ("<lora:foo:unet=0.3>", ExtraNetwork("lora", "foo", 1.0, 0.3, None)),
        ("<lora:foo:0.9:unet=0.2>", ExtraNetwork("lora", "foo", 0.9, 0.2, None)),
        ("<lora:foo:0.9:te=0.4>", ExtraNetwork("lora", "foo", 0.4, 0.4, None)),  # unet follows the final te
        ("<lora:foo:dyn=8>", ExtraNetwork("lora", "foo", 1.0, 1.0, 8)),
        ("<lora:foo:1:1:4:dyn=8>", ExtraNetwork("lora", "foo", 1.0, 1.0, 8)),  # named wins
        ("<lora:foo:0.5:ignored=x>", ExtraNetwork("lora", "foo", 0.5, 0.5, None)),  # unknown named arg
        ("<lora:my lora v2.1:0.6>", ExtraNetwork("lora", "my lora v2.1", 0.6, 0.6, None)),
        ("<lora:foo: 0.6 >", ExtraNetwork("lora", "foo", 0.6, 0.6, None)),
        ("<lyco:bar:0.2:0.4:8>", ExtraNetwork("lyco", "bar", 0.2, 0.4, 8)),
        ("<hypernet:agm:1.1>", ExtraNetwork("hypernet", "agm", 1.1, 1.1, None)),
        ("<hypernet:ray>", ExtraNetwork("hypernet", "ray", 1.0, 1.0, None)),
    ],
)
def test_extra_network_forms(tag: str, expected: ExtraNetwork) -> None:
    assert _one(f"a cat {tag}") == expected


def test_unknown_kinds_are_kept_and_never_refused() -> None:
    assert _one("<extrasupernet:master:12:13:14>") == ExtraNetwork("extrasupernet", "master", 12.0, 12.0, None)
    assert _one("<wildcard:colors:blue>") == ExtraNetwork("wildcard", "colors", 1.0, 1.0, None)
    assert _one("<LORA:foo:abc>").kind == "LORA"  # A1111's registry is case-sensitive


def test_tags_are_removed_from_text_exactly_as_a1111_does() -> None:
    parsed = parse_prompt("a cat, <lora:foo:0.5> on a mat <hypernet:h>")
    assert parsed.text == "a cat,  on a mat "
    assert parsed.segments == (("a cat,  on a mat ", 1.0),)
    assert [n.name for n in parsed.extra_networks] == ["foo", "h"]


def test_networks_keep_order_and_duplicates() -> None:
    text, networks = extract_extra_networks("<lora:b:1><hypernet:h><lora:a:0.5><lora:b:1>")
    assert text == ""
    assert [(n.kind, n.name) for n in networks] == [("lora", "b"), ("hypernet", "h"), ("lora", "a"), ("lora", "b")]


def test_tag_inside_attention_brackets_is_still_an_extra_network() -> None:
    parsed = parse_prompt("(cat <lora:foo:0.5>:1.2)")
    assert parsed.extra_networks == (ExtraNetwork("lora", "foo", 0.5, 0.5, None),)
    assert parsed.segments == (("cat ", 1.2),)


def test_things_that_are_not_tags_stay_text() -> None:
    for text in ["a <b> c", "<:foo:1>", "<lora foo:1>", "a < b > c", "<lora:>"]:
        parsed = parse_prompt(text)
        assert parsed.extra_networks == ()
        assert parsed.text == text


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("<lora:foo:abc>", "<lora:foo:abc>: weight 'abc' is not a number"),
        ("<lora:foo:>", "<lora:foo:>: weight '' is not a number"),
        ("<lora:foo:1:x>", "<lora:foo:1:x>: unet weight 'x' is not a number"),
        ("<lora:foo:te=x>", "<lora:foo:te=x>: te weight 'x' is not a number"),
        ("<lora:foo:unet=>", "<lora:foo:unet=>: unet weight '' is not a number"),
        ("<lora:foo:1:1:x>", "<lora:foo:1:1:x>: dyn 'x' is not an integer"),
        ("<lora:foo:dyn=1.5>", "<lora:foo:dyn=1.5>: dyn '1.5' is not an integer"),
        ("<lora:foo:dyn=0>", "<lora:foo:dyn=0>: dyn '0' must be a positive integer"),
        ("<lora:foo:nan>", "<lora:foo:nan>: weight 'nan' is not a finite number"),
        ("<lora:foo:inf>", "<lora:foo:inf>: weight 'inf' is not a finite number"),
        ("<lora:foo:10.5>", "<lora:foo:10.5>: weight '10.5' is outside [-10, 10]"),
        ("<lora:foo:-11>", "<lora:foo:-11>: weight '-11' is outside [-10, 10]"),
        ("<lora:foo:1:100>", "<lora:foo:1:100>: unet weight '100' is outside [-10, 10]"),
        ("<lora::0.5>", "<lora::0.5>: the network name is empty"),
        ("<lora:te=0.5>", "<lora:te=0.5>: the network name is empty"),
        ("<lyco:bar:zz>", "<lyco:bar:zz>: weight 'zz' is not a number"),
        ("<hypernet:h:much>", "<hypernet:h:much>: weight 'much' is not a number"),
        ("<hypernet:h:20>", "<hypernet:h:20>: weight '20' is outside [-10, 10]"),
    ],
)
def test_bad_network_arguments_raise_prompt_error(tag: str, message: str) -> None:
    with pytest.raises(PromptError) as excinfo:
        parse_prompt(f"a cat {tag}")
    assert str(excinfo.value) == message
    assert isinstance(excinfo.value, ValueError)


def test_weight_limits_are_inclusive() -> None:
    assert _one("<lora:foo:10>").te_weight == 10.0
    assert _one("<lora:foo:-10>").unet_weight == -10.0


# --------------------------------------------------------------------------- embeddings


def test_find_embeddings_whole_words_in_order_of_first_occurrence() -> None:
    known = ["badhands", "EasyNegative", "unused", "bad-artist"]
    text = "(EasyNegative:1.2), bad-artist, EasyNegative, badhandsv2, xbadhands"
    assert find_embeddings(text, known) == ["EasyNegative", "bad-artist"]


def test_find_embeddings_is_case_sensitive_and_ignores_empty_and_duplicates() -> None:
    assert find_embeddings("easynegative", ["EasyNegative"]) == []
    assert find_embeddings("a b", ["", "b", "b", "a"]) == ["a", "b"]
    assert find_embeddings("", ["x"]) == []
    assert find_embeddings("style.v2 here", ["style.v2", "style"]) == ["style.v2", "style"]


def test_parse_prompt_finds_embeddings_but_not_inside_network_tags() -> None:
    parsed = parse_prompt("<lora:EasyNegative:0.5> cat, [bad_prompt]", known_embeddings=("EasyNegative", "bad_prompt"))
    assert parsed.embeddings == ("bad_prompt",)
    assert parse_prompt("EasyNegative").embeddings == ()  # nothing known, nothing found


def test_known_embeddings_accepts_any_iterable() -> None:
    parsed = parse_prompt("a tok1 b", known_embeddings=(name for name in ["tok1", "tok2"]))
    assert parsed.embeddings == ("tok1",)


# --------------------------------------------------------------------------- schedule syntax stays text here


def test_schedule_and_and_syntax_stay_in_the_text_and_segments() -> None:
    parsed = parse_prompt("a [cat:dog:0.5] AND [x|y]")
    assert parsed.text == "a [cat:dog:0.5] AND [x|y]"
    assert parsed.segments == (("a ", 1.0), ("cat:dog:0.5", 1 / 1.1), (" AND ", 1.0), ("x|y", 1 / 1.1))


@pytest.mark.parametrize(
    "text",
    ["[", "]", "[:]", "[a:b:]", "[|", "[[[", "))]]", "[a:b:5", "\\", "[a\\]:5]", "AND", "[:5]", "(:", "[a:(b]:3)"],
)
def test_odd_bracket_soup_never_raises(text: str) -> None:
    assert parse_prompt(text).text == text


# --------------------------------------------------------------------------- lora_key


def test_lora_key_is_canonical_sorted_and_stable() -> None:
    a = parse_prompt("<lora:foo:unet=0.5:te=0.8> x <lora:bar>").extra_networks
    b = parse_prompt("<lora:bar:1.0:1> y <lora:foo:0.8:0.5>").extra_networks
    assert lora_key(a) == "bar@te=1,unet=1;foo@te=0.8,unet=0.5"
    assert lora_key(a) == lora_key(b)
    assert lora_key(reversed(a)) == lora_key(a)


def test_lora_key_sorts_by_name_not_by_the_whole_entry() -> None:
    networks = parse_prompt("<lora:foo2> <lora:foo>").extra_networks
    assert lora_key(networks) == "foo@te=1,unet=1;foo2@te=1,unet=1"


def test_lora_key_empty_and_non_lora_networks() -> None:
    assert lora_key([]) == ""
    assert lora_key(parse_prompt("<hypernet:h:0.5> <foo:bar>").extra_networks) == ""
    assert lora_key(parse_prompt("<lyco:l:0.5> <hypernet:h>").extra_networks) == "l@te=0.5,unet=0.5"


def test_lora_key_weights_are_formatted_stably() -> None:
    def key(te: float, unet: float, dyn: int | None = None) -> str:
        return lora_key([ExtraNetwork("lora", "x", te, unet, dyn)])

    assert key(1.0, 1) == "x@te=1,unet=1"
    assert key(0.1 + 0.2, 0.3) == key(0.3, 0.3) == "x@te=0.3,unet=0.3"
    assert key(-0.0, 0.0) == "x@te=0,unet=0"
    assert key(0.123456789, -2.5) == "x@te=0.123457,unet=-2.5"
    assert key(1, 1, 8) == "x@te=1,unet=1,dyn=8"
    assert key(0.5, 0.5) != key(0.5, 0.6)


def test_lora_key_distinguishes_weights_dyn_and_duplicates() -> None:
    one = ExtraNetwork("lora", "x", 1.0, 1.0, None)
    assert lora_key([one, one]) == "x@te=1,unet=1;x@te=1,unet=1"
    assert lora_key([one]) != lora_key([dataclasses.replace(one, dyn=4)])
    assert lora_key([one, dataclasses.replace(one, dyn=4)]) == lora_key([dataclasses.replace(one, dyn=4), one])


def test_lora_key_escapes_separators_in_names() -> None:
    tricky = ExtraNetwork("lora", "a@te=1,unet=1;b", 1.0, 1.0, None)
    plain = [ExtraNetwork("lora", "a", 1.0, 1.0, None), ExtraNetwork("lora", "b", 1.0, 1.0, None)]
    assert lora_key([tricky]) != lora_key(plain)
    assert ";" not in lora_key([tricky])


# --------------------------------------------------------------------------- parse_prompt as a whole


def test_parse_prompt_everything_together() -> None:
    parsed = parse_prompt(
        "masterpiece, (cat:1.2) <lora:foo:0.8> BREAK [dog] EasyNegative",
        known_embeddings=["EasyNegative"],
    )
    assert parsed == ParsedPrompt(
        text="masterpiece, (cat:1.2)  BREAK [dog] EasyNegative",
        segments=(
            ("masterpiece, ", 1.0),
            ("cat", 1.2),
            ("", 1.0),
            ("BREAK", -1.0),
            ("", 1.0),
            ("dog", 1 / 1.1),
            (" EasyNegative", 1.0),
        ),
        extra_networks=(ExtraNetwork("lora", "foo", 0.8, 0.8, None),),
        embeddings=("EasyNegative",),
        has_break=True,
    )


def test_results_are_frozen_and_hashable() -> None:
    parsed = parse_prompt("<lora:foo:0.5> cat")
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.text = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.extra_networks[0].name = "bar"  # type: ignore[misc]
    assert hash(parsed) == hash(parse_prompt("<lora:foo:0.5> cat"))


def test_length_limit() -> None:
    parse_prompt("a" * MAX_PROMPT_CHARS)
    with pytest.raises(PromptError, match="100000"):
        parse_prompt("a" * (MAX_PROMPT_CHARS + 1))


def test_non_string_prompt_is_a_prompt_error() -> None:
    with pytest.raises(PromptError):
        parse_prompt(None)  # type: ignore[arg-type]


def test_bracket_depth_limit_guards_against_quadratic_prompts() -> None:
    ok = "(" * (MAX_BRACKET_DEPTH - 1) + "[x" + ")" * 200
    assert parse_prompt(ok).segments[0][0] == "x"
    with pytest.raises(PromptError, match="nested more than 64 deep"):
        parse_prompt("(" * MAX_BRACKET_DEPTH + "[x]" + ")" * MAX_BRACKET_DEPTH)
    with pytest.raises(PromptError, match="nested"):
        parse_prompt("(a" * 20000)  # unclosed brackets stay open to the end
    # closed brackets free their level again
    assert parse_prompt("(a)" * 30000).segments == (("a" * 30000, 1.1),)


def test_large_and_deeply_nested_prompts_parse() -> None:
    text = ("(a cat:1.1) [dog] <lora:x:0.5> [a:b:3] \\( BREAK " * 2000)[:MAX_PROMPT_CHARS]
    worst = "[" * (MAX_BRACKET_DEPTH - 1) + "a:" * ((MAX_PROMPT_CHARS - MAX_BRACKET_DEPTH) // 2)
    parsed = parse_prompt(text, known_embeddings=[f"emb{i}" for i in range(200)])
    parse_prompt(worst)  # terminates (a backtracking parser would not, within pytest's timeout)
    assert parsed.has_break
