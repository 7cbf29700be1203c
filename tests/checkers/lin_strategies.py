"""Hypothesis strategies for small concurrent register histories.

Histories come from simulating a real register: each call takes effect at a drawn moment
between its invocation and its completion (so unperturbed histories are linearizable), some
calls crash (``info``; they may take effect later or never) or fail; then some read results
are perturbed, which makes many of them non-linearizable. The reference decides the truth.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from kvcheck.checkers.history import Op


@st.composite
def register_histories(draw: st.DrawFn, *, max_calls: int = 7, nprocs: int = 3,
                       cas: bool = False, unique: bool = True, siblings: bool = False,
                       keys: tuple[Any, ...] = ("k",)) -> list[Op]:
    n_calls = draw(st.integers(1, max_calls))
    state: dict[Any, Any] = dict.fromkeys(keys)
    ops: list[Op] = []
    open_: dict[int, dict[str, Any]] = {}
    zombies: list[dict[str, Any]] = []  # crashed calls that may still take effect
    started = 0
    next_value = 1
    next_process = nprocs
    live = set(range(nprocs))

    def crash(p: int) -> None:
        nonlocal next_process
        live.discard(p)
        live.add(next_process)
        next_process += 1

    def emit(p: int, typ: str, f: str, key: Any, value: Any) -> None:
        ops.append(Op(len(ops), len(ops), p, typ, f, key, value))

    while started < n_calls or open_:
        choices = []
        idle = sorted(p for p in live if p not in open_)
        if started < n_calls and idle:
            choices.append("invoke")
        if any(not c["applied"] for c in open_.values()) or zombies:
            choices.append("apply")
        if open_:
            choices.append("complete")
        action = draw(st.sampled_from(choices))
        if action == "invoke":
            p = draw(st.sampled_from(idle))
            key = draw(st.sampled_from(keys))
            f = draw(st.sampled_from(["read", "write", "cas"] if cas else ["read", "write"]))
            if f == "write":
                if unique:
                    value: Any = next_value
                    next_value += 1
                else:
                    value = draw(st.integers(0, 2))
            elif f == "cas":
                value = (draw(st.sampled_from([None, 0, 1, 2])), draw(st.integers(0, 2)))
            else:
                value = None
            open_[p] = {"f": f, "key": key, "value": value, "applied": False, "result": None}
            emit(p, "invoke", f, key, value)
            started += 1
        elif action == "apply":
            cands = [("open", p) for p, c in open_.items() if not c["applied"]]
            cands += [("zombie", i) for i in range(len(zombies))]
            where, which = draw(st.sampled_from(cands))
            c = open_[which] if where == "open" else zombies.pop(which)
            c["applied"] = True
            k = c["key"]
            if c["f"] == "read":
                c["result"] = state[k]
            elif c["f"] == "write":
                state[k] = c["value"]
            else:
                old, new = c["value"]
                c["result"] = state[k] == old
                if c["result"]:
                    state[k] = new
        else:
            p = draw(st.sampled_from(sorted(open_)))
            c = open_.pop(p)
            f, key = c["f"], c["key"]
            if c["applied"]:
                if f == "cas" and not c["result"]:
                    emit(p, "fail", f, key, c["value"])
                elif draw(st.integers(0, 9)) == 0:
                    emit(p, "info", f, key, c["value"] if f != "read" else None)
                    crash(p)
                else:
                    out = c["result"] if f == "read" else c["value"]
                    if f == "read" and siblings and draw(st.integers(0, 5)) == 0:
                        out = [] if out is None else [out]
                    emit(p, "ok", f, key, out)
            else:
                kind = draw(st.sampled_from(["fail", "info"]))
                if f == "read" and kind == "info":
                    emit(p, "info", f, key, None)
                else:
                    emit(p, kind, f, key, c["value"] if f != "read" else None)
                if kind == "info":
                    if f != "read" and draw(st.booleans()):
                        zombies.append(c)
                    crash(p)
    # Perturb some read results.
    reads = [i for i, op in enumerate(ops) if op.type == "ok" and op.f == "read"]
    if reads and draw(st.integers(0, 3)) > 0:
        for i in draw(st.lists(st.sampled_from(reads), min_size=1, max_size=2, unique=True)):
            op = ops[i]
            choices: list[Any] = [None, *range(0, next_value + 1)]
            if siblings:
                choices.append((1, 2))
            v = draw(st.sampled_from(choices))
            ops[i] = Op(op.index, op.time, op.process, op.type, op.f, op.key, v)
    return ops
