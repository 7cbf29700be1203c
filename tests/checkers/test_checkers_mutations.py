"""Mutations of valid histories: one broken promise, and the right checker objects.

Base histories come from a model (a register per key, or a grow-only set per key): each call
takes effect at a drawn moment between its invocation and its completion, a crashed call
(``info``) later or never, a failed one never, so every base is valid by construction. Each
base starts with a sequential prefix that gives every checker evidence to judge by: every op
type succeeds, a read begins after a completed write of its key, a set has an acknowledged add
and final reads. One mutation then breaks one promise:

* (a) an acknowledged element dropped from a final read: ``lost-writes``, anomaly ``lost``;
* (b) a read moved to begin after a newer write completed, still returning the older value:
  ``stale-reads`` (invalid iff the guarantee promises the latest reads) and ``linearizable``;
* (c) a read's value changed to one never written: ``linearizable`` (not ``stale-reads``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kvcheck.checkers import GUARANTEES, Call, Op, Results, TestConfig, Verdict, check_history
from kvcheck.checkers.history import pair_calls

REGISTER_CHECKERS = ("stats", "stale-reads", "linearizable")
SET_CHECKERS = ("stats", "lost-writes")
NEVER_WRITTEN = "never-written"
MUTATIONS = settings(max_examples=120, deadline=None)


class _Log:
    """Ops in history order, numbered (and timed, 1 ms apart) as they are emitted."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def emit(self, p: int, type_: str, f: str, key: str, value: Any, node: str | None = None,
             **extra: Any) -> None:
        i = len(self.ops)
        self.ops.append(Op(i, i * 1_000_000, p, type_, f, key, value, node, None, extra))

    def call(self, p: int, f: str, key: str, value: Any, out: Any, node: str | None = None,
             **extra: Any) -> None:
        self.emit(p, "invoke", f, key, value, node, **extra)
        self.emit(p, "ok", f, key, out, node, **extra)


@st.composite
def model_histories(draw: st.DrawFn, workload: str, keys: tuple[str, ...] = ("a", "b"),
                    nprocs: int = 3, max_calls: int = 8) -> list[Op]:
    """A valid history of ``workload`` (``"register"`` or ``"set"``), as the module says."""
    setw = workload == "set"
    update = "add" if setw else "write"
    log = _Log()
    state: dict[str, Any] = {k: set() if setw else None for k in keys}
    fresh = iter(range(1, 10_000))

    def apply(c: dict[str, Any]) -> None:
        k = c["key"]
        if c["f"] == "read":
            c["out"] = sorted(state[k]) if setw else state[k]
        elif setw:
            state[k].add(c["value"])
        else:
            state[k] = c["value"]

    for k in keys:  # the evidence prefix, sequential on process 0
        for _ in range(2):
            c = {"f": update, "key": k, "value": next(fresh)}
            apply(c)
            log.call(0, update, k, c["value"], c["value"])
            r = {"f": "read", "key": k}
            apply(r)
            log.call(0, "read", k, None, r["out"])

    n_calls = draw(st.integers(0, max_calls))
    live = list(range(nprocs))
    next_process = nprocs
    open_: dict[int, dict[str, Any]] = {}
    zombies: list[dict[str, Any]] = []  # crashed updates that may still take effect
    started = 0
    while started < n_calls or open_:
        choices = []
        idle = [p for p in live if p not in open_]
        if started < n_calls and idle:
            choices.append("invoke")
        if zombies or any(not c["applied"] for c in open_.values()):
            choices.append("apply")
        if any(c["applied"] or c["f"] != "read" for c in open_.values()):
            choices.append("complete")
        action = draw(st.sampled_from(choices))
        if action == "invoke":
            p = draw(st.sampled_from(idle))
            f = draw(st.sampled_from([update, "read"]))
            c = {"f": f, "key": draw(st.sampled_from(keys)), "applied": False,
                 "value": next(fresh) if f == update else None}
            open_[p] = c
            log.emit(p, "invoke", f, c["key"], c["value"])
            started += 1
        elif action == "apply":
            cands = [*(c for c in open_.values() if not c["applied"]), *zombies]
            c = draw(st.sampled_from(cands))
            zombies = [z for z in zombies if z is not c]
            c["applied"] = True
            apply(c)
        else:
            p = draw(st.sampled_from(sorted(p for p, c in open_.items()
                                            if c["applied"] or c["f"] != "read")))
            c = open_.pop(p)
            f, k = c["f"], c["key"]
            outcome = "ok" if c["applied"] else draw(st.sampled_from(["fail", "info"]))
            if c["applied"] and f != "read" and draw(st.integers(0, 7)) == 0:
                outcome = "info"  # took effect, but the client never heard
            out = c.get("out") if f == "read" else c["value"]
            log.emit(p, outcome, f, k, out if outcome == "ok" else c["value"])
            if outcome == "info":
                if not c["applied"]:
                    zombies.append(c)
                live[live.index(p)] = next_process  # a crashed worker gets a new process
                next_process += 1
    for c in zombies:  # a crashed update takes effect before the end, or never
        if draw(st.booleans()):
            apply(c)
    if setw:
        for k in keys:
            for node in range(draw(st.integers(1, 3))):
                log.call(next_process, "read", k, None, sorted(state[k]), f"n{node + 1}",
                         final=True)
                next_process += 1
    return log.ops


def renumber(ops: list[Op]) -> list[Op]:
    """The ops in their list order, indexed (and timed) afresh from 0."""
    return [dataclasses.replace(op, index=i, time=i * 1_000_000) for i, op in enumerate(ops)]


def check(ops: list[Op], config: TestConfig, checkers: tuple[str, ...]) -> Results:
    return check_history(ops, config, checkers=checkers)


def assert_all_valid(res: Results) -> None:
    assert {c.checker: c.valid for c in res.checks} == dict.fromkeys(
        (c.checker for c in res.checks), Verdict.VALID), {c.checker: c.anomaly_counts
                                                          for c in res.checks}


def ok_calls(ops: list[Op], f: str) -> list[Call]:
    return [c for c in pair_calls(ops) if c.f == f and c.type == "ok"]


# (a) lost-writes: an acknowledged add dropped from a final read.

@MUTATIONS
@given(data=st.data(), ops=model_histories("set"))
def test_dropping_an_acknowledged_add_from_a_final_read_is_lost(
        data: st.DataObject, ops: list[Op]) -> None:
    config = TestConfig(workload="set", guarantee="no-lost-writes")
    assert_all_valid(check(ops, config, SET_CHECKERS))
    ops = list(ops)
    add = data.draw(st.sampled_from(ok_calls(ops, "add")))
    finals = [c for c in ok_calls(ops, "read") if c.invoke.final and c.key == add.key]
    final = data.draw(st.sampled_from(finals))
    assert final.complete is not None
    i = final.complete.index
    ops[i] = dataclasses.replace(ops[i], value=tuple(e for e in ops[i].value
                                                     if e != add.value_in))
    res = check(ops, config, SET_CHECKERS)
    assert res["lost-writes"].valid is Verdict.INVALID
    assert res["stats"].valid is Verdict.VALID
    (lost,) = [a for a in res["lost-writes"].anomalies_of("lost")
               if a.details["element"] == add.value_in]
    assert lost.key == add.key
    assert {*add.indexes, *final.indexes} <= set(lost.ops)


# (b) stale-reads and linearizable: a read moved after a newer write, returning the older value.

def stale_moves(ops: list[Op]) -> list[tuple[Call, Call]]:
    """(read, newer write) pairs: every write of the read's value completed (ok) before the
    newer write began, so the read returns an older value than the newer write's."""
    calls = pair_calls(ops)
    writes = [c for c in calls if c.f == "write" and c.type != "fail"]
    moves = []
    for r in ok_calls(ops, "read"):
        of_value = [w for w in writes if w.key == r.key and w.value_in == r.value_out]
        if any(w.ret_index is None for w in of_value):
            continue  # an indeterminate write of the value: it may have just happened
        done = max((w.ret_index or 0 for w in of_value), default=-1)  # -1: the initial value
        moves += [(r, w) for w in writes if w.key == r.key and w.type == "ok"
                  and w.inv_index > done]
    return moves


@MUTATIONS
@given(data=st.data(), ops=model_histories("register"),
       guarantee=st.sampled_from(sorted(GUARANTEES)))
def test_moving_a_read_after_a_newer_write_makes_it_stale(
        data: st.DataObject, ops: list[Op], guarantee: str) -> None:
    config = TestConfig(guarantee=guarantee)
    assert_all_valid(check(ops, config, REGISTER_CHECKERS))
    read, newer = data.draw(st.sampled_from(stale_moves(ops)))
    assert read.complete is not None and newer.complete is not None
    rest = [op for op in ops if op.index not in read.indexes]
    after = rest.index(newer.complete)
    at = data.draw(st.integers(after + 1, len(rest)))
    p = 1 + max(op.process for op in ops if isinstance(op.process, int))
    moved = [dataclasses.replace(read.invoke, process=p),
             dataclasses.replace(read.complete, process=p)]
    ops = renumber([*rest[:at], *moved, *rest[at:]])
    res = check(ops, config, REGISTER_CHECKERS)
    stale = res["stale-reads"]
    assert stale.valid is (Verdict.INVALID if GUARANTEES[guarantee].latest_reads
                           else Verdict.VALID)
    assert at in [a.details["read"] for a in stale.anomalies_of("stale-read")]
    assert res["linearizable"].valid is Verdict.INVALID
    (nonlin,) = res["linearizable"].anomalies_of("nonlinearizable")
    assert nonlin.key == read.key
    assert {at, at + 1} <= set(nonlin.ops)
    assert res["stats"].valid is Verdict.VALID


# (c) linearizable: a read's value changed to one no write wrote.

@MUTATIONS
@given(data=st.data(), ops=model_histories("register"),
       guarantee=st.sampled_from(sorted(GUARANTEES)))
def test_reading_a_value_never_written_is_not_linearizable(
        data: st.DataObject, ops: list[Op], guarantee: str) -> None:
    config = TestConfig(guarantee=guarantee)
    assert_all_valid(check(ops, config, REGISTER_CHECKERS))
    ops = list(ops)
    read = data.draw(st.sampled_from(ok_calls(ops, "read")))
    assert read.complete is not None
    i = read.complete.index
    ops[i] = dataclasses.replace(ops[i], value=NEVER_WRITTEN)
    res = check(ops, config, REGISTER_CHECKERS)
    assert res["linearizable"].valid is Verdict.INVALID
    (nonlin,) = res["linearizable"].anomalies_of("nonlinearizable")
    assert nonlin.key == read.key
    assert set(read.indexes) <= set(nonlin.ops)
    # A value no write wrote is linearizability's business: stale-reads does not judge it.
    assert res["stale-reads"].valid is Verdict.VALID
    assert not res["stale-reads"].anomalies
    assert res["stats"].valid is Verdict.VALID
