"""The Celery app the end-to-end workers run: the platform's own app and runtime, plus holds.

A job whose prompt contains `hold:<name>` pauses at its first denoising step (a prompt expansion:
at its first token) (`hold:<name>@<step>`:
at that step) until the test releases it (`Platform.release(name)` creates `DATA_DIR/holds/<name>`). Tests use it to keep a
worker busy, or a job running, for exactly as long as they need, whatever the machine's speed:
"hold a job with an event, not with a long generation". While held, the step is re-reported
every few milliseconds, so a cancel still stops the job at its next step, and a killed worker
still dies mid-job. Jobs without the word run untouched.

Started as `celery -A tests.e2e.holding worker …` (tests/harness.py); nothing in the platform
imports this module.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from config.celery import app
from runtime.engine import WorkerRuntime
from runtime.promptgen import PromptgenRuntime

__all__ = ["app"]

HOLD = re.compile(r"\bhold:([\w-]+)(?:@(\d+))?")
POLL_SECONDS = 0.05


def holds_in(prompts: list[str]) -> dict[str, int]:
    """The holds a batch's prompts name: each name with the step it holds at."""
    return {match.group(1): int(match.group(2) or 1) for prompt in prompts for match in HOLD.finditer(prompt)}


def _released(name: str) -> bool:
    return (Path(os.environ["DATA_DIR"]) / "holds" / name).exists()


_generate = WorkerRuntime.generate


def _generate_with_holds(self, spec, on_step=None, on_preview=None):
    holds = holds_in(spec.prompts)
    if not holds or on_step is None:
        return _generate(self, spec, on_step=on_step, on_preview=on_preview)

    def held_step(chunk: int, step: int) -> None:
        on_step(chunk, step)
        while not all(_released(name) for name, at in holds.items() if step >= at):
            time.sleep(POLL_SECONDS)
            on_step(chunk, step)  # raises when every job of the batch was cancelled

    return _generate(self, spec, on_step=held_step, on_preview=on_preview)


WorkerRuntime.generate = _generate_with_holds


_expand = PromptgenRuntime.expand


def _expand_with_holds(self, spec, on_step=None):
    """Prompt expansions hold at a token step alike; the hold ends early once every request of the
    batch was dropped (cancelled), so `hold:a@1 hold:b@2` lets a test cancel at token 1, release `a`,
    and see the cancel take effect at token 2 whatever the machine's speed."""
    holds = holds_in([request.prompt for request in spec.requests])
    if not holds or on_step is None:
        return _expand(self, spec, on_step=on_step)

    def held_step(step: int) -> set[int]:
        dropped = set(on_step(step))
        while len(dropped) < len(spec.requests) and not all(_released(name) for name, at in holds.items() if step >= at):
            time.sleep(POLL_SECONDS)
            dropped |= set(on_step(step))
        return dropped

    return _expand(self, spec, on_step=held_step)


PromptgenRuntime.expand = _expand_with_holds
