"""Reading one field of a JSON request body: typed, range-checked, with A1111's coercions.

These are the only readers of request fields: generation (`generation.py`), Extras
(`extras.py`) and ControlNet units (`a1111/controlnet.py`,
`parse_controlnet_args`) all read through them, so every numeric field accepts a number or a
numeric string (`"7.5"`, as A1111's pydantic models coerce) and refuses anything else (other
strings, booleans, NaN, infinities) the same way: a `RequestValidationError` naming the field
(`fields_of` prefixes nested paths, e.g. `alwayson_scripts.controlnet.args[0].weight`), which
every adapter maps through `inference/api/errors.py`'s one error table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from a1111.errors import RequestValidationError

__all__ = [
    "RequestValidationError",
    "fields_of",
    "read_bool",
    "read_float",
    "read_int",
    "read_number",
    "read_optional_str",
    "read_str",
    "shown_value",
]


def read_number(data: Mapping[str, Any], name: str, default: float, what: str) -> float:
    """A finite number from JSON (numbers, or numeric strings as pydantic coerces them)."""
    value = data.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RequestValidationError(name, f"must be {what}, got {type(value).__name__}")
    try:
        number = float(value)
    except (ValueError, OverflowError):  # OverflowError: an integer too big for a float
        raise RequestValidationError(name, f"must be {what}, got {shown_value(value)}") from None
    if not math.isfinite(number):
        raise RequestValidationError(name, f"must be {what}, got {shown_value(value)}")
    return number


def shown_value(value: Any, limit: int = 40) -> str:
    """`repr(value)` cut to `limit` characters (a refused value is echoed, never a megabyte of it)."""
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 128 else "a number too large"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def read_int(data: Mapping[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    number = read_number(data, name, default, "an integer")
    if number != int(number):
        raise RequestValidationError(name, f"must be an integer, got {shown_value(data.get(name))}")
    result = int(number)
    if result < lo:
        raise RequestValidationError(name, f"must be at least {lo}, got {result}")
    if result > hi:
        raise RequestValidationError(name, f"must be at most {hi}, got {result}")
    return result


def read_float(data: Mapping[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    number = read_number(data, name, default, "a number")
    if not lo <= number <= hi:
        raise RequestValidationError(name, f"must be between {lo} and {hi}, got {shown_value(data.get(name))}")
    return number


def read_str(data: Mapping[str, Any], name: str, default: str, max_chars: int) -> str:
    value = data.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise RequestValidationError(name, f"must be a string, got {type(value).__name__}")
    if len(value) > max_chars:
        raise RequestValidationError(name, f"must be at most {max_chars} characters, got {len(value)}")
    if "\x00" in value:
        raise RequestValidationError(name, "must not contain NUL characters")
    return value


def read_bool(data: Mapping[str, Any], name: str, default: bool) -> bool:
    value = data.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):  # A1111 sends inpainting_mask_invert as 0/1
        return bool(value)
    raise RequestValidationError(name, f"must be true or false, got {shown_value(value)}")


@contextmanager
def fields_of(
    where: str, error: Callable[[str, str], RequestValidationError] = RequestValidationError
) -> Iterator[None]:
    """Read fields of a nested object (`override_settings`, a ControlNet unit): errors name
    `where.<field>`, raised as `error(field, message)` (a `RequestValidationError` subclass)."""
    try:
        yield
    except RequestValidationError as exc:
        raise error(f"{where}.{exc.field}", exc.message) from None


def read_optional_str(mapping: Mapping[str, Any], name: str, where: str) -> str | None:
    value = mapping.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestValidationError(f"{where}.{name}", "must be a string")
    return value.strip() or None
