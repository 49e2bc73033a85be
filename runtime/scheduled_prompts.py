"""A chunk's text conditioning with A1111's prompt schedules: prompt editing and alternation per row.

A1111 (`prompt_parser.get_learned_conditioning` / `reconstruct_cond_batch`) encodes each text of a
prompt's schedule once and, before every denoiser call, gives each image of the batch the entry
of its own schedule for that step. Here the same happens inside one diffusers pipeline call:

- `chunk_conditioning` reads each row's positive and negative schedule
  (`a1111.prompt_schedules.prompt_schedule`, over the pass's steps: for a hires pass its own steps
  after the first pass's, as A1111 counts them). When no row has more than one entry, it returns
  exactly what the runtime passed before schedules existed (`encode_pair`/`encode_pair_xl` of the
  texts) and no schedule: nothing else runs.
- Otherwise every distinct text of the chunk (positive and negative) is encoded once, in one call,
  so all rows share a chunk count, and a `ScheduledConditioning` says which encoded row each image
  needs at each step. The pipeline starts with step 0's rows; the engine's `callback_on_step_end`
  asks `tensors_for_step` after each step and, where any row's entry changes, hands diffusers a
  new `prompt_embeds` (`cat([negative, positive])` under classifier-free guidance, as the pipelines
  hold it during the loop) and, for SDXL, a new `add_text_embeds` (the pooled embeddings).

Step arithmetic: diffusers calls the UNet once per loop iteration, as A1111's denoiser counts its
calls, and for second-order schedulers (Heun, DPM2: `scheduler.order == 2`) A1111 schedules over
twice the steps, so the schedule's step count is `steps * order` and the loop index is the step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from a1111.prompt_schedules import PromptSchedule, conditioning_index, prompt_schedule
from runtime.conditioning import Embedding, encode_pair, encode_pair_xl, encode_prompts, encode_texts_xl

__all__ = ["ChunkSchedules", "ScheduledConditioning", "chunk_conditioning"]

# (text, zeroed): an SDXL negative prompt whose every scheduled text is empty encodes as zeros (A1111's
# `force_zero_negative_prompt`, decided per prompt over its schedule's texts); "" elsewhere does not
_TextKey = tuple[str, bool]


@dataclass(frozen=True)
class ChunkSchedules:
    """Each row's positive and negative prompt schedule for one pass."""

    positive: tuple[PromptSchedule, ...]
    negative: tuple[PromptSchedule, ...]

    @classmethod
    def of(
        cls, prompts: Sequence[str], negative_prompts: Sequence[str], *, steps: int, hires_steps: int | None = None
    ) -> ChunkSchedules:
        def schedule(text: str) -> PromptSchedule:
            return prompt_schedule(text, steps, hires_steps=hires_steps)

        return cls(tuple(schedule(text) for text in prompts), tuple(schedule(text) for text in negative_prompts))

    @property
    def is_static(self) -> bool:
        """No row changes its text during the pass."""
        return all(len(schedule) == 1 for schedule in (*self.positive, *self.negative))

    def texts_at(self, step: int) -> tuple[list[str], list[str]]:
        """Each row's positive and negative text at the 0-based step."""
        def text(schedule: PromptSchedule) -> str:
            return schedule[conditioning_index(schedule, step)][1]

        return [text(s) for s in self.positive], [text(s) for s in self.negative]


class ScheduledConditioning:
    """Every distinct text of a chunk's schedules encoded once, and the rows each step takes from them."""

    def __init__(
        self,
        schedules: ChunkSchedules,
        encoded: torch.Tensor,
        pooled: torch.Tensor | None,
        index: Mapping[_TextKey, int],
        *,
        zeroed_negatives: Sequence[bool],
    ) -> None:
        self.schedules = schedules
        self.encoded = encoded  # [distinct texts, 77 * chunks, width]
        self.pooled = pooled  # [distinct texts, width 2] for SDXL, else None
        self._index = dict(index)
        self._zeroed_negatives = tuple(zeroed_negatives)  # per row

    @property
    def tensor_inputs(self) -> list[str]:
        """What the step callback must see (and may replace): diffusers' `callback_on_step_end_tensor_inputs`."""
        return ["latents", "prompt_embeds", *(["add_text_embeds"] if self.pooled is not None else [])]

    def rows_at(self, step: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The encoded rows (positive, negative) of each image at the 0-based step."""
        positives, negatives = self.schedules.texts_at(step)
        return (
            tuple(self._index[(text, False)] for text in positives),
            tuple(self._index[(text, zeroed)] for text, zeroed in zip(negatives, self._zeroed_negatives, strict=True)),
        )

    def pipeline_kwargs(self) -> dict[str, torch.Tensor]:
        """Step 0's conditioning as the pipeline's `prompt_embeds=` (and SDXL's pooled) arguments."""
        positive, negative = self.rows_at(0)
        kwargs = {"prompt_embeds": self._take(self.encoded, positive), "negative_prompt_embeds": self._take(self.encoded, negative)}
        if self.pooled is not None:
            kwargs["pooled_prompt_embeds"] = self._take(self.pooled, positive)
            kwargs["negative_pooled_prompt_embeds"] = self._take(self.pooled, negative)
        return kwargs

    def tensors_for_step(self, step: int, current: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The tensors to hand back to the pipeline before the 0-based `step`; {} where no row changes.

        `current` holds the pipeline's own tensors: under classifier-free guidance they have twice the
        rows (negative first), without it only the positive rows.
        """
        if step <= 0:
            return {}
        rows = self.rows_at(step)
        if rows == self.rows_at(step - 1):
            return {}
        replaced = {"prompt_embeds": self._stacked(self.encoded, rows, current["prompt_embeds"])}
        if self.pooled is not None and "add_text_embeds" in current:
            replaced["add_text_embeds"] = self._stacked(self.pooled, rows, current["add_text_embeds"])
        return replaced

    def _stacked(self, table: torch.Tensor, rows: tuple[tuple[int, ...], tuple[int, ...]], like: torch.Tensor) -> torch.Tensor:
        positive, negative = rows
        if like.shape[0] == 2 * len(positive):  # classifier-free guidance: cat([negative, positive])
            stacked = self._take(table, (*negative, *positive))
        else:
            stacked = self._take(table, positive)
        return stacked.to(device=like.device, dtype=like.dtype)

    @staticmethod
    def _take(table: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
        return table.index_select(0, torch.tensor(rows, dtype=torch.long, device=table.device))


def chunk_conditioning(
    pipeline: Any,
    prompts: Sequence[str],
    negative_prompts: Sequence[str],
    *,
    embeddings: Mapping[str, Embedding],
    clip_skip: int,
    steps: int,
    hires_steps: int | None = None,
) -> tuple[dict[str, torch.Tensor], ScheduledConditioning | None]:
    """The pipeline's conditioning arguments for one chunk's rows, and their schedule (None when no
    row's text changes: then the arguments are exactly the unscheduled ones).

    `steps` and `hires_steps` are the passes' steps as requested; the scheduler's order multiplies them.
    `clip_skip` is A1111's setting, clamped to the text encoder's layers; SDXL (two text encoders)
    ignores it, as A1111 does.
    """
    order = max(int(getattr(pipeline.scheduler, "order", 1)), 1)
    schedules = ChunkSchedules.of(
        prompts, negative_prompts, steps=steps * order, hires_steps=None if hires_steps is None else hires_steps * order
    )
    xl = getattr(pipeline, "text_encoder_2", None) is not None
    zero_empty_negative = bool(pipeline.config.get("force_zeros_for_empty_prompt", True)) if xl else False
    device = pipeline._execution_device
    if not xl:  # A1111's setting counts from 1, up to the encoder's depth
        clip_skip = min(max(clip_skip, 1), int(pipeline.text_encoder.config.num_hidden_layers))
    if schedules.is_static:
        positives, negatives = schedules.texts_at(0)
        if xl:
            return encode_pair_xl(
                [pipeline.tokenizer, pipeline.tokenizer_2], [pipeline.text_encoder, pipeline.text_encoder_2],
                positives, negatives, embeddings=embeddings, zero_empty_negative=zero_empty_negative,
                device=device, dtype=pipeline.text_encoder_2.dtype,
            ).as_kwargs(), None
        positive, negative = encode_pair(
            pipeline.tokenizer, pipeline.text_encoder, positives, negatives, clip_skip=clip_skip,
            embeddings=embeddings, device=device, dtype=pipeline.text_encoder.dtype,
        )
        return {"prompt_embeds": positive, "negative_prompt_embeds": negative}, None

    zeroed = tuple(zero_empty_negative and all(text == "" for _, text in schedule) for schedule in schedules.negative)
    keys = _distinct_texts(schedules, zeroed)
    texts = [text for text, _ in keys]
    encode: Callable[[], tuple[torch.Tensor, torch.Tensor | None]]
    if xl:
        def encode() -> tuple[torch.Tensor, torch.Tensor | None]:
            return encode_texts_xl(
                [pipeline.tokenizer, pipeline.tokenizer_2], [pipeline.text_encoder, pipeline.text_encoder_2],
                texts, zero=[zeroed for _, zeroed in keys], embeddings=embeddings, device=device,
                dtype=pipeline.text_encoder_2.dtype,
            )
    else:
        def encode() -> tuple[torch.Tensor, torch.Tensor | None]:
            return encode_prompts(
                pipeline.tokenizer, pipeline.text_encoder, texts, clip_skip=clip_skip, embeddings=embeddings,
                device=device, dtype=pipeline.text_encoder.dtype,
            ), None
    encoded, pooled = encode()
    scheduled = ScheduledConditioning(
        schedules, encoded, pooled, {key: row for row, key in enumerate(keys)}, zeroed_negatives=zeroed
    )
    return scheduled.pipeline_kwargs(), scheduled


def _distinct_texts(schedules: ChunkSchedules, zeroed_negatives: Sequence[bool]) -> list[_TextKey]:
    """Every (text, zeroed) the chunk's schedules use, in first-use order, each once."""
    keys: dict[_TextKey, None] = {}
    for schedule in schedules.positive:
        keys.update(((text, False), None) for _, text in schedule)
    for schedule, zeroed in zip(schedules.negative, zeroed_negatives, strict=True):
        keys.update(((text, zeroed), None) for _, text in schedule)
    return list(keys)
