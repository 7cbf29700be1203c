"""Running trio in virtual time, deterministically: how a simulated test runs the same code as a
real one.

Virtual time is trio's :class:`~trio.testing.MockClock` with ``autojump_threshold=0``: whenever
every task is waiting, the clock jumps to the next deadline, so a test's seconds cost nothing.
Trio also decides the order in which tasks woken together run, at random; that order is made a
function of ``seed`` — trio's own provision for reproducible scheduling (the switch Hypothesis
turns on for it), set for the duration of the run and restored after. With no threads, sockets
or wall clock in the run, the same seed then gives the same run, step for step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import trio
import trio.testing
from trio._core import _run as trio_run  # the scheduler's random batch order lives here


class DeterminismUnavailable(RuntimeError):
    """This version of trio offers no way to make its scheduling order reproducible."""


def run_virtual(async_fn: Callable[..., Awaitable[Any]], *args: Any, seed: int) -> Any:
    """``trio.run(async_fn, *args)`` in virtual time, its scheduling order a function of
    ``seed``. Raises :class:`DeterminismUnavailable` before running if trio cannot do that."""
    with _deterministic_scheduling(seed):
        return trio.run(async_fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


def jump_to(clock: trio.testing.MockClock, when: float) -> None:
    """Move ``clock`` (its rate 0) on to ``when``: never short of it, at most an ulp past it.

    One jump of ``when - now`` can land an ulp short (``now + (when - now)`` is rounded, either
    way); a second then lands on ``when`` exactly, since that difference and that sum are exact.
    """
    while (now := clock.current_time()) < when:
        clock.jump(when - now)


@contextlib.contextmanager
def _deterministic_scheduling(seed: int) -> Iterator[None]:
    generator = getattr(trio_run, "_r", None)
    if generator is None or not hasattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING"):
        raise DeterminismUnavailable(
            f"trio {trio.__version__} has no reproducible scheduling order; simulated runs "
            "need a trio release that has it (0.22 to 0.35 do)")
    allowed, state = trio_run._ALLOW_DETERMINISTIC_SCHEDULING, generator.getstate()
    trio_run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    generator.seed(seed)
    try:
        yield
    finally:
        trio_run._ALLOW_DETERMINISTIC_SCHEDULING = allowed  # type: ignore[misc]
        generator.setstate(state)
