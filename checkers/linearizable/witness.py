"""Minimising a witness: a small failing window of a non-linearizable key's calls.

The steps and why each keeps the window's failure meaningful are in the package docstring
(:mod:`kvcheck.checkers.linearizable`, "Witnesses"). Whether a candidate fails is asked of the
caller's ``fails`` oracle, so this module knows nothing of the algorithms.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from kvcheck.checkers.linearizable.calls import ARG, INF, INV, OUT, RET, F, Prepared
from kvcheck.checkers.models import FREE, Model, Siblings

#: Windows up to this many calls are stripped call by call.
MINIMIZE_LIMIT = 64

#: ``fails(calls, init)``: whether ``calls`` have no linearization from state ``init``
#: (:data:`~kvcheck.checkers.models.FREE` for any state). False when undecided in budget.
Oracle = Callable[[Sequence[Prepared], Any], bool]


def failing_window(ops: Sequence[Prepared], model: Model, fails: Oracle, deadline: float,
                   prefix_end: int | None = None) -> tuple[list[Prepared], bool]:
    """A small non-linearizable sub-history of the non-linearizable ``ops`` (from the
    ``model``'s initial state).

    ``prefix_end``: the completion position that ends the shortest failing prefix, where the
    caller knows it (the search does); else it is searched for. Returns ``(window,
    from_any_state)``: the window fails on its own from ``init`` when it starts at the first
    call, else (``from_any_state``) from any state. Stops refining when ``deadline``
    (``time.monotonic()``) passes, returning the best window found so far.
    """
    ops = (_prefix(sorted(ops), prefix_end + 1) if prefix_end is not None
           else _shortest_failing_prefix(sorted(ops), model.init, fails, deadline))
    window, from_any = _latest_failing_cut(ops, fails, deadline)
    if len(window) <= MINIMIZE_LIMIT:
        window = _strip(window, model, FREE if from_any else model.init, fails, deadline)
    return window, from_any


def _prefix(ops: Sequence[Prepared], p: int) -> list[Prepared]:
    """The history up to position ``p`` (exclusive): later completions become indeterminate
    (and reads completing later are dropped: an indeterminate read constrains nothing)."""
    out = []
    for op in ops:
        if op[INV] >= p:
            break
        if op[RET] >= p:
            if op[F] != "read":
                inv, _ret, f, arg, value, names = op
                out.append((inv, INF, f, arg, value, names))
            continue
        out.append(op)
    return out


def _shortest_failing_prefix(ops: list[Prepared], init: Any, fails: Oracle,
                             deadline: float) -> list[Prepared]:
    """Binary search over completion positions for the shortest prefix that still fails."""
    rets = sorted({op[RET] for op in ops if op[RET] != INF})
    lo, hi = 0, len(rets) - 1
    best = ops
    while lo <= hi and time.monotonic() < deadline:
        mid = (lo + hi) // 2
        cand = _prefix(ops, rets[mid] + 1)
        if fails(cand, init):
            best, hi = cand, mid - 1
        else:
            lo = mid + 1
    return best


def _latest_failing_cut(ops: list[Prepared], fails: Oracle,
                        deadline: float) -> tuple[list[Prepared], bool]:
    """The window from the latest cut that still fails from any state, else ``ops`` whole.

    A cut is a position before which every determinate call completed before any call from
    it on began; indeterminate calls from before the cut stay in the window, still optional.
    Returns ``(window, whether it was cut)``.
    """
    cuts = []
    maxret = -1
    for j, op in enumerate(ops):
        if j > 0 and maxret < op[INV]:
            cuts.append(j)
        if op[RET] != INF:
            maxret = max(maxret, op[RET])
    open_before = [0] * (len(ops) + 1)
    for j, op in enumerate(ops):
        open_before[j + 1] = open_before[j] + (op[RET] == INF)

    def window_at(j: int) -> list[Prepared]:
        if not open_before[j]:
            return list(ops[j:])
        return [op for op in ops[:j] if op[RET] == INF] + list(ops[j:])

    # Gallop back from the latest cut, then binary search between the first failing cut and
    # the last one seen not to fail.
    step = 1
    prev_ok = len(cuts)
    while cuts and time.monotonic() < deadline:
        k = len(cuts) - step
        if k < 0:
            break
        cand = window_at(cuts[k])
        if fails(cand, FREE):
            window = cand
            lo, hi = k + 1, prev_ok - 1
            while lo <= hi and time.monotonic() < deadline:
                mid = (lo + hi) // 2
                later = window_at(cuts[mid])
                if fails(later, FREE):
                    window, lo = later, mid + 1
                else:
                    hi = mid - 1
            return window, True
        prev_ok = k
        step *= 2
        if step > len(cuts) and k > 0:
            step = len(cuts)
    return ops, False


def _strip(window: list[Prepared], model: Model, init: Any, fails: Oracle,
           deadline: float) -> list[Prepared]:
    """Remove, from the last call back, each call the window still fails without."""
    i = len(window) - 1
    while i >= 0 and time.monotonic() < deadline:
        op = window[i]
        # Removing a call that never changes the state (an observer) or whose written value
        # no one observes keeps a linearizable history linearizable.
        if model.observer(op[F], op[ARG]) or not _observed(op, window):
            cand = window[:i] + window[i + 1:]
            if cand and fails(cand, init):
                window = cand
        i -= 1
    return window


def _observed(op: Prepared, window: Sequence[Prepared]) -> bool:
    """Whether some other call in ``window`` may have observed the value ``op`` wrote."""
    v = op[ARG] if op[F] == "write" else op[ARG][1]
    for o in window:
        if o is op:
            continue
        if o[F] == "read" and (o[OUT] == v or isinstance(o[OUT], Siblings)):
            return True
        if o[F] == "cas" and o[ARG][0] == v:
            return True
    return False
