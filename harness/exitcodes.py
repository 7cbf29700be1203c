"""The exit codes of every ``kvcheck`` command, defined once; docs/running.md says what they mean.

A verdict is the exit code of ``check`` and ``run`` (0 valid, 1 invalid, 2 unknown), so bad
arguments cannot be argparse's 2: they are 254. Signals follow the shell's 128 + signal number.
Where several runs make one outcome (``run --test-count``, ``suite``) the worst code wins, in the
order of :data:`SEVERITY`: an interrupt says the most (the user stopped everything), then a test
that could not run, bad arguments, a broken guarantee, an undecided one, and last a valid one.
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Iterable

from kvcheck.checkers import Verdict


class Exit(enum.IntEnum):
    """An exit code of ``kvcheck``."""

    VALID = 0
    INVALID = 1
    UNKNOWN = 2
    INTERRUPTED = 130  # by SIGINT (Ctrl-C)
    TERMINATED = 143  # by SIGTERM
    USAGE = 254
    CRASH = 255
    OK = 0  # what commands without a verdict (serve, report, image, cleanup) exit on success

    @classmethod
    def of(cls, verdict: Verdict) -> Exit:
        """The exit code that reports ``verdict``."""
        return _OF_VERDICT[verdict]

    @classmethod
    def of_signal(cls, signum: int) -> Exit:
        """The exit code of a run stopped by ``signum`` (SIGINT or SIGTERM; KeyError else)."""
        return _OF_SIGNAL[signal.Signals(signum)]


_OF_VERDICT = {Verdict.VALID: Exit.VALID, Verdict.INVALID: Exit.INVALID,
               Verdict.UNKNOWN: Exit.UNKNOWN}
_OF_SIGNAL = {signal.SIGINT: Exit.INTERRUPTED, signal.SIGTERM: Exit.TERMINATED}

#: From the least to the most severe outcome (module docstring).
SEVERITY = (Exit.VALID, Exit.UNKNOWN, Exit.INVALID, Exit.USAGE, Exit.CRASH, Exit.TERMINATED,
            Exit.INTERRUPTED)

#: One line per code for ``--help`` (docs/running.md has the full story).
MEANING = {
    Exit.VALID: "valid: the expected guarantee held (or the command succeeded)",
    Exit.INVALID: "invalid: it did not, or a store crashed during the test",
    Exit.UNKNOWN: "unknown: a checker could not decide",
    Exit.INTERRUPTED: "interrupted by SIGINT (Ctrl-C); the cluster was torn down",
    Exit.TERMINATED: "interrupted by SIGTERM; the cluster was torn down",
    Exit.USAGE: "bad arguments",
    Exit.CRASH: "the test could not run (no Docker engine, no image, a node would not start), "
                "or kvcheck crashed",
}


def worst(codes: Iterable[int]) -> Exit:
    """The most severe of ``codes`` (each one of :class:`Exit`); ``OK`` for none.

    Raises ValueError for a code that is not an :class:`Exit`.
    """
    return max((Exit(code) for code in codes), key=SEVERITY.index, default=Exit.OK)


def describe() -> str:
    """The exit codes and their meanings, one per line, for the end of ``--help``."""
    return "exit codes:\n" + "\n".join(f"  {int(code):>3}  {text}"
                                       for code, text in MEANING.items())
