"""Prompt expansion on a causal language model: a batch of requests, each with its own settings (no Django).

`PromptgenRuntime.expand(spec, on_step)` runs every request of a `PromptgenSpec` (several
members' expansions on one model) as ONE batch: each request contributes `num_results` rows,
left-padded to a common length, and one sampling loop over the model with its key/value cache
produces a token for every row per step. Sampling is per row (`sample_rows`): each row has its
request's temperature, top-k, top-p and repetition penalty, and its own `torch.Generator`
seeded `seed + i` (result i), so a request's texts depend on its own settings and seed, not on who
else shares the batch (alone, the same request gives the same texts every time). A row stops at
its end-of-text token or its request's `max_new_tokens`; the loop stops when every row has.

`on_step(step)` is called after each token step; it returns the requests to drop (cancelled):
their rows stop at once, and when none is left the loop ends. It may also raise to stop the batch.

Models load offline (`local_files_only=True`, nothing is downloaded) with AutoTokenizer and
AutoModelForCausalLM, safetensors only unless the spec allows pickled weights (then transformers
reads `pytorch_model.bin` with torch's weights-only unpickler), and stay in an `LruCache` keyed by
their weights' hash; `loaded()` reports those hashes to the scheduler.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from runtime.caches import LruCache
from runtime.specs import ExpansionRequest, PromptgenSpec

logger = logging.getLogger(__name__)

StepCallback = Callable[[int], Collection[int]]  # step done → indexes of requests to drop


class PromptgenModelError(RuntimeError):
    """A model folder that cannot be loaded as a causal language model; the message says why."""


@dataclass
class LoadedPromptgen:
    model: Any  # a transformers PreTrainedModel (…ForCausalLM)
    tokenizer: Any  # a transformers tokenizer, padding on the left
    model_type: str
    max_positions: int | None  # learned positions (GPT-2); None for ALiBi/rotary models
    cache_argument: str  # "cache" or "past_key_values", by this transformers version's forward()
    takes_position_ids: bool


def load_promptgen(path: Path, *, device: torch.device, dtype: torch.dtype, allow_pickled: bool) -> LoadedPromptgen:
    """Load a transformers model folder offline; `PromptgenModelError` with the reason when it cannot."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a folder only: never the hub
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if not (path / "config.json").is_file():
        raise PromptgenModelError(f"{path.name} has no config.json: it is not a transformers model folder")
    if not allow_pickled and not any((path / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
        raise PromptgenModelError(
            f"{path.name} has no model.safetensors, and pickled weights (pytorch_model.bin) are not allowed on this "
            "platform (ATELIER_ALLOW_PICKLED_MODELS): convert them to safetensors"
        )
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, use_safetensors=None if allow_pickled else True, dtype=dtype,
        )
    except Exception as exc:  # noqa: BLE001 - any loader error becomes the job's message
        raise PromptgenModelError(
            f"{path.name} cannot be loaded as a causal language model offline ({type(exc).__name__}: {str(exc)[:300]})"
        ) from None
    model.to(device)
    model.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise PromptgenModelError(f"{path.name}'s tokenizer has neither a padding nor an end-of-text token")
        tokenizer.pad_token = tokenizer.eos_token
    parameters = inspect.signature(model.forward).parameters
    cache_argument = "cache" if "cache" in parameters else "past_key_values"
    max_positions = getattr(config, "n_positions", None) if config.model_type == "gpt2" else getattr(
        config, "max_position_embeddings", None
    )
    return LoadedPromptgen(
        model=model, tokenizer=tokenizer, model_type=str(config.model_type), max_positions=max_positions,
        cache_argument=cache_argument, takes_position_ids="position_ids" in parameters,
    )


def sample_rows(
    logits: torch.Tensor,
    *,
    seen: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    repetition_penalty: torch.Tensor,
    generators: list[torch.Generator],
) -> torch.Tensor:
    """One token per row, each row with its own settings (all [rows, 1] tensors) and generator.

    `seen` [rows, vocab] marks the tokens already in each row (prompt and generated): their
    scores are divided (positive) or multiplied (negative) by the row's repetition penalty, as
    transformers' RepetitionPenaltyLogitsProcessor does. Then temperature, top-k (0: off) and
    top-p (1: off) as in transformers' warpers, and one multinomial draw per row.
    """
    scores = logits.float()
    penalised = torch.where(scores < 0, scores * repetition_penalty, scores / repetition_penalty)
    scores = torch.where(seen, penalised, scores)
    scores = scores / temperature
    vocab = scores.shape[-1]
    sorted_scores, sorted_index = torch.sort(scores, descending=True, dim=-1)
    ranks = torch.arange(vocab, device=scores.device).unsqueeze(0)
    outside_k = (top_k > 0) & (ranks >= top_k)
    probabilities = torch.softmax(sorted_scores.masked_fill(outside_k, float("-inf")), dim=-1)
    cumulative = probabilities.cumsum(dim=-1)
    outside_p = (cumulative - probabilities) >= top_p  # the first token always stays
    remove = outside_k | outside_p
    sorted_scores = sorted_scores.masked_fill(remove, float("-inf"))
    probabilities = torch.softmax(sorted_scores, dim=-1).cpu()
    picks = torch.stack([
        torch.multinomial(probabilities[row], 1, generator=generators[row]) for row in range(probabilities.shape[0])
    ]).to(scores.device)
    return sorted_index.gather(-1, picks).squeeze(-1)


@dataclass(frozen=True)
class _Row:
    request: int  # index in spec.requests
    result: int  # which of the request's results


class PromptgenRuntime:
    """Prompt-generation models kept loaded by weights hash, and the batched sampling loop."""

    def __init__(self, *, device: torch.device, dtype: torch.dtype, capacity: int = 2) -> None:
        self.device, self.dtype = device, dtype
        self._models: LruCache[LoadedPromptgen] = LruCache(capacity)
        self.loads = 0

    def loaded(self) -> list[str]:
        """Weights hashes of the models held, least recently used first."""
        return [str(key) for key in self._models.keys()]

    def model(self, path: str, sha256: str, *, allow_pickled: bool = False) -> LoadedPromptgen:
        def load() -> LoadedPromptgen:
            started = time.perf_counter()
            loaded = load_promptgen(Path(path), device=self.device, dtype=self.dtype, allow_pickled=allow_pickled)
            self.loads += 1
            logger.info("loaded prompt model %s in %.2fs", Path(path).name, time.perf_counter() - started)
            return loaded

        return self._models.get(sha256, load)

    @torch.inference_mode()
    def expand(self, spec: PromptgenSpec, on_step: StepCallback | None = None) -> list[list[str]]:
        """Each request's generated texts (the new tokens only, decoded), in order; [] for a dropped one."""
        loaded = self.model(spec.model_path, spec.model_sha256, allow_pickled=spec.allow_pickled)
        tokenizer, model = loaded.tokenizer, loaded.model
        rows = [_Row(index, result) for index, request in enumerate(spec.requests) for result in range(request.num_results)]
        if not rows:
            return [[] for _ in spec.requests]
        requests = spec.requests
        longest = max(request.max_new_tokens for request in requests)
        max_input = None if loaded.max_positions is None else max(loaded.max_positions - longest, 1)
        tokenizer.truncation_side = "left"  # a prompt too long for the model keeps its end
        encoded = tokenizer(
            [requests[row.request].prompt for row in rows], return_tensors="pt", padding=True,
            truncation=max_input is not None, max_length=max_input, add_special_tokens=True,
        )
        input_ids = encoded["input_ids"].to(self.device)
        attention_mask = encoded["attention_mask"].to(self.device)
        count, vocab = input_ids.shape[0], model.get_output_embeddings().weight.shape[0]

        def column(values: list[float], dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=self.device).unsqueeze(-1)

        settings = {
            "temperature": column([requests[r.request].temperature for r in rows]),
            "top_k": column([requests[r.request].top_k for r in rows], torch.long),
            "top_p": column([requests[r.request].top_p for r in rows]),
            "repetition_penalty": column([requests[r.request].repetition_penalty for r in rows]),
        }
        limits = torch.tensor([requests[r.request].max_new_tokens for r in rows], device=self.device)
        generators = [torch.Generator(device="cpu").manual_seed(requests[r.request].seed + r.result) for r in rows]
        seen = torch.zeros(count, vocab, dtype=torch.bool, device=self.device)
        seen.scatter_(1, input_ids.clamp(max=vocab - 1), attention_mask.bool())
        eos = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id
        done = torch.zeros(count, dtype=torch.bool, device=self.device)
        generated = torch.full((count, longest), pad, dtype=torch.long, device=self.device)
        lengths = torch.zeros(count, dtype=torch.long, device=self.device)
        dropped: set[int] = set()

        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        step_input, step_positions, cache = input_ids, position_ids, None
        for step in range(longest):
            kwargs: dict[str, Any] = {"attention_mask": attention_mask, "use_cache": True, loaded.cache_argument: cache}
            if loaded.takes_position_ids:
                kwargs["position_ids"] = step_positions
            output = model(input_ids=step_input, **kwargs)
            cache = getattr(output, "cache", None) or getattr(output, "past_key_values", None)
            tokens = sample_rows(output.logits[:, -1, :], seen=seen, generators=generators, **settings)
            tokens = torch.where(done, torch.full_like(tokens, pad), tokens)
            live = ~done
            generated[live, step] = tokens[live]
            lengths += live.long()
            seen[torch.arange(count, device=self.device), tokens] |= live
            done |= (tokens == eos) if eos is not None else torch.zeros_like(done)
            done |= lengths >= limits
            if on_step is not None:
                for index in on_step(step + 1):
                    if index not in dropped:
                        dropped.add(index)
                        done |= torch.tensor([r.request == index for r in rows], device=self.device)
            if bool(done.all()):
                break
            step_input = tokens.unsqueeze(-1)
            attention_mask = torch.cat([attention_mask, torch.ones(count, 1, dtype=attention_mask.dtype, device=self.device)], dim=-1)
            step_positions = step_positions[:, -1:] + 1
        texts: list[list[str]] = [[] for _ in requests]
        for position, row in enumerate(rows):
            if row.request in dropped:
                continue
            tokens = generated[position, : int(lengths[position])].tolist()
            texts[row.request].append(tokenizer.decode(tokens, skip_special_tokens=True))
        return texts
