"""Linearizability, per key, of register and compare-and-set register histories.

Theory of operation
===================

Timing rule. Each call occupies the closed interval from its invocation line to its completion
line, measured in history positions (``index``), not in nanoseconds: the history's order is the
one order every recorded event agrees on, and positions never tie. Call ``a`` precedes call
``b`` in real time iff ``a``'s completion comes before ``b``'s invocation; otherwise they are
concurrent. Worked case: ``w(1)`` at [0, 3] and ``r->1`` at [1, 2] overlap, so the read may be
linearized after the write although it completed first.

What is checked. ``fail`` calls did not happen and are removed. ``info`` calls (and calls the
history ends before completing) are *indeterminate*: they may take effect at any point after
their invocation, or never; they stay open to the end. An indeterminate read has no effect and
constrains nothing, so it is removed.

P-compositionality. Linearizability is local: a history is linearizable iff each key's
sub-history is. Keys are checked independently -- in a process pool when the history is large
enough for that to pay -- each within its own time and memory budget; a key that exceeds its
budget is ``unknown``, never guessed.

Two algorithms.

* Unique values (:func:`_check_unique`), used when every write to the key writes a distinct
  value, no write writes the initial value ``nil``, and there is no ``cas``. Every read then
  names the write it read from, and the history is linearizable iff (Gibbons & Korach 1997,
  "Testing shared memories"; the zone form is Golab, Li & Shah 2011): every read returns a value
  some write wrote (or the initial value), no read completes before its write is invoked, no two
  *forward zones* overlap, and no *backward zone* lies inside a forward zone. A cluster is a
  write and the reads of its value; with ``f`` its earliest completion and ``s`` its latest
  invocation, its zone is forward ``(f, s)`` when ``f < s``, else backward ``(s, f)``. The
  initial value is a write at position -1. An indeterminate write no read observed is dropped
  (it may never have happened); one that was observed took effect and completes "at infinity".
  O(n log n).
* Otherwise Wing & Gong's search with Lowe's memoization (:func:`_wgl`), as in Porcupine: a
  depth-first search over linearization orders of the invocation/completion list, pruning every
  (set of linearized calls, model state) configuration already explored. Two refinements for
  indeterminate calls, which an eager search linearizes needlessly: at each step determinate
  candidates are tried before indeterminate ones, and a configuration is also pruned when an
  explored one had the same linearized determinate calls and state and a *subset* of its
  linearized indeterminate calls (it had every option this one has). Both are checked against
  a brute-force reference in the tests.

Witnesses. A non-linearizable key names a small set of calls that on their own have no
linearization. The unique-value algorithm names the (at most six) calls that fix the two
clashing zones. After a search, the witness is the smallest failing *window*: the shortest
failing prefix, cut from the left at the latest point before which every determinate call
completed (so none of them can be linearized inside the window, which starts from an unknown
state; earlier indeterminate calls stay in it, still optional), then stripped one by one of
reads and of writes nobody observes while it stays non-linearizable. Each step only ever keeps
a sub-history that is non-linearizable on its own and whose non-linearizability implies the
whole history's.
"""

from __future__ import annotations

import bisect
import itertools
import os
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kvcheck.checkers.history import FAIL, OK, Call, HistoryError, Op, pair_calls
from kvcheck.checkers.models import FREE, Model, Siblings, get_model
from kvcheck.checkers.result import Anomaly, CheckResult, Verdict, combine

INF = sys.maxsize

#: Keys that need a search are checked in a process pool when they hold at least this many
#: calls in all (and there are several such keys and CPUs).
PARALLEL_THRESHOLD = 5_000
#: Windows up to this many calls are stripped call by call.
MINIMIZE_LIMIT = 64

# A prepared call: (inv, ret, f, arg, out, names). ``ret`` is INF for an indeterminate call;
# ``names`` are the history indexes of its lines.
LinOp = tuple[int, int, str, Any, Any, tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class KeyResult:
    """The verdict for one key. ``witness`` names history indexes (see module docstring)."""

    key: Any
    valid: Verdict
    algorithm: str
    calls: int
    seconds: float
    witness: tuple[int, ...] = ()
    message: str = ""
    configurations: int = 0
    details: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Preparing calls


def _hashable(v: Any) -> Any:
    if isinstance(v, list | tuple):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return frozenset((k, _hashable(x)) for k, x in v.items())
    if isinstance(v, set):
        return frozenset(_hashable(x) for x in v)
    return v


def prepare(calls: Iterable[Call], model: Model, sibling_reads: bool = False) -> list[LinOp]:
    """Turn one key's calls into the checker's compact form, in invocation order.

    With ``sibling_reads`` (kvcheck's register workload), a read's value that is a list means
    sibling versions: ``[]`` reads as nil, ``[v]`` as ``v``, two or more as :class:`Siblings`.
    Raises :class:`HistoryError` for an op the model does not know or a malformed ``cas``.
    """
    out: list[LinOp] = []
    for c in calls:
        t = c.type
        if t == FAIL:
            continue
        f = c.f
        if f == "delete" and sibling_reads:
            # kvcheck's delete: the key reads as the empty value, i.e. a write of nil.
            out.append((c.inv_index, INF if t != OK else c.complete.index,  # type: ignore[union-attr]
                        "write", None, None, c.indexes))
            continue
        if f not in model.fs:
            raise HistoryError(f"op {c.inv_index}: f {f!r} is not an op of the "
                               f"{model.name} model ({', '.join(sorted(model.fs))})")
        ret = INF
        if t == OK:
            ret = c.complete.index  # type: ignore[union-attr]
        if f == "read":
            if t != OK:
                continue
            v = c.value_out
            if sibling_reads and isinstance(v, list | tuple):
                v = None if not v else v[0] if len(v) == 1 else Siblings(tuple(v))
            out.append((c.inv_index, ret, f, None, _hashable(v), c.indexes))
        elif f == "write":
            out.append((c.inv_index, ret, f, _hashable(c.value_in), None, c.indexes))
        else:  # cas
            v = c.value_in
            if not (isinstance(v, list | tuple) and len(v) == 2):
                raise HistoryError(f"op {c.inv_index}: cas value must be [old, new], got {v!r}")
            out.append((c.inv_index, ret, f, _hashable(v), None, c.indexes))
    return out


# --------------------------------------------------------------------------------------------
# Unique-value registers


class _NotApplicable(Exception):
    pass


def _check_unique(ops: Sequence[LinOp], init: Any) -> tuple[bool, list[int], str]:
    """Decide a unique-value register history in O(n log n).

    Returns ``(linearizable, witness positions in ops, message)``. ``init`` may be
    :data:`FREE`. Raises :class:`_NotApplicable` if values are not unique, a write writes the
    initial value, values are unhashable, or there is a ``cas``.
    """
    free = init is FREE
    writes: dict[Any, int] = {}
    for i, op in enumerate(ops):
        f = op[2]
        if f == "write":
            v = op[3]
            try:
                if v in writes or (not free and v == init):
                    raise _NotApplicable
            except TypeError:
                raise _NotApplicable from None
            writes[v] = i
        elif f != "read":
            raise _NotApplicable
    # cluster: [min_ret, argmin, max_inv, argmax, write position or -1]
    clusters: dict[Any, list[int]] = {}
    init_value: Any = FREE if free else init
    init_reader = -1
    for i, (inv, ret, f, _arg, out, _names) in enumerate(ops):
        if f != "read":
            continue
        if isinstance(out, Siblings):
            return False, [i], "a read returned several sibling values"
        try:
            w = writes.get(out)
        except TypeError:
            raise _NotApplicable from None
        if w is not None:
            winv = ops[w][0]
            if ret < winv:
                if free:  # the unknown initial state may be this very value: search instead
                    raise _NotApplicable
                return False, [i, w], "a read completed before the write of its value began"
            cl = clusters.get(out)
            if cl is None:
                wret = ops[w][1]
                cl = clusters[out] = [wret, w, winv, w, w]
        else:
            if init_value is FREE:
                init_value, init_reader = out, i
            elif out != init_value:
                if free:
                    return (False, [init_reader, i],
                            "two reads of different values that no write wrote")
                return False, [i], "a read returned a value that no write wrote"
            cl = clusters.get(_INIT_KEY)
            if cl is None:
                cl = clusters[_INIT_KEY] = [-1, -1, -1, -1, -1]
        if ret < cl[0]:
            cl[0], cl[1] = ret, i
        if inv > cl[2]:
            cl[2], cl[3] = inv, i
    for v, w in writes.items():
        if v not in clusters and ops[w][1] != INF:
            op = ops[w]
            clusters[v] = [op[1], w, op[0], w, w]
    forward: list[tuple[int, int, list[int]]] = []
    backward: list[tuple[int, int, list[int]]] = []
    for cl in clusters.values():
        f_, s_ = cl[0], cl[2]
        (forward if f_ < s_ else backward).append((f_, s_, cl) if f_ < s_ else (s_, f_, cl))
    forward.sort(key=lambda z: z[0])
    for a, b in itertools.pairwise(forward):
        if b[0] < a[1]:
            return False, _zone_ops(a[2]) + _zone_ops(b[2]), "two forward zones overlap"
    starts = [z[0] for z in forward]
    for lo, hi, cl in backward:
        j = bisect.bisect_left(starts, lo) - 1
        if j >= 0 and hi < forward[j][1]:
            return (False, _zone_ops(forward[j][2]) + _zone_ops(cl),
                    "a write and its reads lie inside another value's forward zone")
    return True, [], ""


_INIT_KEY = object()


def _zone_ops(cl: list[int]) -> list[int]:
    return [i for i in {cl[1], cl[3], cl[4]} if i >= 0]


# --------------------------------------------------------------------------------------------
# Wing & Gong with Lowe's memoization


class _Budget(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _wgl(ops: Sequence[LinOp], model: Model, init: Any, deadline: float,
         memory_limit: int) -> tuple[bool, int]:
    """Search for a linearization; returns ``(found, configurations explored)``.

    Raises :class:`_Budget` past ``deadline`` (``time.monotonic()``) or when the memo table's
    estimated size passes ``memory_limit`` bytes.
    """
    n = len(ops)
    if n == 0:
        return True, 0
    step = model.step
    events = []
    for i, op in enumerate(ops):
        events.append((op[0], 0, i))
        events.append((op[1], 1, i))
    events.sort()
    m = len(events)
    # Doubly linked list over nodes 1..m; node 0 is the head, node m + 1 the tail.
    nxt = [*range(1, m + 2), m + 1]
    prv = [0, *range(0, m + 1)]
    is_call = [False] * (m + 2)
    op_of = [0] * (m + 2)
    call_node = [0] * n
    ret_node = [0] * n
    indeterminate = [False] * (m + 2)
    for k, (_pos, kind, i) in enumerate(events, 1):
        op_of[k] = i
        if kind == 0:
            is_call[k] = True
            call_node[i] = k
        else:
            ret_node[i] = k
            indeterminate[k] = ops[i][1] == INF
    tail = m + 1
    # Determinate and indeterminate calls get separate bit numbers: D, the set of linearized
    # determinate calls, is stored shifted past its lowest unset bit (every call below it is
    # linearized), which keeps memo keys small; S, the set of linearized indeterminate calls,
    # is kept beside it for the dominance rule below.
    bit = [0] * n
    info = [False] * n
    nd = ni = 0
    for i, op in enumerate(ops):
        if op[1] == INF:
            info[i] = True
            bit[i] = 1 << ni
            ni += 1
        else:
            bit[i] = 1 << nd
            nd += 1
    per_entry = 200 + ni // 8
    max_entries = max(1, memory_limit // per_entry)
    # Memo: (z, D >> z, state) -> the sets S explored with it. A configuration whose S
    # includes an explored S' is pruned: it has the same choices left, fewer optional ones.
    cache: dict[tuple[int, int, Any], Any] = {}
    entries = 0
    stack: list[tuple[int, Any]] = []
    dset = 0
    sset = 0
    state = init
    entry = nxt[0]
    # Candidates at each level (the calls before the first return entry) are tried in two
    # phases: determinate calls first, then indeterminate ones, which are optional and which an
    # eager search would linearize needlessly.
    phase = False
    steps = 0
    while True:
        steps += 1
        if steps & 0xFFF == 1:  # the first step too: a spent budget is never ignored
            if time.monotonic() > deadline:
                raise _Budget("time")
            if entries > max_entries:
                raise _Budget("memory")
        if is_call[entry]:
            i = op_of[entry]
            if info[i] is not phase:
                entry = nxt[entry]
                continue
            op = ops[i]
            legal, new_state = step(state, op[2], op[3], op[4])
            if legal:
                if phase:
                    nd_set, ns_set = dset, sset | bit[i]
                else:
                    nd_set, ns_set = dset | bit[i], sset
                z = (~nd_set & (nd_set + 1)).bit_length() - 1
                k = (z, nd_set >> z, new_state)
                seen = cache.get(k)
                fresh = True
                if seen is None:
                    cache[k] = ns_set
                elif type(seen) is int:
                    if seen & ~ns_set == 0:
                        fresh = False
                    else:
                        cache[k] = [seen, ns_set]
                elif any(s0 & ~ns_set == 0 for s0 in seen):
                    fresh = False
                else:
                    seen.append(ns_set)
                if fresh:
                    entries += 1
                    stack.append((i, state))
                    dset, sset, state = nd_set, ns_set, new_state
                    # lift the call and its return
                    c, r = entry, ret_node[i]
                    nxt[prv[c]] = nxt[c]
                    prv[nxt[c]] = prv[c]
                    nxt[prv[r]] = nxt[r]
                    prv[nxt[r]] = prv[r]
                    entry = nxt[0]
                    phase = False
                    continue
            entry = nxt[entry]
        elif not phase:
            if entry == tail or indeterminate[entry]:
                # Every determinate call is linearized; the rest may never have happened.
                return True, entries
            phase = True
            entry = nxt[0]
        else:
            if not stack:
                return False, entries
            i, state = stack.pop()
            if info[i]:
                sset &= ~bit[i]
            else:
                dset &= ~bit[i]
            c, r = call_node[i], ret_node[i]
            nxt[prv[r]] = r
            prv[nxt[r]] = r
            nxt[prv[c]] = c
            prv[nxt[c]] = c
            entry = nxt[c]
            phase = info[i]


# --------------------------------------------------------------------------------------------
# One key


def _decide(ops: Sequence[LinOp], model: Model, init: Any, deadline: float,
            memory_limit: int) -> tuple[bool, str, list[int], str, int]:
    """``(linearizable, algorithm, witness positions, message, configurations)``.

    The witness is only filled by the unique-value algorithm. Raises :class:`_Budget`.
    """
    try:
        ok, wit, msg = _check_unique(ops, init)
        return ok, "unique-values", wit, msg, 0
    except _NotApplicable:
        pass
    ok, confs = _wgl(ops, model, init, deadline, memory_limit)
    return ok, "wgl", [], "" if ok else "no linearization exists", confs


def _prefix(ops: Sequence[LinOp], p: int) -> list[LinOp]:
    """The history up to position ``p`` (exclusive): later completions become indeterminate."""
    out = []
    for op in ops:
        if op[0] >= p:
            break
        if op[1] >= p:
            if op[2] == "read":
                continue
            out.append((op[0], INF, *op[2:]))
            continue
        out.append(op)
    return out


def _fails(ops: Sequence[LinOp], model: Model, init: Any, deadline: float,
           memory_limit: int) -> bool:
    try:
        return not _decide(ops, model, init, deadline, memory_limit)[0]
    except _Budget:
        return False


def _minimize(ops: Sequence[LinOp], model: Model, deadline: float,
              memory_limit: int) -> tuple[list[LinOp], bool]:
    """A small non-linearizable sub-history of the non-linearizable ``ops`` (see module doc).

    Stops refining when the deadline passes; whatever it returns is non-linearizable on its own
    (from the model's initial state when it starts at the first call, else from any state).
    """
    ops = sorted(ops)
    # 1. Shortest failing prefix, by binary search over completion positions.
    rets = sorted({op[1] for op in ops if op[1] != INF})
    lo, hi = 0, len(rets) - 1
    best = ops
    while lo <= hi and time.monotonic() < deadline:
        mid = (lo + hi) // 2
        cand = _prefix(ops, rets[mid] + 1)
        if _fails(cand, model, model.init, deadline, memory_limit):
            best, hi = cand, mid - 1
        else:
            lo = mid + 1
    ops = best
    # 2. Latest cut: every determinate call before it completed before any call from it on
    #    began. Indeterminate calls from before the cut stay in the window, still optional.
    cuts = []
    maxret = -1
    for j, op in enumerate(ops):
        if j > 0 and maxret < op[0]:
            cuts.append(j)
        if op[1] != INF:
            maxret = max(maxret, op[1])
    open_before = [0] * (len(ops) + 1)
    for j, op in enumerate(ops):
        open_before[j + 1] = open_before[j] + (op[1] == INF)

    def window_at(j: int) -> list[LinOp]:
        if not open_before[j]:
            return list(ops[j:])
        return [op for op in ops[:j] if op[1] == INF] + list(ops[j:])

    window: list[LinOp] = ops
    init: Any = model.init
    step = 1
    prev_ok = len(cuts)
    while cuts and time.monotonic() < deadline:
        k = len(cuts) - step
        if k < 0:
            break
        cand = window_at(cuts[k])
        if _fails(cand, model, FREE, deadline, memory_limit):
            # binary search between k and prev_ok for the latest failing cut
            lo2, hi2 = k + 1, prev_ok - 1
            window, init = cand, FREE
            while lo2 <= hi2 and time.monotonic() < deadline:
                mid = (lo2 + hi2) // 2
                c2 = window_at(cuts[mid])
                if _fails(c2, model, FREE, deadline, memory_limit):
                    window, lo2 = c2, mid + 1
                else:
                    hi2 = mid - 1
            break
        prev_ok = k
        step *= 2
        if step > len(cuts) and k > 0:
            step = len(cuts)
    # 3. Strip calls one by one.
    if len(window) <= MINIMIZE_LIMIT:
        i = len(window) - 1
        while i >= 0 and time.monotonic() < deadline:
            op = window[i]
            # Removing a call that never changes the state (a read, a cas of v to v) or whose
            # written value no one observes keeps a linearizable history linearizable.
            if (op[2] == "read" or (op[2] == "cas" and op[3][0] == op[3][1])
                    or not _observed(op, window)):
                cand = window[:i] + window[i + 1:]
                if cand and _fails(cand, model, init, deadline, memory_limit):
                    window = cand
            i -= 1
    return window, init is FREE


def _observed(op: LinOp, window: Sequence[LinOp]) -> bool:
    """Whether some other call in ``window`` may have observed the value ``op`` wrote."""
    v = op[3] if op[2] == "write" else op[3][1]
    for o in window:
        if o is op:
            continue
        if o[2] == "read" and (o[4] == v or isinstance(o[4], Siblings)):
            return True
        if o[2] == "cas" and o[3][0] == v:
            return True
    return False


def check_key(key: Any, ops: Sequence[LinOp], model: Model | str, time_limit: float = 60.0,
              memory_limit: int = 1 << 30, minimize: bool = True) -> KeyResult:
    """Check one key's prepared calls (see :func:`prepare`). Never raises for budget reasons:
    a search that runs out of time or memory gives ``Verdict.UNKNOWN``."""
    if isinstance(model, str):
        model = get_model(model)
    t0 = time.monotonic()
    deadline = t0 + time_limit
    ops = sorted(ops)
    try:
        ok, algorithm, wit, msg, confs = _decide(ops, model, model.init, deadline, memory_limit)
    except _Budget as b:
        return KeyResult(key, Verdict.UNKNOWN, "wgl", len(ops), time.monotonic() - t0,
                         message=f"out of {b.reason} budget")
    if ok:
        return KeyResult(key, Verdict.VALID, algorithm, len(ops), time.monotonic() - t0,
                         configurations=confs)
    from_any = False
    if wit:
        witness_ops = [ops[i] for i in sorted(set(wit))]
    elif minimize:
        # Windows get the rest of the key's budget, at least a little.
        witness_ops, from_any = _minimize(ops, model, max(deadline, time.monotonic() + 5.0),
                                          memory_limit)
    else:
        witness_ops = ops
    names = tuple(sorted(i for op in witness_ops for i in op[5]))
    return KeyResult(key, Verdict.INVALID, algorithm, len(ops), time.monotonic() - t0,
                     witness=names, message=msg, configurations=confs,
                     details={"witness_calls": len(witness_ops), "from_any_state": from_any})


def _unique_result(key: Any, ops: Sequence[LinOp], ok: bool, wit: list[int], msg: str,
                   seconds: float) -> KeyResult:
    if ok:
        return KeyResult(key, Verdict.VALID, "unique-values", len(ops), seconds)
    names = tuple(sorted(i for j in set(wit) for i in ops[j][5]))
    return KeyResult(key, Verdict.INVALID, "unique-values", len(ops), seconds, witness=names,
                     message=msg, details={"witness_calls": len(set(wit)),
                                           "from_any_state": False})


def _check_keys(batch: list[tuple[Any, list[LinOp]]], model_name: str, time_limit: float,
                memory_limit: int, minimize: bool) -> list[KeyResult]:
    return [check_key(k, ops, model_name, time_limit, memory_limit, minimize) for k, ops in batch]


# --------------------------------------------------------------------------------------------
# Public entry point


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
    unique-value algorithm decides are always decided in this process.

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
    groups: dict[Any, list[Call]] = {}
    for c in calls:
        groups.setdefault(c.key, []).append(c)
    prepared = [(k, prepare(cs, m, sibling_reads)) for k, cs in groups.items()]
    total = sum(len(p) for _, p in prepared)
    results: list[KeyResult] = []
    searches: list[tuple[Any, list[LinOp]]] = []
    for k, ops in prepared:
        # The unique-value algorithm is fast enough that shipping keys to workers never pays.
        ops.sort()
        t1 = time.monotonic()
        try:
            ok, wit, msg = _check_unique(ops, m.init)
        except _NotApplicable:
            searches.append((k, ops))
            continue
        results.append(_unique_result(k, ops, ok, wit, msg, time.monotonic() - t1))
    search_calls = sum(len(p) for _, p in searches)
    if workers is None:
        workers = (os.cpu_count() or 1) if search_calls >= PARALLEL_THRESHOLD else 1
    workers = max(1, min(workers, len(searches)))
    if workers == 1:
        results.extend(_check_keys(searches, m.name, time_limit, memory_limit, minimize))
    else:
        # Biggest keys first, dealt round-robin into several batches per worker.
        searches.sort(key=lambda kp: -len(kp[1]))
        nbatches = workers * 4
        batches: list[list[tuple[Any, list[LinOp]]]] = [[] for _ in range(nbatches)]
        for i, kp in enumerate(searches):
            batches[i % nbatches].append(kp)
        # The start method is the caller's (multiprocessing's default, or set_start_method).
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_check_keys, b, m.name, time_limit, memory_limit, minimize)
                       for b in batches if b]
            for fut in futures:
                results.extend(fut.result())
    order = {k: i for i, (k, _) in enumerate(prepared)}
    results.sort(key=lambda r: order[r.key])
    return _summarize(results, m, total, time.monotonic() - t0, workers)


def _summarize(results: list[KeyResult], model: Model, total: int, seconds: float,
               workers: int) -> CheckResult:
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
    return CheckResult("linearizable", valid, figures, tuple(anomalies))
