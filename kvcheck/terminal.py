"""What the commands print for people: consoles that never wrap into a pipe, and figures written
as a person would write them.

Machine-readable outputs (``--json``, ``results.json``, ``kvstore status``) keep raw numbers;
these helpers are for tables, notes, progress and messages only.
"""

from __future__ import annotations

from rich.console import Console

#: The width of a console that writes to a pipe or a file: rich would wrap at 80 columns there,
#: breaking lines that a reader greps or a log keeps; no line is this long.
UNWRAPPED_WIDTH = 1 << 20


def console(*, stderr: bool = False) -> Console:
    """A rich console on standard output (or error): as wide as the terminal if it is one,
    else wide enough that no table or message is wrapped."""
    out = Console(stderr=stderr)
    if not out.is_terminal:
        out.width = UNWRAPPED_WIDTH
    return out


def percent(fraction: float | None) -> str:
    """``0.757656`` → ``75.8 %``. A fraction that is not 0 or 1 never shows as ``0.0 %`` or
    ``100.0 %`` (``< 0.1 %``, ``> 99.9 %``); None (nothing to measure) is ``-``."""
    if fraction is None:
        return "-"
    text = f"{fraction * 100:.1f}"
    if text == "100.0" and fraction < 1:
        return "> 99.9 %"
    if text == "0.0" and fraction > 0:
        return "< 0.1 %"
    return f"{text} %"


def seconds(value: float | None) -> str:
    """A duration: ``0.42 ms``, ``4.2 ms``, ``420 ms``, ``1.25 s``, ``12.3 s``, ``4 min 05 s``,
    ``2 h 07 min``; a whole number of seconds without decimals (``0 s``, ``5 s``); None is
    ``-``."""
    if value is None:
        return "-"
    if value >= 59.95 or value == int(value):
        minutes, secs = divmod(round(value), 60)
        hours, minutes = divmod(minutes, 60)
        if hours:
            return f"{hours} h {minutes:02d} min"
        return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"
    ms = value * 1000
    if ms < 1:
        return f"{ms:.2f} ms"
    if ms < 10:
        return f"{ms:.1f} ms"
    if ms < 999.5:
        return f"{ms:.0f} ms"
    return f"{value:.2f} s" if value < 9.995 else f"{value:.1f} s"


def count(value: int | None) -> str:
    """A count with its thousands grouped: ``1234567`` → ``1,234,567``; None is ``-``."""
    return "-" if value is None else f"{value:,}"
