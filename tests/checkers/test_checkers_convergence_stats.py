"""Convergence and statistics: accepted histories and rejected twins."""

from __future__ import annotations

from typing import Any

import pytest
from checker_builders import H

from kvcheck.checkers import TestConfig, Verdict, check_convergence, check_stats, nemesis_windows

S = 1_000_000_000


def final_state(samples: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return {"format": "kvcheck-final-state", "version": 1, "samples": samples, **kw}


def sample(t: int, nodes: dict[str, Any]) -> dict[str, Any]:
    return {"time": t, "nodes": nodes}


def v(x: Any) -> dict[str, Any]:
    return {"versions": [{"value": x, "clock": {"n1": 1}}]}


def test_converged_replicas_and_time_to_converge() -> None:
    fs = final_state([
        sample(11 * S, {"n1": {"a": v(1), "b": v(2)}, "n2": {"a": v(0), "b": v(2)}}),
        sample(12 * S, {"n1": {"a": v(1), "b": v(2)}, "n2": {"a": v(1), "b": v(2)}}),
    ], heal_time=10 * S)
    res = check_convergence([], TestConfig(), fs)
    assert res.valid is Verdict.VALID
    assert res.figures["converged_keys"] == 2
    assert res.figures["convergence_ms"]["max"] == 2000.0  # key a: heal at 10 s, agreed at 12 s
    assert res.figures["convergence_ms"]["p50"] == 1000.0  # key b: agreed at the first sample
    assert res.figures["by_key"] == {
        "a": {"replicas": "converged", "converged_after_ms": 2000.0},
        "b": {"replicas": "converged", "converged_after_ms": 1000.0}}


def test_diverged_key_is_invalid_and_named() -> None:
    fs = final_state([sample(5, {"n1": {"a": v(1)}, "n2": {"a": v(2)}, "n3": {"a": v(1)}})])
    res = check_convergence([], TestConfig(), fs)
    assert res.valid is Verdict.INVALID
    (a,) = res.anomalies
    assert a.kind == "diverged" and a.key == "a"
    assert a.details["replicas"]["n2"] != a.details["replicas"]["n1"]
    assert res.figures["never_converged"] == ["a"]
    assert res.figures["by_key"] == {"a": {"replicas": "diverged"}}


def test_replica_missing_a_key_disagrees_when_preference_list_known() -> None:
    nodes = {"n1": {"a": {"digest": "x"}}, "n2": {}}
    assert check_convergence([], None, final_state([sample(1, nodes)])).valid is Verdict.VALID
    fs = final_state([sample(1, nodes)], replicas={"a": ["n1", "n2"]})
    assert check_convergence([], None, fs).valid is Verdict.INVALID


def test_unreachable_replica_is_unknown() -> None:
    fs = final_state([sample(1, {"n1": {"a": v(1)}, "n2": None})], replicas={"a": ["n1", "n2"]})
    res = check_convergence([], None, fs)
    assert res.valid is Verdict.UNKNOWN
    assert res.figures["undecided_keys"] == 1
    assert res.figures["by_key"] == {"a": {"replicas": "undecided"}}


def test_malformed_final_state_is_rejected() -> None:
    with pytest.raises(ValueError, match="samples"):
        check_convergence([], None, {"format": "kvcheck-final-state", "version": 1})


def test_final_reads_must_agree() -> None:
    h = H()
    h.call(0, "write", 1)
    h.call(1, "read", out=[1, 2], final=True, node="n1")
    h.call(2, "read", out=[2, 1], final=True, node="n2")
    assert check_convergence(h.ops).valid is Verdict.VALID
    bad = h.call(3, "read", out=[1], final=True, node="n3")
    res = check_convergence(h.ops)
    assert res.valid is Verdict.INVALID
    (a,) = res.anomalies
    assert a.kind == "final-reads-disagree"
    assert set(bad) <= set(a.ops)
    assert len(a.ops) == 6
    assert res.figures["by_key"] == {"k": {"final_reads": "disagree"}}


def test_nothing_to_judge_is_unknown() -> None:
    assert check_convergence([]).valid is Verdict.UNKNOWN


# --- stats -----------------------------------------------------------------------------------


def test_stats_counts_latency_siblings_and_availability() -> None:
    h = H()
    h.call(0, "write", 1, time=0)
    h.ops.pop()
    h.ok(0, "write", 1, time=10_000_000)  # 10 ms
    h.nemesis("start", {"fault": "partition", "targets": ["n1"]}, time=20_000_000)
    h.call(1, "write", 2, type_="info", time=30_000_000)
    h.call(1, "read", out=[1, 2], time=40_000_000)
    h.nemesis("stop", {"fault": "partition"}, time=50_000_000)
    h.call(2, "read", out=[2], time=60_000_000)
    h.call(2, "read", out=None, type_="fail", time=70_000_000)
    res = check_stats(h.ops, TestConfig())
    f = res.figures
    assert res.valid is Verdict.VALID
    assert f["counts"]["write"] == {"ok": 1, "fail": 0, "info": 1}
    assert f["counts"]["read"] == {"ok": 2, "fail": 1, "info": 0}
    assert f["latency_ms"]["write"]["max"] == 10.0
    assert f["throughput"]["ok_per_second_series"] == [3]
    assert f["siblings"] == {"reads": 2, "reads_with_siblings": 1, "rate": 0.5, "max": 2,
                             "histogram": {"2": 1}}
    (w,) = f["availability"]["windows"]
    assert w["fault"] == "partition" and w["targets"] == ["n1"]
    assert (w["calls"], w["ok"], w["availability"]) == (2, 1, 0.5)
    assert f["availability"]["outside_faults"] == {"calls": 3, "ok": 2,
                                                  "availability": round(2 / 3, 6)}


def test_nemesis_windows_open_until_end_and_by_f_name() -> None:
    h = H()
    h.nemesis("start-partition", ["n1", "n2"])
    h.call(0, "write", 1)
    h.nemesis("start-clock")
    h.nemesis("stop-partition")
    h.call(0, "write", 2)
    ws = nemesis_windows(h.ops)
    assert [(w["fault"], w["start_index"], w["end_index"]) for w in ws] == [
        ("partition", 0, 4), ("clock", 3, 6)]


def test_heal_time_comes_from_the_history_and_heal_closes_windows() -> None:
    h = H()
    h.nemesis("start-partition", {"fault": "partition", "targets": ["n2"]}, time=1 * S)
    h.call(0, "write", 1, time=2 * S)
    h.nemesis("heal", {"fault": "all"}, time=4 * S)
    (w,) = nemesis_windows(h.ops)
    assert (w["fault"], w["end_ns"]) == ("partition", 4 * S)
    fs = final_state([sample(5 * S, {"n1": {"a": v(0)}, "n2": {"a": v(1)}}),
                      sample(7 * S, {"n1": {"a": v(1)}, "n2": {"a": v(1)}})])
    res = check_convergence(h.ops, None, fs)
    assert res.valid is Verdict.VALID
    assert res.figures["convergence_ms"]["max"] == 3000.0  # heal at 4 s, agreed from 7 s
