"""A brute-force linearizability reference, written independently of checkers.linearizable.

It tries every order of the calls that respects real time (call a precedes b when a completed
before b was invoked), where ``fail`` calls are absent and ``info``/unfinished calls may be
left out entirely; an indeterminate read may return anything. Exponential: small histories only.
"""

from __future__ import annotations

from typing import Any

from kvcheck.checkers.history import Call

_ANY = object()


def _legal(state: Any, call: Call, sibling_reads: bool) -> tuple[bool, Any]:
    f = call.f
    determinate = call.type == "ok"
    if f == "read":
        if not determinate:
            return True, state
        v = call.value_out
        if isinstance(v, list | tuple) and sibling_reads:
            if len(v) >= 2:
                return False, state
            v = v[0] if v else None
        if state is _ANY:
            return True, v
        return v == state, state
    if f == "write":
        return True, call.value_in
    if f == "cas":
        old, new = call.value_in
        if state is _ANY or state == old:
            return True, new
        return False, state
    raise ValueError(f)


def linearizable(calls: list[Call], init: Any = None, sibling_reads: bool = False) -> bool:
    """Whether ``calls`` (one key) have a linearization from ``init`` (``"any"`` for any)."""
    calls = [c for c in calls if c.type != "fail"]
    n = len(calls)
    must = [c.type == "ok" for c in calls]
    ret = [c.complete.index if c.type == "ok" else None for c in calls]
    inv = [c.invoke.index for c in calls]
    preds = [
        [j for j in range(n) if ret[j] is not None and ret[j] < inv[i]] for i in range(n)
    ]

    def search(done: frozenset[int], skipped: frozenset[int], state: Any) -> bool:
        if all(i in done or i in skipped or not must[i] for i in range(n)):
            return True
        for i in range(n):
            if i in done or i in skipped:
                continue
            if any(j not in done and j not in skipped for j in preds[i]):
                continue
            ok, nxt = _legal(state, calls[i], sibling_reads)
            if ok and search(done | {i}, skipped, nxt):
                return True
            # An indeterminate call may never happen: but only drop it once we pass it.
            if not must[i] and search(done, skipped | {i}, state):
                return True
        return False

    start = _ANY if init == "any" else init
    return search(frozenset(), frozenset(), start)
