"""The request limits of this deployment (settings → :class:`a1111.generation.Limits`).

Every adapter that parses a generation request (the native API, /sdapi, the workspace) reads its
limits here, so they cannot drift apart.
"""

from __future__ import annotations

from django.conf import settings

from a1111.generation import Limits
from a1111.promptgen import MAX_PROMPT_CHARS, PromptgenLimits


def generation_limits() -> Limits:
    return Limits(
        max_steps=settings.ATELIER_MAX_STEPS,
        min_size=settings.ATELIER_MIN_SIZE,
        max_size=settings.ATELIER_MAX_SIZE,
        max_batch_size=settings.ATELIER_MAX_BATCH_SIZE,
        max_n_iter=settings.ATELIER_MAX_N_ITER,
        max_prompt_chars=settings.ATELIER_MAX_PROMPT_CHARS,
        max_prompt_chunks=settings.ATELIER_MAX_PROMPT_CHUNKS,
    )


def xyz_max_cells() -> int:
    """The most cells (jobs) one X/Y/Z plot may have (`ATELIER_MAX_XYZ_CELLS`)."""
    return settings.ATELIER_MAX_XYZ_CELLS


def promptgen_limits() -> PromptgenLimits:
    """Prompt expansion's limits: its own bounds (`a1111/promptgen.py`), stated as they are in
    `/openapi.json`; a short prompt to expand is far below generation's prompt limit."""
    return PromptgenLimits(max_prompt_chars=MAX_PROMPT_CHARS)
