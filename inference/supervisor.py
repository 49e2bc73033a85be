"""When `manage.py serve` restarts a child that died: the restart backoff, as a pure policy.

Each child (web, each worker, the sweeper) has its own `RestartBackoff`. A child that exits
waits `min(2**n, 30)` seconds before its restart, n being the restarts since it was last
healthy; a child that ran for a healthy minute before exiting starts again from n = 0 (a
one-off crash costs a second; a crash loop backs off to once every 30 s). The policy never
sleeps: it says *when* the restart is due and the supervisor's loop, which keeps watching
every other child meanwhile, starts the child once `due()` says so. The clock is injected,
so the policy is tested without waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

BACKOFF_CAP_SECONDS = 30.0
HEALTHY_AFTER_SECONDS = 60.0
_MAX_EXPONENT = 16  # 2**16 s is far past any cap: no float overflow however long a crash loop runs


@dataclass
class RestartBackoff:
    """One child's restart schedule. Call `started()` when it starts, `exited()` when it exits
    (returns the delay before its restart), and start it again when `due()`."""

    clock: Callable[[], float]
    cap_seconds: float = BACKOFF_CAP_SECONDS
    healthy_after_seconds: float = HEALTHY_AFTER_SECONDS
    restarts: int = 0  # restarts since the child was last healthy
    started_at: float | None = None
    restart_at: float | None = None

    def started(self) -> None:
        self.started_at = self.clock()
        self.restart_at = None

    def exited(self) -> float:
        now = self.clock()
        if self.started_at is not None and now - self.started_at >= self.healthy_after_seconds:
            self.restarts = 0
        delay = min(2.0 ** min(self.restarts, _MAX_EXPONENT), self.cap_seconds)
        self.restarts += 1
        self.started_at = None
        self.restart_at = now + delay
        return delay

    def due(self) -> bool:
        """True once an exited child's delay has passed (False while it runs)."""
        return self.restart_at is not None and self.clock() >= self.restart_at
