"""A1111 prompt schedules: prompt editing and alternation as (end step, prompt text) lists, and
composable diffusion's weighted AND parts (pure).

`prompt_schedule("a [cat:dog:0.5]", 10)` → `((5, "a cat"), (10, "a dog"))`: the text to encode
for each stretch of denoising steps, as AUTOMATIC1111 1.10's
`prompt_parser.get_learned_conditioning_prompt_schedules` makes it (written anew from its
grammar and documented examples; see ../shared/reference/a1111.md §4):

- `[from:to:when]` switches from `from` to `to` after step `when`; `[to:when]` adds `to`,
  `[from::when]` removes `from`. `when` with a `.` is a fraction of the steps (`0.25`, `1.0`, `.5`),
  without one an absolute step (`3`); groups nest, and every group of the prompt adds its step
  to the schedule, even one inside a branch that is not taken.
- `[a|b|c]` alternates every step (step 1 `a`, step 2 `b`, …); an empty option is empty text.
- With a hires pass (`hires_steps`), the schedule is over the hires steps: an absolute `when`
  counts on from the first pass's steps (`[x:25]` after 20 first-pass steps is hires step 5), a
  fraction counts from 1.0 (`[x:1.5]` is half-way through the hires pass), and `when` at or before
  the first pass's end means "already switched". `old_scheduling=True` is A1111's option
  `use_old_scheduling`: `when` < 1 is a fraction, anything else a step, hires or not.

A1111 parses with a lark grammar; this is a recursive-descent parser that makes the same choices:
a bracket group counts wherever it is well formed (brackets that do not close, or close around
something that is not a prompt, are plain text), and a prompt the grammar does not accept at all
(a `|` outside any group, a trailing lone backslash) is one entry of its own text, unscheduled.
(Where a well-formed group is directly followed by stray brackets, as in `[a:b:2])`,
A1111 1.10's lark 1.1.2 picks group or plain text by the process's string-hash seed,
so A1111 itself answers either way from one start to the next; here the group always counts.
Checked against lark on many thousand random bracket soups: every difference is of that kind.)

`composable_parts(prompt)` is A1111's composable diffusion split (`get_multicond_prompt_list`):
`"a cat AND a dog :1.2"` → `(("a cat", 1.0), (" a dog", 1.2))`; each part is scheduled on its own and
the runtime adds each part's guidance times its weight. A prompt without AND still loses a
trailing `:weight`, as in A1111 (`"a cat :1.5"` is "a cat" with 1.5 times the guidance).

`conditioning_index(schedule, step)` says which entry applies at a 0-based denoising step, by
A1111's `reconstruct_cond_batch` rule: the first entry whose end step is >= the step (so entry
`(3, …)` covers steps 0 to 3, and an alternation's step-1 text also covers step 0).

Where A1111's documented examples and its code disagree, the code wins: its docstring's
`"a [{b|d{:.5] c"` example (marked "not handling this right now") is a grammar error in A1111 1.10
with lark 1.1.2, so the prompt stays as it is, unscheduled.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = [
    "MAX_SCHEDULE_DEPTH",
    "PromptSchedule",
    "composable_parts",
    "conditioning_index",
    "prompt_schedule",
]

# A schedule is A1111's [[end_at_step, text], …], as tuples: end steps ascending, the last = steps.
PromptSchedule = tuple[tuple[int, str], ...]

# Brackets open at once beyond which a prompt is left unscheduled (A1111 has no limit; the request
# parser already refuses prompts nested deeper than `a1111.prompts.MAX_BRACKET_DEPTH`).
MAX_SCHEDULE_DEPTH = 64

# lark's common.SIGNED_NUMBER, matched greedily as lark's dynamic lexer does.
_RE_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_RE_WHITESPACE = re.compile(r"\s+")
_SPECIAL = frozenset("\\[]():|")
# modules/prompt_parser.py: re_AND, and re_weight's optional trailing `\s*:\s*[-+]?(\d+\.?|\d*\.\d+)`
# matched on the reversed text (A1111's lazy forward pattern is quadratic in long whitespace runs)
_RE_AND = re.compile(r"\bAND\b")
_RE_WEIGHT_REVERSED = re.compile(r"(\.?\d+|\d+\.\d*)([-+]?)\s*:\s*")


# --------------------------------------------------------------------------- parse tree


@dataclass(frozen=True)
class _Edit:
    """`[before:after:when]`; `before` is None for `[after:when]`."""

    before: tuple[_Node, ...] | None
    after: tuple[_Node, ...]
    when: str  # the number as written: a "." makes it a fraction


@dataclass(frozen=True)
class _Alternate:
    options: tuple[tuple[_Node, ...], ...]


_Node = str | _Edit | _Alternate


class _NoParse(Exception):
    """The grammar does not accept the prompt as a whole."""


class _Parser:
    """The grammar's `prompt` and bracket groups; a group at a position parses the same wherever it
    occurs (no stray brackets inside a group), so results are kept by position."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.groups: dict[int, tuple[tuple[_Node, ...], int] | None] = {}

    def top(self) -> tuple[_Node, ...]:
        """`start`: prompts and stray `[ ] ( ) :` characters; a well-formed group wins over strays."""
        text, nodes, i = self.text, [], 0
        while i < len(text):
            char = text[i]
            if char in "[(":
                group = self.group(i, 0)
                if group is not None:
                    nodes.extend(group[0])
                    i = group[1]
                    continue
                nodes.append(char)
                i += 1
            elif char in "]):":
                nodes.append(char)
                i += 1
            else:
                run, i = self.plain(i)
                if not run:  # "|" or a backslash with nothing to escape: no parse
                    raise _NoParse
                nodes.append(run)
        return tuple(nodes)

    def plain(self, i: int) -> tuple[str, int]:
        """The `plain` terminal from `i` (its longest match; "" where none): any run of characters
        other than `\\[]():|`, and backslash escapes of any character but a newline."""
        text, start = self.text, i
        while i < len(text):
            char = text[i]
            if char == "\\":
                if i + 1 >= len(text) or text[i + 1] == "\n":
                    break
                i += 2
            elif char in _SPECIAL:
                break
            else:
                i += 1
        return text[start:i], i

    def prompt(self, i: int, depth: int) -> tuple[tuple[_Node, ...], int]:
        """A `prompt` from `i` (possibly empty); it ends where its next character cannot go on."""
        nodes: list[_Node] = []
        while i < len(self.text):
            if self.text[i] in "[(":
                group = self.group(i, depth)
                if group is None:
                    break
                nodes.extend(group[0])
                i = group[1]
                continue
            run, i = self.plain(i)
            if not run:
                break
            nodes.append(run)
        return tuple(nodes), i

    def group(self, i: int, depth: int) -> tuple[tuple[_Node, ...], int] | None:
        """The group opened at `i` (`(…)`, `(…:…)`, `[…]`, an edit or an alternation) and its end,
        or None where it is not well formed."""
        if i not in self.groups:
            if depth >= MAX_SCHEDULE_DEPTH:
                raise _NoParse
            parse = self._bracket if self.text[i] == "[" else self._paren
            self.groups[i] = parse(i, depth + 1)
        return self.groups[i]

    def _at(self, i: int) -> str:
        return self.text[i] if i < len(self.text) else ""

    def _paren(self, i: int, depth: int) -> tuple[tuple[_Node, ...], int] | None:
        first, j = self.prompt(i + 1, depth)
        if self._at(j) == ")":
            return ("(", *first, ")"), j + 1
        if self._at(j) == ":":
            second, k = self.prompt(j + 1, depth)
            if self._at(k) == ")":
                return ("(", *first, ":", *second, ")"), k + 1
        return None

    def _bracket(self, i: int, depth: int) -> tuple[tuple[_Node, ...], int] | None:
        first, j = self.prompt(i + 1, depth)
        closer = self._at(j)
        if closer == "]":
            return ("[", *first, "]"), j + 1
        if closer == "|":
            options = [first]
            while self._at(j) == "|":
                option, j = self.prompt(j + 1, depth)
                options.append(option)
            if self._at(j) != "]":
                return None
            return (_Alternate(tuple(options)),), j + 1
        if closer != ":":
            return None
        # `[after:when]`, else `[before:after:when]`
        when = self._when(j + 1)
        if when is not None:
            return (_Edit(None, first, when[0]),), when[1]
        second, k = self.prompt(j + 1, depth)
        if self._at(k) == ":":
            when = self._when(k + 1)
            if when is not None:
                return (_Edit(first, second, when[0]),), when[1]
        return None

    def _when(self, i: int) -> tuple[str, int] | None:
        """`[WHITESPACE] NUMBER [WHITESPACE] "]"` from `i`: the number and the position after `]`."""
        space = _RE_WHITESPACE.match(self.text, i)
        number = _RE_NUMBER.match(self.text, space.end() if space else i)
        if number is None:
            return None
        space = _RE_WHITESPACE.match(self.text, number.end())
        end = space.end() if space else number.end()
        return (number.group(0), end + 1) if self._at(end) == "]" else None


# --------------------------------------------------------------------------- schedules


def prompt_schedule(
    text: str, steps: int, *, hires_steps: int | None = None, old_scheduling: bool = False
) -> PromptSchedule:
    """The (end step, prompt) entries of `text` over `steps` denoising steps (over `hires_steps`
    for a hires pass, whose first pass had `steps`), as A1111 1.10 computes them."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive whole number, not {steps!r}")
    if hires_steps is not None and (isinstance(hires_steps, bool) or not isinstance(hires_steps, int) or hires_steps < 1):
        raise ValueError(f"hires_steps must be a positive whole number, not {hires_steps!r}")
    if hires_steps is None or old_scheduling:
        total, int_offset, fraction_offset = steps, 0, 0.0
    else:
        total, int_offset, fraction_offset = hires_steps, steps, 1.0
    if "[" not in text:
        return ((total, text),)
    try:
        nodes = _Parser(text).top()
    except _NoParse:
        return ((total, text),)

    def when_step(written: str) -> int:
        value = float(written)
        if old_scheduling:
            value = value * total if value < 1 else value
        elif "." in written:
            value = (value - fraction_offset) * total
        else:
            value = value - int_offset
        if math.isinf(value):  # "1e999": A1111's int() would raise; past either end is what it means
            return total if value > 0 else -1
        return min(total, int(value))

    ends = {total}

    def collect(sequence: tuple[_Node, ...]) -> None:
        for node in sequence:
            if isinstance(node, _Edit):
                step = when_step(node.when)
                if step >= 1:
                    ends.add(step)
                collect(node.before or ())
                collect(node.after)
            elif isinstance(node, _Alternate):
                ends.update(range(1, total + 1))
                for option in node.options:
                    collect(option)

    def at(step: int, sequence: tuple[_Node, ...]) -> str:
        parts: list[str] = []
        for node in sequence:
            if isinstance(node, str):
                parts.append(node)
            elif isinstance(node, _Edit):
                parts.append(at(step, node.before or ()) if step <= when_step(node.when) else at(step, node.after))
            else:
                parts.append(at(step, node.options[(step - 1) % len(node.options)]))
        return "".join(parts)

    collect(nodes)
    return tuple((end, at(end, nodes)) for end in sorted(ends))


def conditioning_index(schedule: PromptSchedule, step: int) -> int:
    """Which entry of `schedule` conditions the 0-based denoising step `step` (A1111's
    `reconstruct_cond_batch`: the first entry that ends at or after it). Past the last entry the
    last one stays (A1111 would fall back to the first; its samplers never get there)."""
    for index, (end, _) in enumerate(schedule):
        if step <= end:
            return index
    return len(schedule) - 1


def composable_parts(text: str) -> tuple[tuple[str, float], ...]:
    """A1111's composable-diffusion parts of a (positive) prompt: (text, weight) for each part
    between `AND`s, the weight read off a trailing `:number` (1.0 without one), trailing whitespace
    dropped. A prompt with neither AND nor a trailing weight is one part, its text exactly as given
    (A1111 drops its trailing whitespace too, which no tokenizer sees)."""
    parts: list[tuple[str, float]] = []
    weighted = False
    for part in _RE_AND.split(text):
        stripped = part.rstrip()
        match = _RE_WEIGHT_REVERSED.match(stripped[::-1])
        if match is None:
            parts.append((stripped, 1.0))
            continue
        weighted = True
        weight = float(match.group(2) + match.group(1)[::-1])
        parts.append((stripped[: len(stripped) - match.end()], weight if math.isfinite(weight) else 1.0))
    if len(parts) == 1 and not weighted:
        return ((text, 1.0),)
    return tuple(parts)
