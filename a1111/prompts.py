"""A1111 prompt syntax, parsed into a structured prompt (pure: no Django, no torch, no I/O).

`parse_prompt("a (cat:1.2) <lora:foo:0.8> BREAK EasyNegative", known_embeddings={"EasyNegative"})`
gives the text without extra-network tags, the attention segments, the extra networks, the
embeddings that occur and whether a BREAK is present. It follows AUTOMATIC1111 1.10
(../shared/reference/a1111.md §4):

- extra networks: `modules/extra_networks.py` (`re_extra_net`, `ExtraNetworkParams`) and
  `extensions-builtin/Lora/extra_networks_lora.py` (te/unet/dyn), `extra_networks_hypernet.py`;
- attention: a faithful port of `modules/prompt_parser.parse_prompt_attention`, quirks included;
- prompt editing `[from:to:when]`, alternation `[a|b]` and composable diffusion's `AND` are read
  by `a1111/prompt_schedules.py` (per-step schedules and weighted parts the runtime applies).

`lora_key()` turns a set of LoRAs into a canonical string so the scheduler can batch jobs that
use the same LoRAs with the same weights.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "MAX_PROMPT_CHARS",
    "MAX_NETWORK_WEIGHT",
    "MAX_BRACKET_DEPTH",
    "BREAK_SEGMENT",
    "PromptError",
    "ExtraNetwork",
    "ParsedPrompt",
    "parse_prompt",
    "parse_prompt_attention",
    "extract_extra_networks",
    "find_embeddings",
    "lora_key",
    "CHUNK_TOKENS",
    "prompt_chunk_count",
]

MAX_PROMPT_CHARS = 100_000
MAX_NETWORK_WEIGHT = 10.0  # |te|, |unet| or hypernet weight above this is refused
# Open "(" / "[" at once (unclosed ones stay open to the end). A1111 has no limit, but its
# algorithm costs depth × length, so a hostile prompt could pin a worker; real prompts nest < 15.
MAX_BRACKET_DEPTH = 64
BREAK_SEGMENT: tuple[str, float] = ("BREAK", -1.0)  # how A1111 marks a BREAK among the segments

LORA_KINDS = frozenset({"lora", "lyco"})  # A1111 1.10 registers "lyco" as an alias of "lora"
HYPERNET_KIND = "hypernet"

# modules/extra_networks.py
RE_EXTRA_NET = re.compile(r"<(\w+):([^>]+)>")

# modules/prompt_parser.py
RE_ATTENTION = re.compile(
    r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:([+-]?[.\d]+)\)|
\)|
]|
[^\\()\[\]:]+|
:
""",
    re.X,
)
RE_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


class PromptError(ValueError):
    """The prompt cannot be used as given (bad extra-network arguments, too long, …)."""


@dataclass(frozen=True)
class ExtraNetwork:
    """One `<kind:args>` tag. For a hypernet both weights are its multiplier; other kinds than
    lora/lyco/hypernet get the name (first argument) and, where the second argument is a number,
    that number as both weights (A1111 skips unknown kinds, so we never refuse them)."""

    kind: str
    name: str
    te_weight: float = 1.0
    unet_weight: float = 1.0
    dyn: int | None = None


@dataclass(frozen=True)
class ParsedPrompt:
    text: str  # the prompt without extra-network tags; whitespace left exactly as A1111 leaves it
    segments: tuple[tuple[str, float], ...]  # parse_prompt_attention(text); BREAK is ("BREAK", -1.0)
    extra_networks: tuple[ExtraNetwork, ...]  # in order of appearance
    embeddings: tuple[str, ...]  # known embedding names present, in order of first occurrence
    has_break: bool


# --------------------------------------------------------------------------- top level


def parse_prompt(text: str, *, known_embeddings: Iterable[str] = ()) -> ParsedPrompt:
    """Parse an A1111 prompt. Raises PromptError for a bad extra-network tag or an oversized prompt."""
    if not isinstance(text, str):
        raise PromptError(f"prompt must be a string, not {type(text).__name__}")
    if len(text) > MAX_PROMPT_CHARS:
        raise PromptError(f"prompt is {len(text)} characters long; the limit is {MAX_PROMPT_CHARS}")

    stripped, networks = extract_extra_networks(text)
    segments = tuple(parse_prompt_attention(stripped))
    return ParsedPrompt(
        text=stripped,
        segments=segments,
        extra_networks=tuple(networks),
        embeddings=tuple(find_embeddings(stripped, known_embeddings)),
        # A1111 (sd_hijack_clip) starts a new chunk only for a segment that is exactly ("BREAK", -1).
        has_break=BREAK_SEGMENT in segments,
    )


# --------------------------------------------------------------------------- extra networks


def extract_extra_networks(text: str) -> tuple[str, list[ExtraNetwork]]:
    """Remove every `<kind:args>` tag from `text` (replaced by nothing, as A1111 does) and parse it."""
    networks: list[ExtraNetwork] = []

    def found(match: re.Match[str]) -> str:
        networks.append(_parse_extra_network(match.group(0), match.group(1), match.group(2).split(":")))
        return ""

    return RE_EXTRA_NET.sub(found, text), networks


def _parse_extra_network(tag: str, kind: str, items: list[str]) -> ExtraNetwork:
    # ExtraNetworkParams: an item with exactly one "=" is named, anything else is positional.
    positional: list[str] = []
    named: dict[str, str] = {}
    for item in items:
        parts = item.split("=", 2)
        if len(parts) == 2:
            named[parts[0]] = parts[1]
        else:
            positional.append(item)

    if kind in LORA_KINDS:
        return _parse_lora(tag, kind, positional, named)
    if kind == HYPERNET_KIND:
        # extra_networks_hypernet.py reads items[0] and items[1] (not the positional split).
        name = _network_name(tag, items)
        weight = _weight(tag, "weight", items[1]) if len(items) > 1 else 1.0
        return ExtraNetwork(kind, name, weight, weight, None)

    name = positional[0].strip() if positional else ""
    weight = 1.0
    if len(positional) > 1:
        try:
            weight = float(positional[1])
        except ValueError:
            pass
        if not math.isfinite(weight):
            weight = 1.0
    return ExtraNetwork(kind, name, weight, weight, None)


def _parse_lora(tag: str, kind: str, positional: list[str], named: dict[str, str]) -> ExtraNetwork:
    # extra_networks_lora.py (1.10): te = pos[1] | 1.0, named te; unet = pos[2] | te, named unet;
    # dyn = int(pos[3]) | None, named dyn.
    name = _network_name(tag, positional)
    te = _weight(tag, "weight", positional[1]) if len(positional) > 1 else 1.0
    if "te" in named:
        te = _weight(tag, "te weight", named["te"])
    unet = _weight(tag, "unet weight", positional[2]) if len(positional) > 2 else te
    if "unet" in named:
        unet = _weight(tag, "unet weight", named["unet"])
    dyn = _dyn(tag, positional[3]) if len(positional) > 3 else None
    if "dyn" in named:
        dyn = _dyn(tag, named["dyn"])
    return ExtraNetwork(kind, name, te, unet, dyn)


def _network_name(tag: str, items: list[str]) -> str:
    name = items[0].strip() if items else ""
    if not name:
        raise PromptError(f"{tag}: the network name is empty")
    return name


def _weight(tag: str, what: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise PromptError(f"{tag}: {what} {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise PromptError(f"{tag}: {what} {raw!r} is not a finite number")
    if abs(value) > MAX_NETWORK_WEIGHT:
        raise PromptError(f"{tag}: {what} {raw!r} is outside [-{MAX_NETWORK_WEIGHT:g}, {MAX_NETWORK_WEIGHT:g}]")
    return value


def _dyn(tag: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise PromptError(f"{tag}: dyn {raw!r} is not an integer") from None
    if value < 1:
        raise PromptError(f"{tag}: dyn {raw!r} must be a positive integer")
    return value


# --------------------------------------------------------------------------- attention


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Port of A1111's `prompt_parser.parse_prompt_attention`: text → [(text, weight), …].

    `(x)` ×1.1, `(x:1.3)` ×1.3, `[x]` ÷1.1, `\\( \\) \\[ \\] \\\\` literal; unclosed brackets
    apply to the end; stray closers are text; BREAK → ("BREAK", -1.0); equal-weight runs merge.
    Like A1111, brackets around a BREAK multiply its marker too (then it is no longer a break).
    Errors (PromptError): an explicit weight that is not a number, e.g. `(x:1.2.3)` (A1111 raises
    too), and more than MAX_BRACKET_DEPTH brackets open at once (our guard; A1111 has none).
    """
    res: list[list[str | float]] = []
    round_brackets: list[int] = []
    square_brackets: list[int] = []
    round_bracket_multiplier = 1.1
    square_bracket_multiplier = 1 / 1.1

    def multiply_range(start_position: int, multiplier: float) -> None:
        for p in range(start_position, len(res)):
            res[p][1] = float(res[p][1]) * multiplier

    for m in RE_ATTENTION.finditer(text):
        token = m.group(0)
        weight = m.group(1)

        if token.startswith("\\"):
            res.append([token[1:], 1.0])
        elif token in ("(", "["):
            if len(round_brackets) + len(square_brackets) >= MAX_BRACKET_DEPTH:
                raise PromptError(
                    f"brackets are nested more than {MAX_BRACKET_DEPTH} deep (unclosed '(' and '[' count too)"
                )
            (round_brackets if token == "(" else square_brackets).append(len(res))
        elif weight is not None and round_brackets:
            try:
                multiplier = float(weight)
            except ValueError:
                raise PromptError(f"attention weight {weight!r} in '{token}' is not a number") from None
            multiply_range(round_brackets.pop(), multiplier)
        elif token == ")" and round_brackets:
            multiply_range(round_brackets.pop(), round_bracket_multiplier)
        elif token == "]" and square_brackets:
            multiply_range(square_brackets.pop(), square_bracket_multiplier)
        else:
            for i, part in enumerate(RE_BREAK.split(token)):
                if i > 0:
                    res.append(["BREAK", -1.0])
                res.append([part, 1.0])

    for pos in round_brackets:
        multiply_range(pos, round_bracket_multiplier)
    for pos in square_brackets:
        multiply_range(pos, square_bracket_multiplier)

    if not res:
        res = [["", 1.0]]

    # merge runs of identical weights (A1111 compares each item with the run before it)
    merged: list[tuple[list[str], float]] = []
    for item_text, item_weight in res:
        if merged and merged[-1][1] == item_weight:
            merged[-1][0].append(str(item_text))
        else:
            merged.append(([str(item_text)], float(item_weight)))
    return [("".join(parts), weight) for parts, weight in merged]


# --------------------------------------------------------------------------- chunk count

CHUNK_TOKENS = 75  # CLIP tokens per A1111 prompt chunk (BOS + 75 + EOS = 77 positions)
# CLIP's pre-tokenizer (`open_clip`'s simple_tokenizer pattern, with `re` classes for \p{L}/\p{N}):
# every match becomes at least one BPE token.
RE_CLIP_PRETOKEN = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+", re.IGNORECASE)


def prompt_chunk_count(text: str) -> int:
    """How many 75-token chunks A1111 makes of `text` at least (pure: no tokenizer, no torch).

    Mirrors the chunk builder of `runtime/conditioning.py`: a BREAK closes the chunk being
    filled (so "BREAK BREAK" makes empty chunks), a full chunk starts the next. Tokens are counted
    as CLIP's pre-tokenizer matches (a word, one digit, a run of punctuation), each of which the
    BPE turns into one token or more, and comma back-tracking (which only adds chunks) is left
    out: the count is a lower bound, so a prompt that fits is never refused. English prompts
    tokenize to about 1.1-1.3 tokens per match, so the true count is seldom higher by more than
    a third; extra-network tags should be removed first (they are not encoded).
    Raises PromptError as `parse_prompt_attention` does.
    """
    chunks, filled = 0, 0
    for segment, weight in parse_prompt_attention(text):
        if (segment, weight) == BREAK_SEGMENT:
            chunks, filled = chunks + 1, 0
            continue
        tokens = len(RE_CLIP_PRETOKEN.findall(segment.lower()))
        while tokens:
            if filled == CHUNK_TOKENS:
                chunks, filled = chunks + 1, 0
            taken = min(tokens, CHUNK_TOKENS - filled)
            filled, tokens = filled + taken, tokens - taken
    return chunks + 1 if filled or not chunks else chunks


# --------------------------------------------------------------------------- embeddings


def find_embeddings(text: str, known: Iterable[str]) -> list[str]:
    """The known embedding names that occur in `text` as whole words (case-sensitive), in order of
    first occurrence (a longer name first where two start at the same place)."""
    first_at: dict[str, int] = {}
    for name in known:
        if not name or name in first_at:
            continue
        match = re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text)
        if match is not None:
            first_at[name] = match.start()
    return sorted(first_at, key=lambda n: (first_at[n], -len(n), n))


# --------------------------------------------------------------------------- LoRA batching key


def lora_key(networks: Iterable[ExtraNetwork]) -> str:
    """Canonical string of the LoRA set (lora and lyco tags) with weights, for batching jobs.

    Sorted by name, e.g. "bar@te=1,unet=1;foo@te=0.8,unet=0.5,dyn=8"; "" when there are none.
    Weights are written with 6 significant digits, so 0.1+0.2 and 0.3 give the same key.
    """
    entries: list[tuple[str, str]] = []
    for network in networks:
        if network.kind not in LORA_KINDS:
            continue
        name = _key_name(network.name)
        entry = f"{name}@te={_fmt_weight(network.te_weight)},unet={_fmt_weight(network.unet_weight)}"
        if network.dyn is not None:
            entry += f",dyn={network.dyn}"
        entries.append((name, entry))
    return ";".join(entry for _, entry in sorted(entries))


def _fmt_weight(value: float) -> str:
    text = f"{value:.6g}"
    return "0" if text == "-0" else text


def _key_name(name: str) -> str:
    # Escape the key's separators so that no name can make two different sets collide.
    return "".join(f"%{ord(c):02X}" if c in "%;@,=" else c for c in name)
