"""Text conditioning built exactly as AUTOMATIC1111 1.10 builds it, for diffusers' ``prompt_embeds=``.

diffusers truncates a prompt at 77 tokens and knows neither attention weights nor BREAK. A1111
(``modules/sd_hijack_clip.py``, ``FrozenCLIPEmbedderWithCustomWordsBase``) instead:

- parses ``(word:1.3)``, ``(word)``, ``[word]``, ``\\(`` escapes and BREAK with
  ``prompt_parser.parse_prompt_attention`` (ported in :mod:`a1111.prompts`);
- cuts the tokens into chunks of 75 (BOS + 75 + EOS = 77 positions). BREAK pads the current chunk;
  when a chunk is full and a comma lies within the last 20 tokens (``comma_padding_backtrack``), the
  tokens after that comma move to the next chunk;
- encodes every chunk separately and concatenates them along the sequence (77 × chunks positions);
  prompts of one batch are padded with empty chunks to the same count;
- multiplies each position's output by its weight and rescales the chunk to its original mean
  (``emphasis: Original``, ``modules/sd_emphasis.py``);
- with CLIP skip N (``CLIP_stop_at_last_layers``) takes ``hidden_states[-N]`` through the final
  layer norm;
- replaces textual-inversion embedding names (matched on token ids, so case-insensitively, like
  A1111) by the embedding's vectors, at the token-embedding layer, before position embeddings.

:func:`encode_prompts` returns ``[len(prompts), 77 * chunks, width]``; :func:`encode_pair` encodes
prompts and negative prompts to the same length so they can be stacked for classifier-free guidance.
A prompt with no weights, no BREAK and at most 75 tokens, with CLIP skip 1, gives what diffusers'
``encode_prompt`` gives. The prompt text must already be free of ``<lora:…>`` tags
(:func:`a1111.prompts.parse_prompt` gives it as ``ParsedPrompt.text``).

:func:`load_embedding_file` reads A1111 textual-inversion files: ``.safetensors`` and, through
``torch.load(weights_only=True)`` only, ``.pt``/``.bin``.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import torch

from a1111.prompts import BREAK_SEGMENT, parse_prompt_attention

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "CHUNK_LENGTH",
    "COMMA_PADDING_BACKTRACK",
    "Embedding",
    "EmbeddingError",
    "EmbeddingFix",
    "PromptChunk",
    "encode_pair",
    "encode_pair_xl",
    "encode_prompts",
    "encode_texts_xl",
    "load_embedding_file",
    "prompt_chunks",
]

CHUNK_LENGTH = 75  # prompt tokens per chunk; BOS and EOS make it 77 positions
COMMA_PADDING_BACKTRACK = 20  # A1111's opts.comma_padding_backtrack default
MAX_EMBEDDING_FILE_BYTES = 64 * 1024 * 1024  # real embeddings are a few KB to a few hundred KB

_PICKLE_SUFFIXES = frozenset({".pt", ".bin"})
_NO_EMBEDDINGS: Mapping[str, Embedding] = MappingProxyType({})


class EmbeddingError(ValueError):
    """A textual-inversion embedding cannot be used (unreadable file, unsafe pickle, wrong width…).

    The message names the embedding and is meant for the user.
    """


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no single truth value to compare with
class Embedding:
    """A textual-inversion embedding: ``name`` in a prompt stands for ``vectors`` ([n_vectors, width])."""

    name: str
    vectors: torch.Tensor

    def __post_init__(self) -> None:
        if not self.name:
            raise EmbeddingError("an embedding needs a name")
        vectors = self.vectors
        if not isinstance(vectors, torch.Tensor) or not vectors.is_floating_point() or vectors.ndim != 2:
            raise EmbeddingError(f"embedding {self.name}: the vectors must be a 2-D floating-point tensor")
        if not 1 <= vectors.shape[0] <= CHUNK_LENGTH:
            raise EmbeddingError(
                f"embedding {self.name} has {vectors.shape[0]} vectors; 1 to {CHUNK_LENGTH} fit in a prompt"
            )
        if not bool(torch.isfinite(vectors).all()):
            raise EmbeddingError(f"embedding {self.name} contains NaN or infinite values")

    @property
    def n_vectors(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def width(self) -> int:
        return int(self.vectors.shape[1])


@dataclass(frozen=True)
class EmbeddingFix:
    """Where an embedding's vectors go: from ``offset + 1`` of a chunk (``offset`` counts from after BOS)."""

    offset: int
    embedding: Embedding


@dataclass(frozen=True)
class PromptChunk:
    """One encoder pass: 77 token ids (BOS, 75, EOS), a weight for each, and the embeddings in it.

    Embedding positions hold the placeholder id 0 (as in A1111); their vectors come from ``fixes``.
    """

    tokens: tuple[int, ...]
    multipliers: tuple[float, ...]
    fixes: tuple[EmbeddingFix, ...] = ()


# --------------------------------------------------------------------------- embedding files


def load_embedding_file(path: Path) -> Embedding:
    """Read an A1111 textual-inversion file; its stem is the word that triggers it.

    ``.safetensors``: the ``emb_params`` tensor, or the file's only tensor. ``.pt``/``.bin``:
    ``torch.load(weights_only=True)`` (never a full unpickle), then A1111's
    ``{"string_to_param": {"*": tensor}, ...}`` or a diffusers concept ``{"<token>": tensor}``.
    SDXL embeddings (``clip_l`` + ``clip_g``) are refused. Raises :class:`EmbeddingError`.
    """
    path = Path(path)
    label = path.name
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise EmbeddingError(f"embedding file {label} cannot be read: {exc.strerror or exc}") from None
    if size > MAX_EMBEDDING_FILE_BYTES:
        raise EmbeddingError(f"embedding file {label} is {size} bytes; embeddings are far smaller")

    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        data: object = _read_safetensors(path)
    elif suffix in _PICKLE_SUFFIXES:
        data = _read_weights_only_pickle(path)
    else:
        raise EmbeddingError(f"embedding file {label}: only .safetensors, .pt and .bin embeddings are supported")
    return Embedding(name=path.stem, vectors=_vectors_from_data(data, label))


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise EmbeddingError(f"embedding file {path.name} is not a valid safetensors file ({exc})") from None


def _read_weights_only_pickle(path: Path) -> object:
    # Old A1111 files (torch 1.11 era) store string_to_param as an nn.ParameterDict; allowing that one
    # class lets weights_only rebuild it from plain data (Module.__setstate__), and nothing else runs.
    try:
        with torch.serialization.safe_globals([torch.nn.ParameterDict]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise EmbeddingError(
            f"embedding file {path.name} holds Python objects other than tensors; it is not loaded because "
            "unpickling it could run code (convert it to .safetensors)"
        ) from None
    except Exception as exc:  # truncated or non-torch files raise RuntimeError, EOFError, …
        raise EmbeddingError(f"embedding file {path.name} is not a readable torch file ({exc})") from None


def _vectors_from_data(data: object, label: str) -> torch.Tensor:
    """The vectors of an embedding file's contents, as A1111's ``create_embedding_from_data`` finds them."""
    if not isinstance(data, Mapping) or not data:
        raise EmbeddingError(f"embedding file {label} is not a textual-inversion embedding")
    if "clip_l" in data and "clip_g" in data:
        raise EmbeddingError(
            f"embedding file {label} is an SDXL embedding (clip_l + clip_g vectors); "
            "it cannot be used with this model's single text encoder"
        )
    if "string_to_param" in data:
        params = data["string_to_param"]
        params = getattr(params, "_parameters", params)  # nn.ParameterDict in old files
        if not isinstance(params, Mapping) or len(params) != 1:
            raise EmbeddingError(f"embedding file {label} must hold exactly one term in string_to_param")
        tensor = next(iter(params.values()))
    elif "emb_params" in data:
        tensor = data["emb_params"]
    else:
        tensors = [value for value in data.values() if isinstance(value, torch.Tensor)]
        if len(data) != 1 or len(tensors) != 1:
            keys = ", ".join(sorted(str(key) for key in data)[:8])
            raise EmbeddingError(f"embedding file {label} has no emb_params tensor and more than one entry ({keys})")
        tensor = tensors[0]
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        raise EmbeddingError(f"embedding file {label}: the embedding is not a floating-point tensor")
    if tensor.ndim == 1:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 2:
        raise EmbeddingError(f"embedding file {label}: expected [vectors, width], got shape {tuple(tensor.shape)}")
    return tensor.detach().to("cpu", dtype=torch.float32).clone().contiguous()


# --------------------------------------------------------------------------- prompt → chunks


@dataclass(frozen=True)
class _SpecialIds:
    start: int
    end: int
    pad: int
    comma: int | None

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase) -> _SpecialIds:
        end = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id
        return cls(
            start=tokenizer.bos_token_id,
            end=end,
            pad=end if pad is None else pad,  # SD1: EOS pads; SD2 (OpenCLIP): 0 pads after the first EOS
            comma=_token_id(tokenizer, ",</w>"),
        )


def _token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int | None:
    """One token's id in the vocabulary (None: not in it), without `get_vocab()`, which copies the
    whole ~49k-entry vocabulary into a new dict: 10-30 ms of every batch's conditioning here."""
    backend = getattr(tokenizer, "backend_tokenizer", None)  # fast tokenizers: a lookup in Rust
    if backend is not None:
        return backend.token_to_id(token)
    return tokenizer.get_vocab().get(token)


# token id that starts a name → [(the name's ids, its embedding)], longest names first
_EmbeddingIndex = dict[int, list[tuple[list[int], Embedding]]]


def _embedding_index(tokenizer: PreTrainedTokenizerBase, embeddings: Mapping[str, Embedding]) -> _EmbeddingIndex:
    """A1111's ``EmbeddingDatabase.ids_lookup``: embeddings keyed by the first token id of their name."""
    index: _EmbeddingIndex = {}
    words = [word for word in embeddings if word]
    if not words:
        return index
    for word, ids in zip(words, tokenizer(words, add_special_tokens=False)["input_ids"], strict=True):
        if ids:
            index.setdefault(ids[0], []).append((list(ids), embeddings[word]))
    for candidates in index.values():
        candidates.sort(key=lambda candidate: len(candidate[0]), reverse=True)  # stable: mapping order breaks ties
    return index


def _embedding_at(index: _EmbeddingIndex, tokens: list[int], position: int) -> tuple[Embedding | None, int]:
    for ids, embedding in index.get(tokens[position], ()):
        if tokens[position : position + len(ids)] == ids:
            return embedding, len(ids)
    return None, 0


@dataclass
class _ChunkBuilder:
    """The chunk being filled and the chunks already done (A1111's ``tokenize_line`` state)."""

    special: _SpecialIds
    chunks: list[PromptChunk] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    fixes: list[EmbeddingFix] = field(default_factory=list)
    last_comma: int = -1

    def is_full(self) -> bool:
        return len(self.tokens) == CHUNK_LENGTH

    def append(self, token: int, weight: float) -> None:
        self.tokens.append(token)
        self.multipliers.append(weight)

    def append_embedding(self, embedding: Embedding, weight: float) -> None:
        if len(self.tokens) + embedding.n_vectors > CHUNK_LENGTH:
            self.next_chunk()
        self.fixes.append(EmbeddingFix(len(self.tokens), embedding))
        self.tokens.extend([0] * embedding.n_vectors)
        self.multipliers.extend([weight] * embedding.n_vectors)

    def can_backtrack_to_comma(self) -> bool:
        return (
            COMMA_PADDING_BACKTRACK != 0
            and self.is_full()
            and self.last_comma != -1
            and len(self.tokens) - self.last_comma <= COMMA_PADDING_BACKTRACK
        )

    def move_after_last_comma_to_next_chunk(self) -> None:
        # A1111 quirk kept: embedding fixes in the moved tail stay with the finished chunk, so the
        # moved placeholders encode as token 0 and the vectors land in that chunk's padding.
        cut = self.last_comma + 1
        moved_tokens, moved_multipliers = self.tokens[cut:], self.multipliers[cut:]
        del self.tokens[cut:], self.multipliers[cut:]
        self.next_chunk()
        self.tokens, self.multipliers = moved_tokens, moved_multipliers

    def next_chunk(self) -> None:
        padding = CHUNK_LENGTH - len(self.tokens)
        end = self.special.end
        self.chunks.append(
            PromptChunk(
                tokens=(self.special.start, *self.tokens, *([end] * padding), end),
                multipliers=(1.0, *self.multipliers, *([1.0] * padding), 1.0),
                fixes=tuple(self.fixes),
            )
        )
        self.tokens, self.multipliers, self.fixes = [], [], []
        self.last_comma = -1


def _chunks_for_segments(
    special: _SpecialIds,
    segments: Sequence[tuple[str, float]],
    tokenized: Sequence[list[int]],
    index: _EmbeddingIndex,
) -> list[PromptChunk]:
    builder = _ChunkBuilder(special)
    for tokens, (text, weight) in zip(tokenized, segments, strict=True):
        if (text, weight) == BREAK_SEGMENT:
            builder.next_chunk()
            continue
        position = 0
        while position < len(tokens):
            if tokens[position] == special.comma:
                builder.last_comma = len(builder.tokens)  # where it goes (a full chunk sends it on)
            elif builder.can_backtrack_to_comma():
                builder.move_after_last_comma_to_next_chunk()
            if builder.is_full():
                builder.next_chunk()
            embedding, length = _embedding_at(index, tokens, position)
            if embedding is None:
                builder.append(tokens[position], weight)
                position += 1
            else:
                builder.append_embedding(embedding, weight)
                position += length
    if builder.tokens or not builder.chunks:
        builder.next_chunk()
    return builder.chunks


def _prompt_chunks(
    tokenizer: PreTrainedTokenizerBase, text: str, special: _SpecialIds, index: _EmbeddingIndex
) -> list[PromptChunk]:
    segments = parse_prompt_attention(text)
    texts = [segment for segment, _ in segments]
    # verbose=False: no "longer than the maximum sequence length" warning, chunking handles that
    tokenized = tokenizer(texts, truncation=False, add_special_tokens=False, verbose=False)["input_ids"]
    return _chunks_for_segments(special, segments, tokenized, index)


def prompt_chunks(
    tokenizer: PreTrainedTokenizerBase, text: str, *, embeddings: Mapping[str, Embedding] = _NO_EMBEDDINGS
) -> list[PromptChunk]:
    """The 77-token chunks A1111 makes of one prompt (also the basis of a token counter)."""
    special = _SpecialIds.of(tokenizer)
    return _prompt_chunks(tokenizer, text, special, _embedding_index(tokenizer, embeddings))


def _empty_chunk(special: _SpecialIds) -> PromptChunk:
    return PromptChunk(
        tokens=(special.start, *([special.end] * (CHUNK_LENGTH + 1))),
        multipliers=(1.0,) * (CHUNK_LENGTH + 2),
    )


# --------------------------------------------------------------------------- chunks → tensors


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase,
    text_encoder: PreTrainedModel,
    prompts: Sequence[str],
    *,
    clip_skip: int = 1,
    embeddings: Mapping[str, Embedding] = _NO_EMBEDDINGS,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Encode prompts as A1111 does: ``[len(prompts), 77 * chunks, width]``, all with the same chunk count.

    ``clip_skip`` is A1111's (1 = last layer; diffusers' ``clip_skip`` is this minus 1).
    ``embeddings`` maps trigger words to embeddings; an embedding whose width does not fit this text
    encoder raises :class:`EmbeddingError` when a prompt uses it. Bad attention syntax raises
    ``a1111.prompts.PromptError``. The result is on ``device`` (default: the text encoder's) in
    ``dtype`` (default: the text encoder's).
    """
    _check_clip_skip(text_encoder, clip_skip)
    return _encode_texts(tokenizer, text_encoder, prompts, clip_skip, embeddings, device, dtype)[0]


def _encode_texts(
    tokenizer: PreTrainedTokenizerBase,
    text_encoder: PreTrainedModel,
    prompts: Sequence[str],
    clip_skip: int,
    embeddings: Mapping[str, Embedding],
    device: torch.device | str | None,
    dtype: torch.dtype | None,
    *,
    final_norm: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`encode_prompts`, and each prompt's pooled output from its first chunk where the encoder has one."""
    special = _SpecialIds.of(tokenizer)
    index = _embedding_index(tokenizer, embeddings)
    by_text: dict[str, list[PromptChunk]] = {}
    for text in prompts:
        if text not in by_text:
            by_text[text] = _prompt_chunks(tokenizer, text, special, index)
    return _encode_chunked(
        text_encoder, [by_text[text] for text in prompts], special, clip_skip, device, dtype, final_norm=final_norm
    )


def encode_pair(
    tokenizer: PreTrainedTokenizerBase,
    text_encoder: PreTrainedModel,
    prompts: Sequence[str],
    negative_prompts: Sequence[str],
    *,
    clip_skip: int = 1,
    embeddings: Mapping[str, Embedding] = _NO_EMBEDDINGS,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prompt_embeds, negative_prompt_embeds)`` with the same sequence length (the shorter side is
    padded with empty chunks, as A1111 does with "pad prompt/negative prompt to be same length")."""
    if len(prompts) != len(negative_prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(negative_prompts)} negative prompts")
    both = encode_prompts(
        tokenizer,
        text_encoder,
        [*prompts, *negative_prompts],
        clip_skip=clip_skip,
        embeddings=embeddings,
        device=device,
        dtype=dtype,
    )
    return both[: len(prompts)], both[len(prompts) :]


@dataclass(frozen=True)
class XLConditioning:
    """What SDXL pipelines take: both encoders' hidden states side by side, and encoder 2's pooled output."""

    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor
    negative_pooled_prompt_embeds: torch.Tensor

    def as_kwargs(self) -> dict[str, torch.Tensor]:
        return dict(vars(self))


def encode_pair_xl(
    tokenizers: Sequence[PreTrainedTokenizerBase],
    text_encoders: Sequence[PreTrainedModel],
    prompts: Sequence[str],
    negative_prompts: Sequence[str],
    *,
    embeddings: Mapping[str, Embedding] = _NO_EMBEDDINGS,
    zero_empty_negative: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> XLConditioning:
    """SDXL conditioning as A1111 makes it: weights, BREAK and 75-token chunks through both text
    encoders (each one's penultimate layer, without its final norm, with its own emphasis), the
    two concatenated per token; the pooled output is text encoder 2's for each prompt's first chunk.

    An empty negative prompt gives zeros (A1111 and diffusers both do so for SDXL, whose
    `force_zeros_for_empty_prompt` is set). An unweighted prompt of up to 75 tokens encodes
    exactly as diffusers' own `encode_prompt`.
    """
    if len(prompts) != len(negative_prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(negative_prompts)} negative prompts")
    zero = [False] * len(prompts) + [zero_empty_negative and text == "" for text in negative_prompts]
    hidden, pooled = encode_texts_xl(
        tokenizers, text_encoders, [*prompts, *negative_prompts], zero=zero, embeddings=embeddings,
        device=device, dtype=dtype,
    )
    count = len(prompts)
    return XLConditioning(hidden[:count], hidden[count:], pooled[:count], pooled[count:])


def encode_texts_xl(
    tokenizers: Sequence[PreTrainedTokenizerBase],
    text_encoders: Sequence[PreTrainedModel],
    texts: Sequence[str],
    *,
    zero: Sequence[bool] = (),
    embeddings: Mapping[str, Embedding] = _NO_EMBEDDINGS,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`encode_pair_xl`'s encoding of any list of texts: ``(hidden [len, 77 * chunks, width 1 + width 2],
    pooled [len, width 2])``, all with the same chunk count; the rows flagged in ``zero`` (empty
    negative prompts) are zeros."""
    hidden_parts = []
    pooled: torch.Tensor | None = None
    for tokenizer, text_encoder in zip(tokenizers, text_encoders, strict=True):
        hidden, pooled = _encode_texts(tokenizer, text_encoder, texts, 2, embeddings, device, dtype, final_norm=False)
        hidden_parts.append(hidden)
    if pooled is None:
        raise ValueError("SDXL's second text encoder must have a projection (CLIPTextModelWithProjection)")
    if len({part.shape[1] for part in hidden_parts}) != 1:
        raise ValueError("the two SDXL tokenizers split the prompt into different chunk counts")
    hidden = torch.cat(hidden_parts, dim=-1)
    for row, flag in enumerate(zero):
        if flag:
            hidden[row].zero_()
            pooled[row].zero_()
    return hidden, pooled


def _check_clip_skip(text_encoder: PreTrainedModel, clip_skip: int) -> None:
    layers = int(text_encoder.config.num_hidden_layers)
    if isinstance(clip_skip, bool) or not isinstance(clip_skip, int) or not 1 <= clip_skip <= layers:
        raise ValueError(
            f"CLIP skip must be a whole number from 1 to {layers} for this text encoder, not {clip_skip!r}"
        )


def _check_embedding_widths(rows: Sequence[PromptChunk], width: int) -> None:
    for row in rows:
        for fix in row.fixes:
            if fix.embedding.width != width:
                raise EmbeddingError(
                    f"embedding {fix.embedding.name} has {fix.embedding.width}-wide vectors, "
                    f"this checkpoint's text encoder needs {width}"
                )


def _token_ids(rows: Sequence[PromptChunk], special: _SpecialIds, device: torch.device | str) -> torch.Tensor:
    """The rows as an id tensor; where the pad id is not EOS (SD2), ids after the first EOS become pad."""
    ids = torch.tensor([row.tokens for row in rows], dtype=torch.long)
    if special.pad != special.end:
        first_end = (ids == special.end).int().argmax(dim=1, keepdim=True)  # every row has an EOS
        ids[torch.arange(ids.shape[1]).unsqueeze(0) > first_end] = special.pad
    return ids.to(device)


def _encode_chunked(
    text_encoder: PreTrainedModel,
    per_prompt: Sequence[list[PromptChunk]],
    special: _SpecialIds,
    clip_skip: int,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
    *,
    final_norm: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    width = int(text_encoder.get_input_embeddings().embedding_dim)
    device = text_encoder.device if device is None else device
    dtype = text_encoder.dtype if dtype is None else dtype
    if not per_prompt:
        return torch.zeros(0, CHUNK_LENGTH + 2, width, device=device, dtype=dtype), None
    n_chunks = max(len(chunks) for chunks in per_prompt)
    empty = _empty_chunk(special)
    rows = [chunks[i] if i < len(chunks) else empty for chunks in per_prompt for i in range(n_chunks)]
    _check_embedding_widths(rows, width)

    input_ids = _token_ids(rows, special, device)
    with torch.no_grad(), _embeddings_inserted(text_encoder, input_ids, [row.fixes for row in rows]):
        hidden, pooled = _run_text_encoder(text_encoder, input_ids, clip_skip, final_norm=final_norm)
    multipliers = torch.tensor([row.multipliers for row in rows], dtype=torch.float32, device=hidden.device)
    weighted = _emphasis_original(hidden.float(), multipliers)
    weighted = weighted.reshape(len(per_prompt), n_chunks * (CHUNK_LENGTH + 2), -1).to(device=device, dtype=dtype)
    if pooled is not None:  # A1111 pools each prompt's first chunk
        pooled = pooled[::n_chunks].to(device=device, dtype=dtype)
    return weighted, pooled


def _run_text_encoder(
    text_encoder: PreTrainedModel, input_ids: torch.Tensor, clip_skip: int, *, final_norm: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The hidden states `clip_skip` layers from the end, and the projected pooled output where the encoder has one."""
    if clip_skip == 1:
        outputs = text_encoder(input_ids)
        return outputs[0], getattr(outputs, "text_embeds", None)  # last_hidden_state, as diffusers' encode_prompt
    outputs = text_encoder(input_ids, output_hidden_states=True)
    hidden = outputs.hidden_states[-clip_skip]
    if final_norm:
        # transformers 5's CLIPTextModel has final_layer_norm itself (no .text_model); older ones nest it.
        hidden = getattr(text_encoder, "text_model", text_encoder).final_layer_norm(hidden)
    return hidden, getattr(outputs, "text_embeds", None)


def _emphasis_original(hidden: torch.Tensor, multipliers: torch.Tensor) -> torch.Tensor:
    """A1111's "Original" emphasis, per chunk of each prompt: weight every position, restore the mean.

    A1111 takes the mean over the batch it encodes, which is one prompt (cond and uncond are
    encoded apart, and identical prompts once), so the mean here is per row. Where the mean is 0
    (a final layer norm with no bias, as in random test models) A1111 divides 0 by 0 and gets NaN,
    or scales the chunk to zero; such a chunk is left unscaled here.
    """
    original_mean = hidden.mean(dim=(1, 2), keepdim=True)
    weighted = hidden * multipliers.unsqueeze(-1)
    ratio = original_mean / weighted.mean(dim=(1, 2), keepdim=True)
    restorable = torch.isfinite(ratio) & (original_mean != 0)
    return weighted * torch.where(restorable, ratio, torch.ones_like(ratio))


@contextmanager
def _embeddings_inserted(
    text_encoder: PreTrainedModel, input_ids: torch.Tensor, fixes: Sequence[tuple[EmbeddingFix, ...]]
) -> Iterator[None]:
    """While in the block, the text encoder's token embedding puts the embeddings' vectors in place
    (A1111's ``EmbeddingsWithFixes``) for ``input_ids`` only; the hook is removed on the way out."""
    if not any(fixes):
        yield
        return
    token_embedding = text_encoder.get_input_embeddings()
    applied: list[bool] = []

    def insert(
        module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: torch.Tensor
    ) -> torch.Tensor | None:
        ids = args[0] if args else kwargs.get("input")
        if not isinstance(ids, torch.Tensor) or not _same_ids(ids, input_ids):
            return None  # another caller's forward (the module is shared): leave it alone
        applied.append(True)
        return _with_fixes(output, fixes)

    handle = token_embedding.register_forward_hook(insert, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
    if not applied:
        raise RuntimeError("the text encoder did not look up its token embeddings; textual inversion cannot be applied")


def _same_ids(seen: torch.Tensor, ours: torch.Tensor) -> bool:
    if seen.shape != ours.shape:
        return False
    return seen.data_ptr() == ours.data_ptr() or torch.equal(seen, ours.to(seen.device))


def _with_fixes(token_embeds: torch.Tensor, fixes: Sequence[tuple[EmbeddingFix, ...]]) -> torch.Tensor:
    rows: list[torch.Tensor] = []
    for row, row_fixes in zip(token_embeds, fixes, strict=True):
        for fix in row_fixes:
            vectors = fix.embedding.vectors.to(device=row.device, dtype=row.dtype)
            start = fix.offset + 1  # after BOS
            count = min(row.shape[0] - start, vectors.shape[0])
            row = torch.cat([row[:start], vectors[:count], row[start + count :]])
        rows.append(row)
    return torch.stack(rows)

