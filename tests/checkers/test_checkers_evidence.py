"""A verdict needs evidence: a checker that saw too little to judge says unknown, and why;
a run in which some operation type never succeeded is invalid. Each rule beside a twin that has
just enough evidence to be valid."""

from __future__ import annotations

from typing import Any

from checker_builders import H

from kvcheck.checkers import (
    TestConfig,
    Verdict,
    check_convergence,
    check_history,
    check_linearizable,
    check_lost_writes,
    check_stale_reads,
    check_stats,
)

LATEST = TestConfig(guarantee="no-stale-reads")
SET = TestConfig(workload="set", guarantee="no-lost-writes")


def test_an_operation_type_that_never_succeeded_makes_stats_invalid() -> None:
    h = H()
    h.call(0, "write", 1, type_="fail")
    h.call(0, "write", 2, type_="info")
    h.call(1, "read", None, out=None)
    res = check_stats(h.ops)
    assert res.valid is Verdict.INVALID
    [anomaly] = res.anomalies
    assert anomaly.kind == "never-succeeded" and anomaly.details == {"f": "write"}
    assert anomaly.ops == (0, 2)
    assert "none of the 2 write operation(s) succeeded" in anomaly.message


def test_stats_is_valid_when_every_type_succeeded_once() -> None:
    h = H()
    h.call(0, "write", 1, type_="fail")
    h.call(0, "write", 2)
    h.call(1, "read", None, out=2)
    res = check_stats(h.ops)
    assert res.valid is Verdict.VALID
    assert res.basis == "2 of 3 operations succeeded, every type at least once (read, write)"


def test_final_reads_do_not_count_as_the_test_succeeding() -> None:
    h = H()
    h.call(0, "read", None, type_="fail")
    h.call(1, "read", None, out=None, final=True)
    assert check_stats(h.ops).valid is Verdict.INVALID


def test_a_history_without_client_operations_is_unknown_to_stats() -> None:
    h = H()
    h.nemesis("start-partition")
    res = check_stats(h.ops)
    assert res.valid is Verdict.UNKNOWN and "no client operation" in res.basis


def test_no_read_that_could_have_been_stale_is_unknown() -> None:
    h = H()
    h.invoke(0, "write", 1)
    h.call(1, "read", None, out=None)  # began before the write completed: cannot be stale
    h.ok(0, "write", 1)
    res = check_stale_reads(h.ops, LATEST)
    assert res.valid is Verdict.UNKNOWN
    assert res.figures["reads"] == 1 and res.figures["reads_checked"] == 0
    assert res.basis.startswith("no read could have been stale")


def test_one_read_that_could_have_been_stale_is_evidence() -> None:
    h = H()
    h.invoke(0, "write", 1)
    h.call(1, "read", None, out=None)
    h.ok(0, "write", 1)
    h.call(1, "read", None, out=1)
    res = check_stale_reads(h.ops, LATEST)
    assert res.valid is Verdict.VALID and res.figures["reads_checked"] == 1
    assert res.basis == "1 of 2 reads could have been stale, over 1 key"


def test_stale_reads_measured_only_stay_valid_without_evidence() -> None:
    h = H()
    h.call(1, "read", None, out=None)
    res = check_stale_reads(h.ops, TestConfig(guarantee="eventual-convergence"))
    assert res.valid is Verdict.VALID


def set_history(add: str, final: bool) -> list[Any]:
    h = H("s")
    h.call(0, "add", 1, type_=add)
    h.call(1, "read", None, out=[1] if add == "ok" else [], final=final)
    return h.ops


def test_lost_writes_need_an_acknowledged_add_and_a_final_read() -> None:
    unacknowledged = check_lost_writes(set_history("info", final=True), SET)
    assert unacknowledged.valid is Verdict.UNKNOWN
    assert unacknowledged.basis == "no add was acknowledged: no write could have been lost"
    unread = check_lost_writes(set_history("ok", final=False), SET)
    assert unread.valid is Verdict.UNKNOWN
    assert unread.basis == "no final read succeeded: lost elements cannot be told"
    enough = check_lost_writes(set_history("ok", final=True), SET)
    assert enough.valid is Verdict.VALID
    assert enough.basis.startswith("1 acknowledged element(s) over 1 key(s), 1 final read(s)")


def final_state(nodes: dict[str, Any]) -> dict[str, Any]:
    return {"format": "kvcheck-final-state", "version": 1,
            "samples": [{"time": 0, "nodes": nodes}]}


def test_empty_replicas_agree_but_prove_nothing() -> None:
    empty = check_convergence([], TestConfig(), final_state({"n1": {}, "n2": {}}))
    assert empty.valid is Verdict.UNKNOWN and empty.basis.startswith("nothing to judge")
    held = {"versions": [{"value": 1, "clock": {"n1": 1}}]}
    agree = check_convergence([], TestConfig(), final_state({"n1": {"a": held},
                                                             "n2": {"a": held}}))
    assert agree.valid is Verdict.VALID and agree.figures["keys_held"] == 1


def test_final_reads_of_nothing_prove_nothing() -> None:
    h = H()
    h.call(0, "read", None, out=None, final=True, node="n1")
    h.call(1, "read", None, out=[], final=True, node="n2")
    assert check_convergence(h.ops, TestConfig()).valid is Verdict.UNKNOWN
    h.call(1, "read", None, out=[3], final=True, node="n2", key="b")
    h.call(0, "read", None, out=3, final=True, node="n1", key="b")
    assert check_convergence(h.ops, TestConfig()).valid is Verdict.VALID


def test_writes_nobody_observed_are_unknown_to_the_linearizability_checker() -> None:
    h = H()
    h.call(0, "write", 1)
    h.call(1, "read", None, type_="fail")
    res = check_linearizable(h.ops, model="register")
    assert res.valid is Verdict.UNKNOWN and res.basis.startswith("no read or compare-and-set")
    h.call(1, "read", None, out=1)
    assert check_linearizable(h.ops, model="register").valid is Verdict.VALID


def test_a_run_where_every_request_failed_is_not_valid() -> None:
    """The vacuous pass this rule exists for: clients never got an answer, yet the nodes
    answered for the final state (empty) and the final reads (nothing)."""
    h = H()
    for p in range(3):
        h.call(p, "write", p, type_="info")
        h.call(p + 10, "read", None, type_="fail")
    for node in ("n1", "n2", "n3"):
        h.call(20, "read", None, out=None, final=True, node=node)
    results = check_history(h.ops, TestConfig(guarantee="no-stale-reads"),
                            final_state({"n1": {}, "n2": {}, "n3": {}}))
    assert results.valid is Verdict.INVALID
    assert {c.checker: c.valid for c in results.checks} == {
        "stats": Verdict.INVALID, "stale-reads": Verdict.UNKNOWN,
        "convergence": Verdict.UNKNOWN}
