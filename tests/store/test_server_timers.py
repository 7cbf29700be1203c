"""The server's timers on trio's mock clock: on time, in order, replaced or cancelled."""

from __future__ import annotations

import trio
import trio.testing

from kvcheck.store.node import Timer
from kvcheck.store.server.timers import Timers


def fired_at(schedule: list[tuple[float, str, Timer, float]], until: float) -> list[object]:
    """Run ``schedule`` — at time t, ``start`` or ``cancel`` a timer (with a delay) — and
    return ``(time, timer)`` for every timer fired before ``until``."""
    fired: list[object] = []

    async def run() -> None:
        timers = Timers(lambda timer: fired.append((trio.current_time(), timer)))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(timers.run)
            for at, what, timer, delay in schedule:
                await trio.sleep_until(at)
                if what == "start":
                    timers.start(timer, delay)
                else:
                    timers.cancel(timer)
            await trio.sleep_until(until)
            nursery.cancel_scope.cancel()

    trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))
    return fired


A, B = ("gossip", 0), ("request", 1)


def test_timers_fire_on_time_in_deadline_order_and_ties_in_start_order() -> None:
    assert fired_at([(0, "start", A, 2.0), (0, "start", B, 1.0)], until=5) == [(1.0, B), (2.0, A)]
    assert fired_at([(0, "start", A, 1.0), (0, "start", B, 1.0)], until=5) == [(1.0, A), (1.0, B)]


def test_starting_a_pending_timer_again_replaces_it_earlier_or_later() -> None:
    assert fired_at([(0, "start", A, 3.0), (1, "start", A, 0.5)], until=5) == [(1.5, A)]
    assert fired_at([(0, "start", A, 1.0), (0.5, "start", A, 2.0)], until=5) == [(2.5, A)]


def test_a_cancelled_timer_does_not_fire_and_a_fired_one_can_start_again() -> None:
    assert fired_at([(0, "start", A, 1.0), (0.5, "cancel", A, 0)], until=5) == []
    assert fired_at([(0, "start", A, 1.0), (2, "start", A, 1.0)], until=5) == [(1.0, A), (3.0, A)]
    assert fired_at([(0, "cancel", B, 0)], until=1) == []
