"""Checking keys: deciding one key within its budget, and every key of a history in parallel.

The public entry point is :func:`check_linearizable`; :func:`check_key` checks one key's
prepared calls. See the package docstring (:mod:`kvcheck.checkers.linearizable`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kvcheck.checkers.history import OK, Call, Op, by_key, pair_calls
from kvcheck.checkers.linearizable.calls import Prepared, prepare, witness_names
from kvcheck.checkers.linearizable.search import OutOfBudget, search
from kvcheck.checkers.linearizable.unique import NotApplicable, check_unique
from kvcheck.checkers.linearizable.witness import failing_window
from kvcheck.checkers.models import Model, get_model
from kvcheck.checkers.result import Anomaly, CheckResult, Verdict, combine

#: Keys that need a search are checked in a process pool when they hold at least this many
#: calls in all (and there are several such keys and CPUs).
PARALLEL_THRESHOLD = 5_000

UNIQUE_VALUES, WGL = "unique-values", "wgl"
#: The operations that observe a register's value when they succeed: the evidence a verdict
#: rests on (a history whose writes were never observed is unknown, not valid).
OBSERVING = ("read", "cas")


@dataclass(frozen=True, slots=True)
class KeyResult:
    """The verdict for one key. ``witness`` names history indexes (see the package docstring);
    ``details`` holds ``witness_calls`` and ``from_any_state`` for an invalid key."""

    key: Any
    valid: Verdict
    algorithm: str
    calls: int
    seconds: float
    witness: tuple[int, ...] = ()
    message: str = ""
    configurations: int = 0
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Decision:
    """Whether one key's calls are linearizable, and by which algorithm. ``witness`` holds
    positions in the calls: the unique-value algorithm's clashing clusters (a search names
    none: its witness is minimised afterwards, from the shortest failing prefix, which ends
    at the completion position ``failing_prefix_end`` where the search knows it)."""

    linearizable: bool
    algorithm: str
    witness: tuple[int, ...] = ()
    message: str = ""
    configurations: int = 0
    failing_prefix_end: int | None = None


def _decide_unique(ops: Sequence[Prepared], init: Any) -> _Decision:
    """The unique-value algorithm's decision; raises :class:`NotApplicable`."""
    ok, witness, message = check_unique(ops, init)
    return _Decision(ok, UNIQUE_VALUES, tuple(sorted(set(witness))), message)


def _decide(ops: Sequence[Prepared], model: Model, init: Any, deadline: float,
            memory_limit: int) -> _Decision:
    """The unique-value algorithm's decision where it applies, else the search's.

    Raises :class:`OutOfBudget` when the search runs out of time or memory.
    """
    try:
        return _decide_unique(ops, init)
    except NotApplicable:
        pass
    ok, configurations, frontier = search(ops, model, init, deadline, memory_limit)
    return _Decision(ok, WGL, message="" if ok else "no linearization exists",
                     configurations=configurations, failing_prefix_end=frontier)


def _key_result(key: Any, ops: Sequence[Prepared], decision: _Decision, seconds: float,
                witness: Sequence[Prepared] = (), from_any_state: bool = False) -> KeyResult:
    """The :class:`KeyResult` of a decision; ``witness`` are the calls an invalid key names."""
    if decision.linearizable:
        return KeyResult(key, Verdict.VALID, decision.algorithm, len(ops), seconds,
                         configurations=decision.configurations)
    return KeyResult(key, Verdict.INVALID, decision.algorithm, len(ops), seconds,
                     witness=witness_names(witness), message=decision.message,
                     configurations=decision.configurations,
                     details={"witness_calls": len(witness), "from_any_state": from_any_state})


def check_key(key: Any, ops: Sequence[Prepared], model: Model | str, time_limit: float = 60.0,
              memory_limit: int = 1 << 30, minimize: bool = True) -> KeyResult:
    """Check one key's prepared calls (see :func:`~.calls.prepare`) under ``model``.

    ``time_limit`` (seconds) and ``memory_limit`` (bytes of memo table) bound the search; a
    witness is then minimised in the rest of the time, at least five seconds. Never raises for
    budget reasons: a search that runs out of time or memory gives ``Verdict.UNKNOWN``.
    """
    if isinstance(model, str):
        model = get_model(model)
    t0 = time.monotonic()
    deadline = t0 + time_limit
    ops = sorted(ops)
    try:
        decision = _decide(ops, model, model.init, deadline, memory_limit)
    except OutOfBudget as b:
        return KeyResult(key, Verdict.UNKNOWN, WGL, len(ops), time.monotonic() - t0,
                         message=_out_of_budget(b))
    from_any = False
    if decision.linearizable:
        witness: Sequence[Prepared] = ()
    elif decision.witness:
        witness = [ops[i] for i in decision.witness]
    elif minimize:
        window_deadline = max(deadline, time.monotonic() + 5.0)

        def fails(calls: Sequence[Prepared], init: Any) -> bool:
            try:
                return not _decide(calls, model, init, window_deadline,
                                   memory_limit).linearizable
            except OutOfBudget:
                return False

        witness, from_any = failing_window(ops, model, fails, window_deadline,
                                           decision.failing_prefix_end)
    else:
        witness = ops
    return _key_result(key, ops, decision, time.monotonic() - t0, witness, from_any)


def _out_of_budget(exc: OutOfBudget) -> str:
    """Why a key is unknown, and how far its search got."""
    if exc.linearized_before is None:
        return f"out of {exc.reason} budget"
    return (f"out of {exc.reason} budget; the calls before op {exc.linearized_before} have a "
            "linearization, none was found past it")


def _check_keys(batch: list[tuple[Any, list[Prepared]]], model_name: str, time_limit: float,
                memory_limit: int, minimize: bool) -> list[KeyResult]:
    return [check_key(k, ops, model_name, time_limit, memory_limit, minimize) for k, ops in batch]


def check_linearizable(
    history: Sequence[Op] | None = None,
    model: str = "register",
    *,
    calls: Sequence[Call] | None = None,
    sibling_reads: bool = False,
    time_limit: float = 60.0,
    memory_limit: int = 1 << 30,
    workers: int | None = None,
    minimize: bool = True,
) -> CheckResult:
    """Check that each key's sub-history is linearizable with respect to ``model``.

    Give the ``history`` (ops; they are paired) or already-paired ``calls``. ``time_limit``
    (seconds) and ``memory_limit`` (bytes, for the search's memo table) apply per key.
    ``workers``: processes for searching keys in parallel (default: the CPU count when the keys
    that need a search hold at least :data:`PARALLEL_THRESHOLD` calls, else 1). Keys the
    unique-value algorithm decides are always decided in this process. ``minimize``: whether
    to minimise a search's witness (else it names every call of the key).

    Returns a :class:`CheckResult` named ``"linearizable"``: invalid if any key has no
    linearization (one ``nonlinearizable`` anomaly per such key, naming its witness ops),
    else unknown if any key ran out of budget, else valid. Raises :class:`HistoryError` for
    calls the model does not know and for unpaired ops.
    """
    t0 = time.monotonic()
    m = get_model(model)
    if calls is None:
        if history is None:
            raise TypeError("give history or calls")
        calls = pair_calls(history)
    prepared = [(k, prepare(cs, m, sibling_reads)) for k, cs in by_key(calls).items()]
    total = sum(len(p) for _, p in prepared)
    results: list[KeyResult] = []
    searches: list[tuple[Any, list[Prepared]]] = []
    for k, ops in prepared:
        # The unique-value algorithm is fast enough that shipping keys to workers never pays.
        ops.sort()
        t1 = time.monotonic()
        try:
            decision = _decide_unique(ops, m.init)
        except NotApplicable:
            searches.append((k, ops))
            continue
        witness = [ops[i] for i in decision.witness]
        results.append(_key_result(k, ops, decision, time.monotonic() - t1, witness))
    search_calls = sum(len(p) for _, p in searches)
    if workers is None:
        workers = (os.cpu_count() or 1) if search_calls >= PARALLEL_THRESHOLD else 1
    workers = max(1, min(workers, len(searches)))
    if workers == 1:
        results.extend(_check_keys(searches, m.name, time_limit, memory_limit, minimize))
    else:
        results.extend(_check_in_pool(searches, workers, m.name, time_limit, memory_limit,
                                      minimize))
    order = {k: i for i, (k, _) in enumerate(prepared)}
    results.sort(key=lambda r: order[r.key])
    observed = sum(1 for c in calls if c.type == OK and c.f in OBSERVING)
    return _summarize(results, m, total, observed, time.monotonic() - t0, workers)


def _check_in_pool(searches: list[tuple[Any, list[Prepared]]], workers: int, model_name: str,
                   time_limit: float, memory_limit: int, minimize: bool) -> list[KeyResult]:
    """Check keys in ``workers`` processes: biggest keys first, dealt round-robin into several
    batches per worker. The start method is the caller's (multiprocessing's default, or
    ``set_start_method``)."""
    searches = sorted(searches, key=lambda kp: -len(kp[1]))
    nbatches = workers * 4
    batches: list[list[tuple[Any, list[Prepared]]]] = [[] for _ in range(nbatches)]
    for i, kp in enumerate(searches):
        batches[i % nbatches].append(kp)
    results: list[KeyResult] = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_check_keys, b, model_name, time_limit, memory_limit, minimize)
                   for b in batches if b]
        for fut in futures:
            results.extend(fut.result())
    return results


def _summarize(results: list[KeyResult], model: Model, total: int, observed: int,
               seconds: float, workers: int) -> CheckResult:
    anomalies = []
    unknown_keys = []
    algorithms: dict[str, int] = {}
    for r in results:
        algorithms[r.algorithm] = algorithms.get(r.algorithm, 0) + 1
        if r.valid is Verdict.INVALID:
            anomalies.append(Anomaly(
                "nonlinearizable", r.witness, r.message, key=r.key,
                details={"algorithm": r.algorithm, "window": [min(r.witness), max(r.witness)]
                         if r.witness else None, **r.details}))
        elif r.valid is Verdict.UNKNOWN:
            unknown_keys.append({"key": r.key, "reason": r.message})
    valid = combine(r.valid for r in results)
    figures = {
        "model": model.name,
        "keys": len(results),
        "calls": total,
        "invalid_keys": len(anomalies),
        "unknown_keys": unknown_keys,
        "algorithms": algorithms,
        "workers": workers,
        "seconds": round(seconds, 3),
        "slowest_key_seconds": round(max((r.seconds for r in results), default=0.0), 3),
    }
    basis = (f"{total:,} calls over {len(results):,} key(s), {observed:,} of them reads or "
             "compare-and-sets that succeeded")
    if valid is Verdict.VALID and not observed:
        valid = Verdict.UNKNOWN
        basis = "no read or compare-and-set succeeded: no call observed the registers"
    return CheckResult("linearizable", valid, figures, tuple(anomalies), basis=basis)
