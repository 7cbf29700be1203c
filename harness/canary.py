"""Canaries: a known-unsafe test passes only when it is caught for the right reason.

A canary is a configuration known to break a promise (``known-unsafe`` in a suite file). It
names the anomaly it must produce (``expect-anomaly``, one of
:data:`~kvcheck.checkers.ANOMALY_KINDS`), and :func:`judge_canary` decides whether the run
showed it: the run finished, no node crashed, and the checker that reports that kind found
it and judged the run invalid for it. Everything else fails the canary, each with its own
message naming what was expected and what happened instead: the test did not finish, the
store crashed (a crash is not the anomaly, even if the anomaly was found too), another
anomaly was found, the anomaly was only measured, the checkers could not decide, or nothing
was found at all (the canary went quiet).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kvcheck.checkers import ANOMALY_KINDS, Verdict
from kvcheck.harness.exitcodes import MEANING, Exit


@dataclass(frozen=True, slots=True)
class CanaryOutcome:
    """Whether a canary was caught for the right reason, and what happened, in words."""

    caught: bool
    message: str


def judge_canary(expected: str, results: Mapping[str, Any] | None, exit_code: int,
                 crashed: Sequence[str] = ()) -> CanaryOutcome:
    """Judge a known-unsafe run that must produce an ``expected`` anomaly, from its
    ``results.json`` content (None if the run did not finish), its ``kvcheck run`` exit code
    and the nodes that crashed during it (module docstring). Raises ``ValueError`` for an
    ``expected`` that is not an anomaly kind."""
    checker = ANOMALY_KINDS.get(expected)
    if checker is None:
        raise ValueError(f"not an anomaly kind: {expected!r}")
    want = f"expected {expected} (from {checker})"
    if results is None:
        return CanaryOutcome(False, f"{want}, but the test did not finish "
                                    f"(exit {exit_code}: {_exit_meaning(exit_code)})")
    checks: Mapping[str, Any] = results.get("checkers") or {}
    found = {kind: (name, n) for name, check in checks.items()
             for kind, n in (check.get("anomaly_counts") or {}).items()}
    if crashed:
        also = f"; {expected} was found too" if expected in found else ""
        return CanaryOutcome(False, f"{want}, but the store crashed on "
                                    f"{', '.join(sorted(set(crashed)))} during the test{also}: "
                                    "a crash is not the anomaly")
    if expected in found:
        name, n = found[expected]
        verdict = Verdict.read((checks.get(name) or {}).get("valid"))
        if verdict is Verdict.INVALID:
            return CanaryOutcome(True, f"caught: {name} found {n} {expected} anomal"
                                       f"{'y' if n == 1 else 'ies'}")
        return CanaryOutcome(False, f"{want}: {name} found {n}, but judged the run "
                                    f"{verdict.value} (the test's guarantee does not forbid "
                                    "them: declare one that does with expect)")
    if found:
        others = ", ".join(f"{kind}: {n} ({name})" for kind, (name, n) in found.items())
        return CanaryOutcome(False, f"{want}, found instead {others}")
    verdict = Verdict.read(results.get("valid"))
    if verdict is Verdict.UNKNOWN:
        undecided = "; ".join(f"{name}: {check.get('error') or check.get('basis') or '?'}"
                              for name, check in checks.items()
                              if Verdict.read(check.get("valid")) is Verdict.UNKNOWN)
        return CanaryOutcome(False, f"{want}, but the checkers could not decide ({undecided})")
    return CanaryOutcome(False, f"{want}, found no anomaly: the run was judged "
                                f"{verdict.value}; the checkers (or the nemesis) no longer "
                                "catch what they must")


def _exit_meaning(code: int) -> str:
    try:
        return MEANING[Exit(code)]
    except (KeyError, ValueError):
        return "an unexpected exit code"
