"""Virtual time: the simulated cluster's driver moves trio's MockClock on to the time of the next
answer, never short of it (a clock an ulp short of an answer the simulation has reached is a
simulation ahead of its clients, which the driver refuses as a bug)."""

from __future__ import annotations

import math
from pathlib import Path

import trio.testing
from hypothesis import example, given
from hypothesis import strategies as st

from kvcheck.harness.cli import main
from kvcheck.harness.exitcodes import Exit
from kvcheck.harness.virtual_time import jump_to

#: A start and a target where one jump of the difference lands an ulp short of the target.
SHORT_START, SHORT_TARGET = 0.00012819783703109304, 0.0004129766824184518

times = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)


def clock_at(start: float) -> trio.testing.MockClock:
    clock = trio.testing.MockClock()
    clock.jump(start)
    return clock


def test_one_jump_of_the_difference_can_fall_short_of_the_target() -> None:
    """Why :func:`jump_to` exists: the premise of the tests below, shown on trio's own clock."""
    clock = clock_at(SHORT_START)
    clock.jump(SHORT_TARGET - SHORT_START)
    assert clock.current_time() < SHORT_TARGET


@given(times, times)
@example(SHORT_START, SHORT_TARGET)
def test_jump_to_reaches_the_target_and_overshoots_it_by_an_ulp_at_most(
        first: float, second: float) -> None:
    start, target = sorted((first, second))
    clock = clock_at(start)
    jump_to(clock, target)
    assert target <= clock.current_time() <= math.nextafter(target, math.inf)


def test_a_simulated_run_whose_first_answers_come_within_milliseconds_completes(
        tmp_path: Path) -> None:
    """This run stopped with "the simulation ran ahead of its clients" at 3.7 ms when the driver
    jumped the clock once."""
    code = main(["run", "--backend", "sim", "--histories", str(tmp_path), "--rate", "500",
                 "--seed", "7000", "--time-limit", "2", "--nemesis", "none"])
    assert code == Exit.OK
