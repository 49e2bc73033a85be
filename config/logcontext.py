"""Structured logs: the job, batch and worker a log line is about, and the two output formats.

Where work happens, the code says what it is working on with `log_context(job=…, worker=…,
batch=…)`: the Celery batch runner (`inference/runner/`) for a batch's length, the heartbeat thread,
the dispatcher's pass for each batch it places, a worker's claim and finish of a job
(`inference/transitions.py`) and the reaper's take-back of a job (`inference/reaping.py`). The
values live in `contextvars` (per thread and per asyncio task, restored when the block ends), so no
module holds state and two threads never see each other's job.

`ContextFilter`, on the console handler (`LOGGING` in `config/settings.py`), copies them onto
every record as `record.job`, `record.worker`, `record.batch` (None when unset). `LOG_FORMAT`
picks the formatter: `PlainFormatter` (the default: the classic line, then `[worker=… job=…]`
when any is set) or `JsonFormatter` (one JSON object per line: `time`, `level`, `logger`,
`message`, `exception` when there is one, and each context field that is set).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone

CONTEXT_FIELDS = ("worker", "batch", "job")

_values: dict[str, contextvars.ContextVar[str | None]] = {
    name: contextvars.ContextVar(f"atelier_log_{name}", default=None) for name in CONTEXT_FIELDS
}


def _text(value: str | Iterable[str] | None) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    joined = ",".join(str(item) for item in value)
    return joined or None


@contextlib.contextmanager
def log_context(
    *, job: str | Iterable[str] | None = None, worker: str | None = None, batch: str | None = None
) -> Iterator[None]:
    """Within the block, log records carry these fields (`job`: one public id, or several joined by
    commas). A field left None keeps the value of the enclosing block."""
    tokens = [
        (_values[name], _values[name].set(text))
        for name, text in (("job", _text(job)), ("worker", _text(worker)), ("batch", _text(batch)))
        if text is not None
    ]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current_context() -> dict[str, str]:
    """The fields set here and now (what the next log record will carry)."""
    return {name: value for name in CONTEXT_FIELDS if (value := _values[name].get()) is not None}


class ContextFilter(logging.Filter):
    """Copies the context fields onto every record it sees (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name in CONTEXT_FIELDS:
            if getattr(record, name, None) is None:  # an explicit `extra=` wins
                setattr(record, name, _values[name].get())
        return True


def _record_context(record: logging.LogRecord) -> dict[str, str]:
    return {name: str(value) for name in CONTEXT_FIELDS if (value := getattr(record, name, None)) is not None}


class PlainFormatter(logging.Formatter):
    """The classic line, then `[worker=gpu0@h batch=… job=j_abc]` when any field is set."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _record_context(record)
        if not fields:
            return line
        suffix = " [" + " ".join(f"{name}={value}" for name, value in fields.items()) + "]"
        head, newline, rest = line.partition("\n")  # the traceback stays below the line it belongs to
        return head + suffix + newline + rest


class JsonFormatter(logging.Formatter):
    """One JSON object per line (standard library `json`): newlines inside are escaped."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        entry.update(_record_context(record))
        return json.dumps(entry, ensure_ascii=False, default=str)
