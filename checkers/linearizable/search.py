"""Wing & Gong's search with Lowe's memoization, as in Porcupine, plus rules that cut the orders
it tries without losing a linearization (see the package docstring,
:mod:`kvcheck.checkers.linearizable`).

This is the checker's hot loop: it is written for speed (a linked list over the history's
entries, bit sets, one memo dictionary) rather than for brevity.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from kvcheck.checkers.linearizable.calls import ARG, INF, INV, RET, F, Prepared
from kvcheck.checkers.models import Model


class OutOfBudget(Exception):
    """The search passed its deadline or its memory limit; ``reason`` is ``"time"`` or
    ``"memory"``. ``linearized_before``: the history position of the first completion no
    configuration got past — the history before it has a linearization — or None when the
    search had not yet reached a completion."""

    def __init__(self, reason: str, linearized_before: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.linearized_before = linearized_before


def search(ops: Sequence[Prepared], model: Model, init: Any, deadline: float,
           memory_limit: int) -> tuple[bool, int, int]:
    """Search for a linearization of ``ops`` from state ``init``.

    Returns ``(found, configurations explored, frontier)``. When none is found, ``frontier`` is
    the latest completion position the search ever had to reach next — every configuration
    stopped at or before it — so the history up to that completion is the shortest prefix with
    no linearization (what Knossos and Porcupine call the longest linearizable prefix, plus
    one). Raises :class:`OutOfBudget` past ``deadline`` (``time.monotonic()``) or when the memo
    table's estimated size passes ``memory_limit`` bytes.
    """
    # An indeterminate observer changes no bound state: it may as well never happen.
    ops = [op for op in ops if op[RET] != INF or not model.observer(op[F], op[ARG])]
    n = len(ops)
    if n == 0:
        return True, 0, INF
    step = model.step
    events = []
    for i, op in enumerate(ops):
        events.append((op[INV], 0, i))
        events.append((op[RET], 1, i))
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
            indeterminate[k] = ops[i][RET] == INF
    tail = m + 1
    # Determinate and indeterminate calls get separate bit numbers: D, the set of linearized
    # determinate calls, is stored shifted past its lowest unset bit (every call below it is
    # linearized), which keeps memo keys small; S, the set of linearized indeterminate calls,
    # is kept beside it for the dominance rule below.
    bit = [0] * n
    info = [False] * n
    # Determinate observers (reads, mostly): one legal now is linearized now, and nothing
    # else is tried at that point. Any linearization from here that places it later stays one
    # with it moved here: it changes no state, and every call that must precede it (completed
    # before its invocation) is already linearized, since it is a candidate.
    observer = [op[RET] != INF and model.observer(op[F], op[ARG]) for op in ops]
    nd = ni = 0
    for i, op in enumerate(ops):
        if op[RET] == INF:
            info[i] = True
            bit[i] = 1 << ni
            ni += 1
        else:
            bit[i] = 1 << nd
            nd += 1
    before = _alike_first(ops, info, bit)
    per_entry = 200 + ni // 8
    max_entries = max(1, memory_limit // per_entry)
    # Memo: (z, D >> z, state) -> the sets S explored with it. A configuration whose S
    # includes an explored S' is pruned: it has the same choices left, fewer optional ones.
    cache: dict[tuple[int, int, Any], Any] = {}
    entries = 0
    # The linearized calls, in order: (call, state before it, whether it was forced).
    stack: list[tuple[int, Any, bool]] = []
    dset = 0
    sset = 0
    state = init
    entry = nxt[0]
    # Candidates at each level (the calls before the first return entry) are tried in two
    # phases: determinate calls first, then indeterminate ones, which are optional and which an
    # eager search would linearize needlessly. A level first looks for a forced observer.
    phase = False
    fresh_level = True
    steps = 0
    frontier = 0  # node of the latest return any configuration had to pass next
    while True:
        steps += 1
        if steps & 0xFFF == 1:  # the first step too: a spent budget is never ignored
            spent = ("time" if time.monotonic() > deadline
                     else "memory" if entries > max_entries else None)
            if spent:
                raise OutOfBudget(spent, events[frontier - 1][0] if frontier else None)
        forced = False
        if fresh_level:
            fresh_level = False
            e = entry
            while is_call[e]:
                i = op_of[e]
                if observer[i]:
                    _inv, _ret, f, arg, out, _names = ops[i]
                    legal, new_state = step(state, f, arg, out)
                    if legal and new_state == state:
                        entry, forced = e, True
                        break
                e = nxt[e]
        if is_call[entry]:
            i = op_of[entry]
            if info[i] is not phase or (sset if phase else dset) & before[i] != before[i]:
                entry = nxt[entry]
                continue
            _inv, _ret, f, arg, out, _names = ops[i]
            legal, new_state = step(state, f, arg, out)
            if legal:
                if phase:
                    nd_set, ns_set = dset, sset | bit[i]
                else:
                    nd_set, ns_set = dset | bit[i], sset
                z = (~nd_set & (nd_set + 1)).bit_length() - 1
                memo_key = (z, nd_set >> z, new_state)
                seen = cache.get(memo_key)
                fresh = True
                if seen is None:
                    cache[memo_key] = ns_set
                elif type(seen) is int:
                    if seen & ~ns_set == 0:
                        fresh = False
                    else:
                        cache[memo_key] = [seen, ns_set]
                elif any(s0 & ~ns_set == 0 for s0 in seen):
                    fresh = False
                else:
                    seen.append(ns_set)
                if fresh:
                    entries += 1
                    stack.append((i, state, forced))
                    dset, sset, state = nd_set, ns_set, new_state
                    # lift the call and its return
                    c, r = entry, ret_node[i]
                    nxt[prv[c]] = nxt[c]
                    prv[nxt[c]] = prv[c]
                    nxt[prv[r]] = nxt[r]
                    prv[nxt[r]] = prv[r]
                    entry = nxt[0]
                    phase = False
                    fresh_level = True
                    continue
            if forced:
                # Its configuration was explored already: so was every one this level has.
                entry = tail
                phase = True
                continue
            entry = nxt[entry]
        elif not phase:
            if entry == tail or indeterminate[entry]:
                # Every determinate call is linearized; the rest may never have happened.
                return True, entries, INF
            frontier = max(frontier, entry)
            phase = True
            entry = nxt[0]
        else:
            while True:
                if not stack:
                    return False, entries, events[frontier - 1][0]
                i, state, was_forced = stack.pop()
                if info[i]:
                    sset &= ~bit[i]
                else:
                    dset &= ~bit[i]
                c, r = call_node[i], ret_node[i]
                nxt[prv[r]] = r
                prv[nxt[r]] = r
                nxt[prv[c]] = c
                prv[nxt[c]] = c
                if not was_forced:
                    break
            entry = nxt[c]
            phase = info[i]


def _alike_first(ops: Sequence[Prepared], info: Sequence[bool], bit: Sequence[int]) -> list[int]:
    """For each call, the bits of the calls alike that must be linearized before it may be.

    Swapping two alike calls in a linearization gives another, so alike calls are taken in one
    fixed order: indeterminate calls with the same op and argument in the order they were
    invoked (the earlier one fits wherever the later one was); determinate calls with the same
    op, argument and result, one invoked and completed before the other, that one first.
    """
    before = [0] * len(ops)
    last_alike: dict[tuple[str, Any], int] = {}
    open_alike: dict[tuple[str, Any, Any], list[int]] = {}
    for i in sorted(range(len(ops)), key=lambda i: ops[i][INV]):
        inv, ret, f, arg, out, _names = ops[i]
        if info[i]:
            before[i] = last_alike.get((f, arg), 0)
            last_alike[f, arg] = bit[i]
            continue
        twins = open_alike.setdefault((f, arg, out), [])
        twins[:] = [j for j in twins if ops[j][RET] > inv]  # completed ones are linearized
        for j in twins:
            if ops[j][RET] < ret:
                before[i] |= bit[j]
        twins.append(i)
    return before
