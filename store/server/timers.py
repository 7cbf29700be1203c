"""The node's timers on trio's clock: named, each pending at most once."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

import trio

from kvcheck.store.node import Timer

#: One start of a timer: its deadline, the start's number, the timer. A plain tuple, compared in
#: C (each request starts a timer): by deadline, then by start, which is unique.
_Deadline = tuple[float, int, Timer]


class Timers:
    """Timers keyed by name; starting one again replaces it. :meth:`run` fires them on time.

    ``fire`` is called with the timer's name from :meth:`run`'s task, once per start that was
    neither replaced nor cancelled, in the order of the deadlines (starts in order on a tie).
    """

    def __init__(self, fire: Callable[[Timer], None]) -> None:
        self._fire = fire
        self._heap: list[_Deadline] = []
        self._current: dict[Timer, int] = {}  # timer -> its pending start
        self._starts = 0
        self._scope: trio.CancelScope | None = None

    def start(self, timer: Timer, delay: float) -> None:
        """Fire ``timer`` ``delay`` seconds from now, instead of when it was due (if pending)."""
        self._starts += 1
        self._current[timer] = self._starts
        at = trio.current_time() + delay
        heapq.heappush(self._heap, (at, self._starts, timer))
        if self._scope is not None and at < self._scope.deadline:
            self._scope.deadline = at

    def cancel(self, timer: Timer) -> None:
        """Do not fire ``timer`` (nothing happens if it is not pending)."""
        self._current.pop(timer, None)

    async def run(self) -> None:
        """Fire timers as they fall due, until cancelled."""
        while True:
            now = trio.current_time()
            while self._heap and self._heap[0][0] <= now:
                _, start, timer = heapq.heappop(self._heap)
                if self._current.get(timer) == start:
                    del self._current[timer]
                    self._fire(timer)
            with trio.CancelScope(deadline=self._heap[0][0] if self._heap else math.inf) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None
