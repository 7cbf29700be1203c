"""Running the checkers a test asks for over one run, and writing ``results.json``.

The one place in ``checkers/`` that composes checkers. Which ones run: ``checkers`` in
``test.json`` if given, else the workload's defaults (:data:`~.guarantees.DEFAULT_CHECKERS`).
A checker that raises is reported as ``unknown`` with its error attached, as Jepsen does; it
never takes the others down.
"""

from __future__ import annotations

import dataclasses
import os
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kvcheck.checkers.convergence import check_convergence
from kvcheck.checkers.guarantees import default_checkers
from kvcheck.checkers.history import (
    Call,
    HistoryError,
    Op,
    TestConfig,
    pair_calls,
    read_final_state,
    read_history,
    read_test_config,
)
from kvcheck.checkers.linearizable import check_linearizable
from kvcheck.checkers.lost_writes import check_lost_writes
from kvcheck.checkers.result import CheckResult, Results, Verdict, write_results
from kvcheck.checkers.stale_reads import check_stale_reads
from kvcheck.checkers.stats import check_stats

HISTORY_FILE = "history.jsonl"
TEST_FILE = "test.json"
FINAL_STATE_FILE = "final-state.json"
RESULTS_FILE = "results.json"

_Checker = Callable[..., CheckResult]


def _linearizable(ops: Sequence[Op], config: TestConfig, calls: Sequence[Call],
                  final_state: Any, options: Mapping[str, Any]) -> CheckResult:
    """Registers, with compare-and-set where the history has any (``model`` overrides)."""
    cas = any(c.f == "cas" for c in calls)
    return check_linearizable(
        calls=calls, model=options.get("model") or ("cas-register" if cas else "register"),
        sibling_reads=True,  # kvcheck reads return lists of sibling values
        time_limit=options.get("time_limit", 60.0),
        memory_limit=options.get("memory_limit", 1 << 30))


CHECKERS: dict[str, _Checker] = {
    "stats": lambda ops, config, calls, fs, o: check_stats(ops, config, calls=calls),
    "stale-reads": lambda ops, config, calls, fs, o: check_stale_reads(ops, config, calls=calls),
    "lost-writes": lambda ops, config, calls, fs, o: check_lost_writes(ops, config, calls=calls),
    "convergence": lambda ops, config, calls, fs, o: check_convergence(ops, config, fs,
                                                                      calls=calls),
    "linearizable": _linearizable,
}


def checker_names(config: TestConfig, requested: Sequence[str] | None = None) -> tuple[str, ...]:
    """The checkers to run; raises ``ValueError`` naming any unknown one."""
    names = tuple(requested) if requested else (
        config.checkers or default_checkers(config.workload))
    unknown = [n for n in names if n not in CHECKERS]
    if unknown:
        raise ValueError(f"unknown checker(s): {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(CHECKERS))})")
    return names


def check_history(ops: Sequence[Op], config: TestConfig, final_state: Mapping[str, Any] | None
                  = None, checkers: Sequence[str] | None = None, **options: Any) -> Results:
    """Run the checkers over an already-read history.

    ``options``: ``time_limit`` and ``memory_limit`` (per key, for linearizability),
    ``model``. Raises :class:`HistoryError` when ops cannot be paired and ``ValueError`` for an
    unknown checker name; a checker's own crash becomes an unknown result instead.
    """
    names = checker_names(config, checkers)
    calls = pair_calls(ops)
    results = []
    for name in names:
        t0 = time.monotonic()
        try:
            res = CHECKERS[name](ops, config, calls, final_state, options)
        except Exception as e:  # a crashed checker is undecided, never valid
            tb = traceback.format_exception_only(type(e), e)[-1].strip()
            res = CheckResult(name, Verdict.UNKNOWN, {}, (), error=tb)
        figures = dict(res.figures)
        figures.setdefault("seconds", round(time.monotonic() - t0, 3))
        results.append(dataclasses.replace(res, figures=figures))
    return Results(tuple(results), {"ops": len(ops), "workload": config.workload})


def check_run(run_dir: str | os.PathLike[str], checkers: Sequence[str] | None = None,
              write: bool = True, **options: Any) -> Results:
    """Check a kvcheck run directory: ``test.json``, ``history.jsonl`` and, if present,
    ``final-state.json``; write ``results.json`` there unless ``write`` is false.

    Raises :class:`HistoryError` (naming file and line) when an input is missing or malformed,
    ``ValueError`` for an unknown checker, ``OSError`` when results cannot be written.
    """
    d = Path(run_dir)
    if not d.is_dir():
        raise HistoryError("not a run directory", d)
    config = read_test_config(d / TEST_FILE)
    ops = read_history(d / HISTORY_FILE)
    fs_path = d / FINAL_STATE_FILE
    final_state = read_final_state(fs_path) if fs_path.exists() else None
    results = check_history(ops, config, final_state, checkers, **options)
    results = Results(results.checks, {**results.meta, "run_dir": str(d)})
    if write:
        write_results(d / RESULTS_FILE, results)
    return results
