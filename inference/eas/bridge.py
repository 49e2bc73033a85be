"""Input items → Jobs → sink results (filled in by the next commit: the pump is a no-op here)."""

from __future__ import annotations


def eas_pump_safely(*, service_id: int | None = None) -> None:
    """Submit the waiting input items that have room (not wired yet)."""
