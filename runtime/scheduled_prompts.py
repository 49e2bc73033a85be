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

Composable diffusion (`a AND b :1.2`, A1111's `CFGDenoiser.combine_denoised`): each part of a prompt
is a row of its own with its own schedule, and while the pipeline runs, a hook on the UNet gives
every image its parts' rows next to its negative row (whether or not the pipeline guides) and
hands the pipeline `uncond + sum(weight * (part - uncond))` as the image's conditional prediction,
so the pipeline's `uncond + cfg * (cond - uncond)` is A1111's sum. (Both are affine in the model
output, so epsilon and v-prediction alike.) A ControlNet's residuals, computed from each image's
first part, are shared by its parts.

Step arithmetic: diffusers calls the UNet once per loop iteration, as A1111's denoiser counts its
calls, and for second-order schedulers (Heun, DPM2: `scheduler.order == 2`) A1111 schedules over
twice the steps, so the schedule's step count is `steps * order` and the loop index is the step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, ContextManager

import torch

from a1111.prompt_schedules import PromptSchedule, composable_parts, conditioning_index, prompt_schedule
from runtime.module_hooks import around_calls
from runtime.conditioning import Embedding, encode_pair, encode_pair_xl, encode_prompts, encode_texts_xl

__all__ = ["ChunkSchedules", "ScheduledConditioning", "chunk_conditioning", "denoising"]

# (text, zeroed): an SDXL negative prompt whose every scheduled text is empty encodes as zeros (A1111's
# `force_zero_negative_prompt`, decided per prompt over its schedule's texts); "" elsewhere does not
_TextKey = tuple[str, bool]


@dataclass(frozen=True)
class ChunkSchedules:
    """One pass's schedules: one per prompt part (a prompt without AND is one part) and one per
    row's negative prompt, with each part's row and weight."""

    positive: tuple[PromptSchedule, ...]
    negative: tuple[PromptSchedule, ...]
    owners: tuple[int, ...]  # the row of each part
    weights: tuple[float, ...]  # each part's weight

    @classmethod
    def of(
        cls, prompts: Sequence[str], negative_prompts: Sequence[str], *, steps: int, hires_steps: int | None = None
    ) -> ChunkSchedules:
        def schedule(text: str) -> PromptSchedule:
            return prompt_schedule(text, steps, hires_steps=hires_steps)

        parts = [(row, text, weight) for row, prompt in enumerate(prompts) for text, weight in composable_parts(prompt)]
        return cls(
            positive=tuple(schedule(text) for _, text, _ in parts),
            negative=tuple(schedule(text) for text in negative_prompts),
            owners=tuple(row for row, _, _ in parts),
            weights=tuple(weight for _, _, weight in parts),
        )

    @property
    def is_composed(self) -> bool:
        """Some row has several parts, or a part weight other than 1 (A1111's composable diffusion)."""
        return len(self.positive) != len(self.negative) or any(weight != 1.0 for weight in self.weights)

    @property
    def is_static(self) -> bool:
        """One part per row at weight 1, and no text changes during the pass."""
        return not self.is_composed and all(len(schedule) == 1 for schedule in (*self.positive, *self.negative))

    def texts_at(self, step: int) -> tuple[list[str], list[str]]:
        """Each part's and each row's negative text at the 0-based step."""
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
        self._offset = 0  # the pass's steps already run elsewhere (`starting_at`)

    def starting_at(self, step: int) -> ScheduledConditioning:
        """This schedule for a pipeline call that takes over at the pass's 0-based `step` (the
        refiner's call, after the base model's steps): its step 0 is that step."""
        shifted = copy.copy(self)
        shifted._offset = self._offset + step
        return shifted

    @property
    def tensor_inputs(self) -> list[str]:
        """What the step callback must see (and may replace): diffusers' `callback_on_step_end_tensor_inputs`."""
        if self.schedules.is_composed:  # the UNet hook conditions every call itself
            return ["latents"]
        return ["latents", "prompt_embeds", *(["add_text_embeds"] if self.pooled is not None else [])]

    def rows_at(self, step: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The encoded rows of each part and of each image's negative prompt at the 0-based step."""
        positives, negatives = self.schedules.texts_at(step + self._offset)
        return (
            tuple(self._index[(text, False)] for text in positives),
            tuple(self._index[(text, zeroed)] for text, zeroed in zip(negatives, self._zeroed_negatives, strict=True)),
        )

    def pipeline_kwargs(self) -> dict[str, torch.Tensor]:
        """Step 0's conditioning as the pipeline's `prompt_embeds=` (and SDXL's pooled) arguments
        (with composable diffusion, each image's first part: the UNet hook puts in all of them)."""
        parts, negative = self.rows_at(0)
        first: dict[int, int] = {}
        for owner, row in zip(self.schedules.owners, parts, strict=True):
            first.setdefault(owner, row)
        positive = tuple(first[row] for row in range(len(negative)))
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
        if step <= 0 or self.schedules.is_composed:
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

    @contextmanager
    def composed(self, unet: torch.nn.Module) -> Iterator[None]:
        """While in the block, each call of `unet` (the pipeline's loop) runs every image's negative
        row and its parts' rows for the call's step, and returns A1111's weighted sum as the
        conditional half. Nothing happens without composable diffusion."""
        if not self.schedules.is_composed:
            yield
            return
        images = len(self.schedules.negative)
        state = {"step": 0, "guided": False}

        def expand(value: Any, owners: torch.Tensor) -> Any:
            """A batched input as [negative half, each part's copy of its image's conditional half]."""
            if isinstance(value, (list, tuple)):
                return type(value)(expand(item, owners) for item in value)
            if not isinstance(value, torch.Tensor) or value.ndim == 0 or value.shape[0] not in (images, 2 * images):
                return value
            conditional = value[images:] if value.shape[0] == 2 * images else value
            return torch.cat([value[:images], conditional.index_select(0, owners.to(value.device))])

        def before(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
            sample = args[0] if args else kwargs["sample"]
            state["guided"] = sample.shape[0] == 2 * images
            parts, negative = self.rows_at(state["step"])
            owners = torch.tensor(self.schedules.owners, dtype=torch.long)
            like = kwargs["encoder_hidden_states"]
            kwargs = dict(kwargs)
            kwargs["encoder_hidden_states"] = self._take(self.encoded, (*negative, *parts)).to(device=like.device, dtype=like.dtype)
            added = kwargs.get("added_cond_kwargs")
            if added and self.pooled is not None:
                text_embeds = added["text_embeds"]
                pooled = self._take(self.pooled, (*negative, *parts)).to(device=text_embeds.device, dtype=text_embeds.dtype)
                kwargs["added_cond_kwargs"] = {**{k: expand(v, owners) for k, v in added.items()}, "text_embeds": pooled}
            for name in ("timestep", "timestep_cond", "down_block_additional_residuals", "mid_block_additional_residual",
                         "down_intrablock_additional_residuals"):
                if name in kwargs:
                    kwargs[name] = expand(kwargs[name], owners)
            if args:  # (sample, timestep, …)
                args = tuple(expand(value, owners) if i < 2 else value for i, value in enumerate(args))
            else:
                kwargs["sample"] = expand(kwargs["sample"], owners)
            return args, kwargs

        def after(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
            state["step"] += 1
            prediction = output[0] if isinstance(output, tuple) else output.sample
            uncond, parts = prediction[:images], prediction[images:]
            owners = torch.tensor(self.schedules.owners, dtype=torch.long, device=prediction.device)
            weights = torch.tensor(self.schedules.weights, dtype=prediction.dtype, device=prediction.device)
            weights = weights.reshape(-1, *([1] * (prediction.ndim - 1)))
            combined = uncond.index_add(0, owners, (parts - uncond.index_select(0, owners)) * weights)
            result = torch.cat([uncond, combined]) if state["guided"] else combined
            if isinstance(output, tuple):
                return (result, *output[1:])
            output.sample = result
            return output

        with around_calls(unet, before, after):
            yield


def denoising(schedule: ScheduledConditioning | None, unet: torch.nn.Module) -> ContextManager[None]:
    """The context a pipeline call runs in: composable diffusion's UNet hook where the chunk needs it."""
    return nullcontext() if schedule is None else schedule.composed(unet)


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
                *_xl_encoders(pipeline),
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
                *_xl_encoders(pipeline),
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


def _xl_encoders(pipeline: Any) -> tuple[list[Any], list[Any]]:
    """An SDXL pipeline's (tokenizers, text encoders): both for a base model, the second alone for a
    refiner (which has no CLIP-L: its conditioning is OpenCLIP bigG's alone, as in A1111)."""
    pairs = [
        (tokenizer, encoder)
        for tokenizer, encoder in ((pipeline.tokenizer, pipeline.text_encoder), (pipeline.tokenizer_2, pipeline.text_encoder_2))
        if encoder is not None
    ]
    return [tokenizer for tokenizer, _ in pairs], [encoder for _, encoder in pairs]


def _distinct_texts(schedules: ChunkSchedules, zeroed_negatives: Sequence[bool]) -> list[_TextKey]:
    """Every (text, zeroed) the chunk's schedules use, in first-use order, each once."""
    keys: dict[_TextKey, None] = {}
    for schedule in schedules.positive:
        keys.update(((text, False), None) for _, text in schedule)
    for schedule, zeroed in zip(schedules.negative, zeroed_negatives, strict=True):
        keys.update(((text, zeroed), None) for _, text in schedule)
    return list(keys)
