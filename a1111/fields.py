"""Reading one field of a JSON request body: typed, range-checked, with A1111's coercions.

Every request parser (`generation.py`, `extras.py`) reads its fields through these, so a bad
value is always a `RequestValidationError` naming the field, which adapters turn into a 4xx.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any


class RequestValidationError(ValueError):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


def read_number(data: Mapping[str, Any], name: str, default: float, what: str) -> float:
    """A finite number from JSON (numbers, or numeric strings as pydantic coerces them)."""
    value = data.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RequestValidationError(name, f"must be {what}, got {type(value).__name__}")
    try:
        number = float(value)
    except ValueError:
        raise RequestValidationError(name, f"must be {what}, got {value!r}") from None
    if not math.isfinite(number):
        raise RequestValidationError(name, f"must be {what}, got {value!r}")
    return number


def read_int(data: Mapping[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    number = read_number(data, name, default, "an integer")
    if number != int(number):
        raise RequestValidationError(name, f"must be an integer, got {data.get(name)!r}")
    result = int(number)
    if result < lo:
        raise RequestValidationError(name, f"must be at least {lo}, got {result}")
    if result > hi:
        raise RequestValidationError(name, f"must be at most {hi}, got {result}")
    return result


def read_float(data: Mapping[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    number = read_number(data, name, default, "a number")
    if not lo <= number <= hi:
        raise RequestValidationError(name, f"must be between {lo} and {hi}, got {data.get(name)!r}")
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
    raise RequestValidationError(name, f"must be true or false, got {value!r}")


@contextmanager
def fields_of(where: str) -> Iterator[None]:
    """Read fields of a nested object (`override_settings`): errors name `where.<field>`."""
    try:
        yield
    except RequestValidationError as exc:
        raise RequestValidationError(f"{where}.{exc.field}", exc.message) from None


def read_optional_str(mapping: Mapping[str, Any], name: str, where: str) -> str | None:
    value = mapping.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestValidationError(f"{where}.{name}", "must be a string")
    return value.strip() or None
