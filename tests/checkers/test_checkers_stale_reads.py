"""Stale reads: accepted histories and their rejected twins, with the ops named."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from checker_builders import H
from hypothesis import given, settings
from lin_strategies import register_histories

from kvcheck.checkers import Op, TestConfig, Verdict, check_stale_reads, pair_calls

STRICT = TestConfig(n=3, w=2, r=2)
WEAK = TestConfig(n=3, w=1, r=1)
SLOPPY = TestConfig(n=3, w=2, r=2, sloppy_quorum=True)


def test_fresh_reads_are_valid() -> None:
    h = H()
    h.call(0, "write", 1)
    h.call(0, "write", 2)
    h.call(1, "read", out=2)
    res = check_stale_reads(h.ops, STRICT)
    assert res.valid is Verdict.VALID
    assert res.figures["stale_reads"] == 0
    assert res.figures["reads"] == 1


def test_stale_read_under_strict_quorum_is_invalid_and_named() -> None:
    h = H()
    w1 = h.call(0, "write", 1)
    w2 = h.call(0, "write", 2)
    r = h.call(1, "read", out=1)
    res = check_stale_reads(h.ops, STRICT)
    assert res.valid is Verdict.INVALID
    (a,) = res.anomalies
    assert a.kind == "stale-read"
    assert set(a.ops) == {*r, *w2, *w1}
    assert a.details["versions_behind"] == 1
    assert a.details["since_newer_write_ns"] == (r[0] - w2[1]) * 1_000_000
    assert res.figures["enforced"] is True


def test_stale_read_without_quorum_promise_is_measured_not_invalid() -> None:
    h = H()
    h.call(0, "write", 1)
    h.call(0, "write", 2)
    h.call(0, "write", 3)
    h.call(1, "read", out=1)
    h.call(1, "read", out=3)
    for cfg in (WEAK, SLOPPY, TestConfig()):
        res = check_stale_reads(h.ops, cfg)
        assert res.valid is Verdict.VALID
        assert res.figures["stale_reads"] == 1
        assert res.figures["stale_rate"] == 0.5
        assert res.figures["versions_behind"]["max"] == 2
        assert not res.figures["enforced"]
    assert "sloppy" in check_stale_reads(h.ops, SLOPPY).figures["guarantee"]


def test_concurrent_write_does_not_make_a_read_stale() -> None:
    h = H()
    h.call(0, "write", 1)
    h.invoke(0, "write", 2)
    h.call(1, "read", out=1)
    h.ok(0, "write", 2)
    assert check_stale_reads(h.ops, STRICT).valid is Verdict.VALID


def test_write_overlapping_the_newer_write_is_not_stale() -> None:
    # w1 completes after w2 began: reading 1 after both is legal (w1 may have been last).
    h = H()
    h.invoke(0, "write", 1)
    h.invoke(1, "write", 2)
    h.ok(0, "write", 1)
    h.ok(1, "write", 2)
    h.call(2, "read", out=1)
    assert check_stale_reads(h.ops, STRICT).valid is Verdict.VALID


def test_one_fresh_sibling_makes_the_read_fresh() -> None:
    h = H()
    h.call(0, "write", 1)
    h.call(0, "write", 2)
    h.call(1, "read", out=[1, 2])
    assert check_stale_reads(h.ops, STRICT).valid is Verdict.VALID
    h2 = H()
    h2.call(0, "write", 1)
    h2.call(0, "write", 2)
    h2.call(0, "write", 3)
    r = h2.call(1, "read", out=[1, 2])
    res = check_stale_reads(h2.ops, STRICT)
    assert res.valid is Verdict.INVALID
    assert set(r) <= set(res.anomalies[0].ops)


def test_empty_read_after_delete_is_fresh_and_before_is_stale() -> None:
    h = H()
    h.call(0, "write", 1)
    h.call(0, "delete")
    h.call(1, "read", out=None)
    h.call(1, "read", out=[])
    assert check_stale_reads(h.ops, STRICT).valid is Verdict.VALID
    h2 = H()
    w = h2.call(0, "write", 1)
    r = h2.call(1, "read", out=None)
    res = check_stale_reads(h2.ops, STRICT)
    assert res.valid is Verdict.INVALID
    assert set(res.anomalies[0].ops) == {*w, *r}


def test_indeterminate_and_failed_writes() -> None:
    h = H()
    h.call(0, "write", 1)
    h.call(0, "write", 2, type_="fail")  # did not happen: reading 1 is fresh
    h.call(0, "write", 3, type_="info")  # may happen any time: never "completed before"
    h.call(1, "read", out=1)
    assert check_stale_reads(h.ops, STRICT).valid is Verdict.VALID


def test_keys_are_separate() -> None:
    h = H()
    h.call(0, "write", 1, key="a")
    h.call(0, "write", 2, key="b")
    h.call(1, "read", out=1, key="a")
    assert check_stale_reads(h.ops, STRICT).valid is Verdict.VALID


# --- property: agreement with the definition, applied literally --------------------------------


def stale_by_definition(ops: list[Op]) -> set[int]:
    """Invocation indexes of stale reads, straight from docs/checkers.md (quadratic)."""
    calls = [c for c in pair_calls(ops) if c.type != "fail"]
    writes = [c for c in calls if c.f in ("write", "delete")]
    empty = object()

    def values(v: Any) -> list[Any]:
        if v is None:
            return [empty]
        if isinstance(v, list | tuple):
            return [empty if x is None else x for x in v] or [empty]
        return [v]

    def written(c: Any) -> Any:
        return empty if c.f == "delete" or c.value_in is None else c.value_in

    out = set()
    for r in calls:
        if r.f != "read" or r.type != "ok":
            continue
        for newer in writes:
            if newer.ret_index is None or newer.ret_index >= r.inv_index:
                continue
            # every returned value was written only by writes completed before `newer` began
            ok = True
            for v in values(r.value_out):
                ws = [w for w in writes if written(w) == v]
                if v is empty:
                    pass  # the initial state writes the empty value before everything
                elif not ws:
                    ok = False  # never written: not judged
                if any(w.ret_index is None or w.ret_index >= newer.inv_index for w in ws):
                    ok = False
            if ok:
                out.add(r.inv_index)
                break
    return out


@settings(max_examples=500, deadline=None)
@given(register_histories(max_calls=10, nprocs=3, siblings=True))
def test_stale_reads_match_the_definition(ops: list[Op]) -> None:
    res = check_stale_reads(ops, STRICT)
    found = {a.details["read"] for a in res.anomalies}
    assert found == stale_by_definition(ops)
    assert res.figures["stale_reads"] == len(found)
    assert (res.valid is Verdict.INVALID) == bool(found)


def test_declared_guarantee_decides_over_quorums() -> None:
    h = H()
    h.call(0, "write", 1)
    h.call(0, "write", 2, time=2_000_000_000)
    h.ops.pop()
    h.ok(0, "write", 2, time=2_500_000_000)
    h.call(1, "read", out=1, node="n3", time=3_000_000_000)
    declared = TestConfig(n=3, w=1, r=1, guarantee="no-stale-reads")
    res = check_stale_reads(h.ops, declared)
    assert res.valid is Verdict.INVALID
    assert "declares no-stale-reads" in res.figures["guarantee"]
    assert res.anomalies[0].message == (
        "read of 'k' through n3 at 3.000 s returned 1, but the write of 2 completed at "
        "2.500 s (1 newer version missed)")
    relaxed = TestConfig(n=3, w=2, r=2, guarantee="eventual-convergence")
    assert check_stale_reads(h.ops, relaxed).valid is Verdict.VALID
    assert TestConfig.from_json({"expect": "linearizable"}).promises_latest_reads


# --- visibility by time, and versions missed ---------------------------------------------------

MS = 1_000_000


def buckets(res: Any) -> dict[Any, tuple[int, int]]:
    """The non-empty ``visibility`` buckets: upper edge -> (reads, stale)."""
    return {b["le_ms"]: (b["reads"], b["stale"]) for b in res.figures["visibility"] if b["reads"]}


def test_visibility_buckets_reads_by_time_since_the_write_they_must_see() -> None:
    h = H()
    h.call(2, "read", out=None, time=0)  # no write completed yet: not counted
    h.invoke(0, "write", 1, time=0)
    h.ok(0, "write", 1, time=1 * MS)
    h.call(1, "read", out=1, time=int(1.5 * MS))  # 0.5 ms after w1: fresh
    h.invoke(0, "write", 2, time=2 * MS)
    h.ok(0, "write", 2, time=10 * MS)
    h.call(1, "read", out=1, time=int(10.5 * MS))  # 0.5 ms after w2: stale, 1 behind
    h.call(1, "read", out=2, time=13 * MS)  # 3 ms: fresh
    h.invoke(0, "write", 3, time=20 * MS)
    h.ok(0, "write", 3, time=30 * MS)
    h.call(1, "read", out=1, time=180 * MS)  # 150 ms after w3: stale, 2 behind
    h.call(1, "read", out=3, time=6030 * MS)  # 6 s: fresh, in the open bucket
    res = check_stale_reads(h.ops, WEAK)
    figures = res.figures
    assert [b["le_ms"] for b in figures["visibility"]] == [
        1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, None]
    assert buckets(res) == {1: (2, 1), 5: (1, 0), 200: (1, 1), None: (1, 0)}
    assert figures["versions_behind_counts"] == {"0": 3, "1": 1, "2": 1}
    assert figures["reads_checked"] == 5 and figures["stale_reads"] == 2


def test_visibility_counts_from_the_latest_invoked_write_not_the_last_completed() -> None:
    # w2 began after w1 and completed first: a read after both must see w2 or w1 (concurrent
    # with it), and its time is counted from w2's completion, the write it must see.
    h = H()
    h.invoke(0, "write", 1, time=0)
    h.invoke(1, "write", 2, time=1 * MS)
    h.ok(1, "write", 2, time=2 * MS)
    h.ok(0, "write", 1, time=50 * MS)
    h.call(2, "read", out=1, time=51 * MS)
    res = check_stale_reads(h.ops, WEAK)
    assert buckets(res) == {50: (1, 0)}
    assert res.figures["versions_behind_counts"] == {"0": 1}


def test_a_read_exactly_at_an_edge_falls_in_that_bucket() -> None:
    h = H()
    h.invoke(0, "write", 1, time=0)
    h.ok(0, "write", 1, time=1 * MS)
    h.call(1, "read", out=None, time=3 * MS)  # 2 ms after: stale
    assert buckets(check_stale_reads(h.ops, WEAK)) == {2: (1, 1)}


@settings(max_examples=300, deadline=None)
@given(register_histories(max_calls=10, nprocs=3, siblings=True))
def test_visibility_and_versions_missed_add_up_to_the_checked_and_stale_reads(
        ops: list[Op]) -> None:
    figures = check_stale_reads(ops, WEAK).figures
    visibility = figures["visibility"]
    counts = {int(k): n for k, n in figures["versions_behind_counts"].items()}
    assert sum(b["reads"] for b in visibility) == figures["reads_checked"] == sum(counts.values())
    assert sum(b["stale"] for b in visibility) == figures["stale_reads"]
    assert counts.get(0, 0) == figures["reads_checked"] - figures["stale_reads"]
    assert all(0 <= b["stale"] <= b["reads"] for b in visibility)
    assert max(counts, default=0) == (figures["versions_behind"]["max"] or 0)


#: The reference store's register test with vector clocks: each write carries the context of
#: its process's last ok read of the key, and no clock is pruned below ten nodes.
CAUSAL = TestConfig(n=3, w=1, r=1, nodes=("n1", "n2", "n3"), write_context="last-read",
                    vclock_max_entries=10)


def superseded_history() -> tuple[H, dict[str, Any]]:
    """Process 0 reads 1, then writes 2 with that read's context: 2 overwrote 1. Process 1
    wrote 3 blind, concurrently: 3 is a true sibling of both."""
    h = H()
    named = {"w1": h.call(0, "write", 1), "r1": h.call(0, "read", out=1),
             "w3": h.call(1, "write", 3), "w2": h.call(0, "write", 2)}
    return h, named


def test_a_version_beside_the_write_that_overwrote_it_is_a_superseded_sibling() -> None:
    h, named = superseded_history()
    bad = h.call(2, "read", out=[3, 1, 2])
    h.call(2, "read", out=[2, 3])  # true siblings: fine
    for config in (CAUSAL, dataclasses.replace(CAUSAL, n=3, w=2, r=2)):  # whatever quorums
        res = check_stale_reads(h.ops, config)
        assert res.valid is Verdict.INVALID
        (a,) = [a for a in res.anomalies if a.kind == "superseded-sibling"]
        assert set(a.ops) == {*bad, *named["w2"], *named["r1"]}
        assert a.details["superseded"] == [1]
        assert res.figures["superseded_siblings"] == 1 and res.figures["sibling_reads"] == 2
        assert "overwritten version" in (res.basis or "")


def _last_read_returned_nothing(h: H) -> None:
    h.call(0, "read", out=1)
    h.call(0, "read", out=None)  # the context 2 carries


def _blind_write(h: H) -> None:
    h.call(1, "read", out=1)  # another process read 1, not the writer of 2


def _written_twice(h: H) -> None:
    h.call(0, "read", out=1)
    h.call(1, "write", 1)  # which version of 1 a read returns is unknown


@pytest.mark.parametrize("before", [_last_read_returned_nothing, _blind_write, _written_twice])
def test_siblings_a_write_did_not_overwrite_are_fine(before: Any) -> None:
    h = H()
    h.call(0, "write", 1)
    before(h)
    h.call(0, "write", 2)
    h.call(2, "read", out=[1, 2])
    res = check_stale_reads(h.ops, CAUSAL)
    assert res.figures["superseded_siblings"] == 0 and res.figures["sibling_reads"] == 1
    assert res.valid is Verdict.VALID


def test_a_failed_write_overwrites_nothing_and_a_failed_read_gives_no_context() -> None:
    h = H()
    h.call(0, "write", 1)
    h.call(0, "read", out=1)
    h.call(0, "write", 7, type_="fail")
    h.call(1, "write", 2)
    h.call(0, "read", out=[1, 2], type_="fail")
    h.call(0, "write", 3)  # its context: the read that returned 1
    h.call(2, "read", out=[2, 3])
    assert check_stale_reads(h.ops, CAUSAL).figures["superseded_siblings"] == 0
    h.call(2, "read", out=[1, 3])
    assert check_stale_reads(h.ops, CAUSAL).figures["superseded_siblings"] == 1


@pytest.mark.parametrize(("config", "joins", "why"), [
    (TestConfig(n=3, w=1, r=1), 0, "which context"),
    (dataclasses.replace(CAUSAL, versioning="lww"), 0, "which context"),
    (dataclasses.replace(CAUSAL, vclock_max_entries=2), 0, "up to 3 actors"),
    (dataclasses.replace(CAUSAL, vclock_max_entries=None), 0, "pruned"),
    (dataclasses.replace(CAUSAL, vclock_max_entries=4), 2, "up to 5 actors, more than the 4"),
])
def test_superseded_siblings_are_not_judged_where_contexts_are_unknown_or_pruned(
        config: TestConfig, joins: int, why: str) -> None:
    h, _ = superseded_history()
    for _ in range(joins):
        h.invoke("nemesis", "start-membership")
        h.nemesis("start-membership")
    h.call(2, "read", out=[1, 2])
    res = check_stale_reads(h.ops, config)
    assert res.figures["superseded_siblings"] is None
    assert why in res.figures["superseded_siblings_unjudged"]
    assert res.valid is Verdict.VALID


def test_membership_changes_within_the_clock_size_are_judged() -> None:
    h, _ = superseded_history()
    h.invoke("nemesis", "start-membership")
    h.nemesis("start-membership")  # three nodes and one join: 4 actors of at most 4
    h.call(2, "read", out=[1, 2])
    res = check_stale_reads(h.ops, dataclasses.replace(CAUSAL, vclock_max_entries=4))
    assert res.figures["superseded_siblings"] == 1 and res.valid is Verdict.INVALID


def test_write_context_and_clock_size_are_read_from_test_json_and_checked() -> None:
    config = TestConfig.from_json({"write_context": "last-read", "vclock_max_entries": 10})
    assert (config.write_context, config.vclock_max_entries) == ("last-read", 10)
    for bad in ({"write_context": "first-read"}, {"vclock_max_entries": 0},
                {"vclock_max_entries": "10"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TestConfig.from_json(bad)
