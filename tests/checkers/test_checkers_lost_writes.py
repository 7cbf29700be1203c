"""Lost writes (set workload): accepted histories and one rejected twin per anomaly kind."""

from __future__ import annotations

from typing import Any

from checker_builders import H
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcheck.checkers import Op, TestConfig, Verdict, check_lost_writes, pair_calls

SET = TestConfig(workload="set", n=3, w=1, r=1)
STRICT = TestConfig(workload="set", n=3, w=2, r=2)


def base() -> H:
    h = H("s")
    h.call(0, "add", 1)
    h.call(1, "add", 2)
    return h


def test_all_elements_present_is_valid() -> None:
    h = base()
    h.call(0, "read", out=[1, 2])
    h.call(0, "read", out=[1, 2], final=True)
    h.call(1, "read", out=[2, 1], final=True)
    res = check_lost_writes(h.ops, SET)
    assert res.valid is Verdict.VALID
    assert res.figures["acknowledged"] == 2
    assert res.figures["lost"] == 0
    assert res.figures["stable_latency_ms"]["count"] == 2


def test_lost_element_is_invalid_and_names_add_and_final_read() -> None:
    h = H("s")
    h.call(0, "add", 1)
    add2 = h.call(1, "add", 2)
    h.call(0, "read", out=[1, 2], final=True)
    fr = h.call(1, "read", out=[1], final=True)
    res = check_lost_writes(h.ops, SET)
    assert res.valid is Verdict.INVALID
    (lost,) = res.anomalies_of("lost")
    assert set(lost.ops) == {*add2, *fr}
    assert lost.details["element"] == 2
    assert res.figures["lost"] == 1


def test_never_read_element_is_counted_and_lost() -> None:
    h = H("s")
    add = h.call(0, "add", 1)
    fr = h.call(1, "read", out=[], final=True)
    res = check_lost_writes(h.ops, SET)
    assert res.valid is Verdict.INVALID
    assert res.figures["never_read"] == 1
    assert set(res.anomalies_of("lost")[0].ops) == {*add, *fr}


def test_unexpected_element_is_invalid() -> None:
    h = base()
    bad = h.call(2, "add", 3, type_="fail")
    r = h.call(0, "read", out=[1, 2, 3, 4], final=True)
    res = check_lost_writes(h.ops, SET)
    assert res.valid is Verdict.INVALID
    un = res.anomalies_of("unexpected")
    assert [a.details["element"] for a in un] == [3, 4]
    assert set(un[0].ops) == {*r, *bad}
    assert set(un[1].ops) == set(r)


def test_recovered_indeterminate_add_is_fine() -> None:
    h = base()
    h.call(2, "add", 3, type_="info")
    h.call(0, "read", out=[1, 2, 3], final=True)
    res = check_lost_writes(h.ops, SET)
    assert res.valid is Verdict.VALID
    assert res.figures["recovered"] == 1


def test_stale_element_is_measured_and_invalid_only_under_strict_quorums() -> None:
    h = base()
    saw = h.call(0, "read", out=[1, 2])
    missed = h.call(1, "read", out=[1])
    h.call(0, "read", out=[1, 2], final=True)
    weak = check_lost_writes(h.ops, SET)
    assert weak.valid is Verdict.VALID
    (st,) = weak.anomalies_of("stale")
    assert set(st.ops) == {*saw, *missed}
    assert weak.figures["stale"] == 1
    assert check_lost_writes(h.ops, STRICT).valid is Verdict.INVALID


def test_stale_reads_are_counted_once_each_however_many_elements_they_miss() -> None:
    h = base()
    h.call(2, "add", 3)
    h.call(0, "read", out=[1, 2, 3])
    h.call(1, "read", out=[1])  # misses 2 and 3: one stale read, two stale elements
    h.call(1, "read", out=[1, 2])  # misses 3 again: a second stale read, no new element
    h.call(0, "read", out=[1, 2, 3], final=True)
    res = check_lost_writes(h.ops, SET)
    assert res.valid is Verdict.VALID  # measured, not judged: nothing lost in the end
    assert (res.figures["stale"], res.figures["stale_reads"], res.figures["reads"]) == (2, 2, 4)


def test_concurrent_read_missing_an_element_is_not_stale() -> None:
    h = base()
    h.invoke(0, "read")
    h.call(1, "read", out=[1, 2])
    h.ok(0, "read", [1])
    h.call(0, "read", out=[1, 2], final=True)
    res = check_lost_writes(h.ops, STRICT)
    assert res.valid is Verdict.VALID
    assert res.figures["stale"] == 0


def test_without_final_reads_the_verdict_is_unknown() -> None:
    h = base()
    h.call(0, "read", out=[1, 2])
    assert check_lost_writes(h.ops, SET).valid is Verdict.UNKNOWN


def test_stable_latency_counts_from_add_to_stable_visibility() -> None:
    h = H("s")
    h.call(0, "add", 1, time=0)  # invoke at 0 ms
    h.call(1, "read", out=[], time=10_000_000)
    h.call(1, "read", out=[1], time=20_000_000)
    h.call(1, "read", out=[1], time=30_000_000, final=True)
    res = check_lost_writes(h.ops, SET)
    # first read of the stable run is invoked at 20 ms; the add at 0 ms
    assert res.figures["stable_latency_ms"]["max"] == 20.0


# --- property: agreement with the definitions, applied literally -------------------------------


@st.composite
def set_histories(draw: st.DrawFn) -> list[Op]:
    """Random concurrent adds and reads of one set; reads return random subsets of the
    elements attempted so far (plus, rarely, a stranger), so every anomaly kind shows up."""
    ops: list[Op] = []
    open_: dict[int, tuple[str, Any]] = {}
    attempted: list[int] = []
    n = draw(st.integers(1, 12))
    started = 0
    next_p = 3
    live = [0, 1, 2]
    while started < n or open_:
        idle = [p for p in live if p not in open_]
        can_start = started < n and idle
        if can_start and (not open_ or draw(st.booleans())):
            p = draw(st.sampled_from(idle))
            if draw(st.booleans()):
                e = len(attempted) + 1
                attempted.append(e)
                open_[p] = ("add", e)
            else:
                open_[p] = ("read", None)
            f, v = open_[p]
            ops.append(Op(len(ops), len(ops), p, "invoke", f, "s", v, None, None,
                          {"final": True} if f == "read" and started >= n - 2 else {}))
            started += 1
        else:
            p = draw(st.sampled_from(sorted(open_)))
            f, v = open_.pop(p)
            extra = ops[max(i for i, o in enumerate(ops) if o.process == p)].extra
            if f == "add":
                t = draw(st.sampled_from(["ok", "ok", "info", "fail"]))
                ops.append(Op(len(ops), len(ops), p, t, f, "s", v))
                if t == "info":
                    live.remove(p)
                    live.append(next_p)
                    next_p += 1
            else:
                seen = draw(st.lists(st.sampled_from([*attempted, 99]), unique=True)
                            if attempted else st.just([]))
                ops.append(Op(len(ops), len(ops), p, "ok", f, "s", tuple(seen), None, None,
                              extra))
    return ops


def by_definition(ops: list[Op]) -> dict[str, set[Any]]:
    calls = pair_calls(ops)
    status: dict[Any, str] = {}
    rank = {"ok": 2, "info": 1, "fail": 0}
    for c in calls:
        if c.f == "add" and rank[c.type] >= rank.get(status.get(c.value_in, "fail"), 0):
            status[c.value_in] = c.type
    reads = [c for c in calls if c.f == "read" and c.type == "ok"]
    finals = [c for c in reads if c.invoke.final]
    acked = {e for e, t in status.items() if t == "ok"}
    seen = {e for r in reads for e in r.value_out}
    return {
        "lost": {e for e in acked if any(e not in f.value_out for f in finals)},
        "unexpected": {e for e in seen if status.get(e, "fail") == "fail"},
        "stale": {e for r1 in reads for r2 in reads for e in r1.value_out
                  if r1.ret_index < r2.inv_index and e not in r2.value_out},
    }


@settings(max_examples=500, deadline=None)
@given(set_histories())
def test_lost_writes_match_the_definitions(ops: list[Op]) -> None:
    res = check_lost_writes(ops, STRICT)
    expected = by_definition(ops)
    for kind in ("lost", "unexpected", "stale"):
        found = {a.details["element"] for a in res.anomalies_of(kind)}
        assert found == expected[kind], kind
        assert res.figures[kind] == len(found)
    has_finals = any(o.final for o in ops if o.type == "ok")
    acknowledged = any(o.f == "add" and o.type == "ok" for o in ops)
    if any(expected.values()):
        assert res.valid is Verdict.INVALID
    elif has_finals and acknowledged:
        assert res.valid is Verdict.VALID
    else:  # nothing could have been lost, or nothing could tell
        assert res.valid is Verdict.UNKNOWN
