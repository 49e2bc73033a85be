"""`manage.py serve`'s restart backoff (`inference/supervisor.py`), on an injected clock: no sleeping."""

from __future__ import annotations

from inference.supervisor import RestartBackoff


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_per_child_up_to_30s_is_due_without_sleeping_and_resets_after_a_healthy_minute() -> None:
    clock = Clock()
    web, worker = RestartBackoff(clock=clock), RestartBackoff(clock=clock)
    web.started(), worker.started()
    assert not web.due()  # a running child is never due

    delays = []
    for _ in range(7):  # a crash loop: each life lasts a second
        clock.now += 1
        delays.append(web.exited())
        assert not web.due()
        clock.now += delays[-1] - 0.01
        assert not web.due()
        clock.now += 0.01
        assert web.due()
        web.started()
    assert delays == [1, 2, 4, 8, 16, 30, 30]

    # The other child's schedule is its own: its first death costs one second.
    assert worker.exited() == 1
    assert worker.due() is False and web.due() is False

    # A life shorter than a healthy minute keeps counting; one of a minute starts over.
    clock.now += 59
    assert web.exited() == 30
    web.started()
    clock.now += 60
    assert web.exited() == 1
    web.started()
    clock.now += 5
    assert web.exited() == 2

    # However long a crash loop runs, the delay stays at the cap.
    loop = RestartBackoff(clock=clock, restarts=5000)
    loop.started()
    assert loop.exited() == 30
