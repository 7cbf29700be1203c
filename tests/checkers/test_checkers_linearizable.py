"""Linearizability: hand-written twins, and agreement with a brute-force reference."""

from __future__ import annotations

import random
from typing import Any

import pytest
from checker_builders import H
from hypothesis import HealthCheck, given, settings
from lin_reference import linearizable as reference
from lin_strategies import register_histories

from kvcheck.checkers.history import Call, Op, pair_calls
from kvcheck.checkers.linearizable import check_key, check_linearizable, prepare
from kvcheck.checkers.linearizable.search import OutOfBudget, search
from kvcheck.checkers.linearizable.unique import NotApplicable, check_unique
from kvcheck.checkers.linearizable.witness import _prefix, _shortest_failing_prefix
from kvcheck.checkers.models import CAS_REGISTER, FREE, REGISTER
from kvcheck.checkers.result import Verdict

SETTINGS = settings(max_examples=1500, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def verdict(ops: list[Op], model: str = "register", **kw: Any) -> Any:
    return check_linearizable(ops, model, **kw)


def witness_calls(calls: list[Call], witness: tuple[int, ...]) -> list[Call]:
    names = set(witness)
    return [c for c in calls if c.inv_index in names]


# --- hand-written twins ----------------------------------------------------------------------


def test_sequential_write_then_read_is_valid() -> None:
    h = H()
    h.call(0, "write", 1)
    h.call(1, "read", None, out=1)
    assert verdict(h.ops).valid is Verdict.VALID


def test_stale_read_after_completed_write_is_invalid_and_named() -> None:
    h = H()
    w1 = h.call(0, "write", 1)
    w2 = h.call(0, "write", 2)
    r = h.call(1, "read", None, out=1)
    res = verdict(h.ops)
    assert res.valid is Verdict.INVALID
    (a,) = res.anomalies
    assert a.kind == "nonlinearizable"
    assert set(a.ops) == {*w1, *w2, *r}


def test_concurrent_read_may_see_old_or_new_value() -> None:
    for seen in (1, 2):
        h = H()
        h.call(0, "write", 1)
        i = h.invoke(0, "write", 2)
        h.call(1, "read", None, out=seen)
        h.ok(0, "write", 2)
        assert i == 2
        assert verdict(h.ops).valid is Verdict.VALID


def test_read_of_initial_nil_before_any_write_is_valid() -> None:
    h = H()
    h.call(1, "read", None, out=None)
    h.call(0, "write", 1)
    assert verdict(h.ops).valid is Verdict.VALID


def test_read_of_nil_after_completed_write_is_invalid() -> None:
    h = H()
    w = h.call(0, "write", 1)
    r = h.call(1, "read", None, out=None)
    res = verdict(h.ops)
    assert res.valid is Verdict.INVALID
    assert set(res.anomalies[0].ops) == {*w, *r}


def test_read_of_never_written_value_is_invalid() -> None:
    h = H()
    h.call(0, "write", 1)
    r = h.call(1, "read", None, out=7)
    res = verdict(h.ops)
    assert res.valid is Verdict.INVALID
    assert res.anomalies[0].ops == r


def test_failed_write_did_not_happen() -> None:
    h = H()
    h.call(0, "write", 1, type_="fail")
    r = h.call(1, "read", None, out=1)
    res = verdict(h.ops)
    assert res.valid is Verdict.INVALID
    assert res.anomalies[0].ops == r


def test_info_write_may_take_effect_later() -> None:
    h = H()
    h.call(0, "write", 1, type_="info")
    h.call(1, "read", None, out=None)
    h.call(2, "read", None, out=1)
    assert verdict(h.ops).valid is Verdict.VALID


def test_info_write_cannot_be_unseen_after_seen_if_nothing_else_writes() -> None:
    h = H()
    w = h.call(0, "write", 1, type_="info")
    r1 = h.call(1, "read", None, out=1)
    r2 = h.call(2, "read", None, out=None)
    res = verdict(h.ops)
    assert res.valid is Verdict.INVALID
    assert set(res.anomalies[0].ops) == {*w, *r1, *r2}


def test_read_finishing_before_its_write_begins_is_invalid() -> None:
    h = H()
    r = h.call(1, "read", None, out=1)
    w = h.call(0, "write", 1)
    res = verdict(h.ops)
    assert res.valid is Verdict.INVALID
    assert set(res.anomalies[0].ops) == {*r, *w}


def test_sibling_read_is_not_linearizable_but_single_sibling_is() -> None:
    h = H()
    h.call(0, "write", 1)
    h.call(1, "read", None, out=[1])
    assert verdict(h.ops, sibling_reads=True).valid is Verdict.VALID
    h2 = H()
    h2.call(0, "write", 1)
    i = h2.invoke(0, "write", 2)
    r = h2.call(1, "read", None, out=[1, 2])
    h2.ok(0, "write", 2)
    res = verdict(h2.ops, sibling_reads=True)
    assert res.valid is Verdict.INVALID
    assert res.anomalies[0].ops == r
    assert i == 2


def test_keys_are_independent_and_named() -> None:
    h = H()
    h.call(0, "write", 1, key="a")
    h.call(1, "read", None, out=1, key="b")
    h.call(1, "read", None, out=1, key="a")
    res = verdict(h.ops)
    assert res.valid is Verdict.INVALID
    assert [a.key for a in res.anomalies] == ["b"]
    assert res.figures["keys"] == 2


def test_cas_register_valid_and_invalid_twins() -> None:
    h = H()
    h.call(0, "write", 0)
    h.call(1, "cas", (0, 1))
    h.call(2, "read", None, out=1)
    assert verdict(h.ops, "cas-register").valid is Verdict.VALID
    h2 = H()
    h2.call(0, "write", 0)
    c = h2.call(1, "cas", (1, 2))
    res = verdict(h2.ops, "cas-register")
    assert res.valid is Verdict.INVALID
    # The unobserved write is stripped: the cas alone cannot follow the initial nil.
    assert res.anomalies[0].ops == c
    assert res.anomalies[0].details["algorithm"] == "wgl"


def test_failed_cas_is_ignored_and_info_cas_is_optional() -> None:
    h = H()
    h.call(0, "write", 0)
    h.call(1, "cas", (5, 6), type_="fail")
    h.call(2, "cas", (7, 8), type_="info")
    h.call(3, "read", None, out=0)
    assert verdict(h.ops, "cas-register").valid is Verdict.VALID


def test_cas_model_rejects_unknown_op() -> None:
    h = H()
    h.call(0, "increment", 1)
    with pytest.raises(ValueError, match="increment"):
        verdict(h.ops, "cas-register")


def test_spent_time_budget_gives_unknown_never_a_guess() -> None:
    h = H()
    h.call(0, "write", 0)
    h.call(0, "write", 0)  # a repeated value: the search runs
    h.call(1, "read", None, out=0)
    assert verdict(h.ops, time_limit=1.0).valid is Verdict.VALID
    res = verdict(h.ops, time_limit=-1.0)
    assert res.valid is Verdict.UNKNOWN
    assert res.figures["unknown_keys"] == [{"key": "k", "reason": "out of time budget"}]


def test_budget_exhaustion_reports_unknown() -> None:
    h = H()
    n = 12
    for p in range(n):
        h.invoke(p, "write", p % 2)
    for p in range(n):
        h.ok(p, "write", p % 2)
    for v in (0, 1, 0, 1, 0, 1):
        h.call(50, "read", None, out=v)
    res = verdict(h.ops, time_limit=-1.0, memory_limit=1)
    assert res.valid is Verdict.UNKNOWN
    assert res.figures["unknown_keys"][0]["key"] == "k"


def test_parallel_workers_agree_with_serial() -> None:
    h = H()
    for k in range(6):
        h.call(0, "write", 0, key=k)
        h.call(0, "write", 0, key=k)  # repeated values: every key needs the search
        h.call(1, "read", None, out=0 if k != 3 else 99, key=k)
    serial = verdict(h.ops, "cas-register", workers=1)
    parallel = verdict(h.ops, "cas-register", workers=2)
    assert serial.figures["workers"] == 1 and parallel.figures["workers"] == 2
    assert serial.valid is parallel.valid is Verdict.INVALID
    assert [a.key for a in serial.anomalies] == [a.key for a in parallel.anomalies] == [3]
    assert serial.anomalies[0].ops == parallel.anomalies[0].ops


def long_cas_history(bad_at: int | None, rounds: int = 60) -> tuple[list[Op], int | None]:
    """Three clients doing overlapping write/cas/read rounds on values 0..2; optionally one
    read in round ``bad_at`` returns a value the register cannot hold then."""
    h = H()
    bad = None
    value = 0
    h.call(0, "write", 0)
    for r in range(rounds):
        new = (value + 1) % 3
        h.invoke(0, "cas", (value, new))
        h.invoke(1, "read")
        h.ok(1, "read", value)  # concurrent with the cas: the old value is fine
        h.ok(0, "cas", (value, new))
        value = new
        if r == bad_at:
            bad = h.invoke(2, "read")
            h.ok(2, "read", (value + 1) % 3)
        else:
            h.call(2, "read", None, out=value)
        if r % 7 == 3:
            h.invoke(3 + r, "cas", (value, value))  # crashed cas ops that change nothing
            h.info(3 + r, "cas", (value, value))
    return h.ops, bad


def test_window_of_long_invalid_history_is_small_and_non_linearizable() -> None:
    ops, _ = long_cas_history(None)
    assert verdict(ops, "cas-register").valid is Verdict.VALID
    ops, bad = long_cas_history(40)
    res = verdict(ops, "cas-register")
    assert res.valid is Verdict.INVALID
    (a,) = res.anomalies
    assert bad in a.ops
    assert a.details["witness_calls"] <= 4
    assert min(a.ops) > 100  # the window starts long after the beginning
    sub = witness_calls(pair_calls(ops), a.ops)
    assert not reference(sub, init="any" if a.details["from_any_state"] else None)


# --- properties against the reference ----------------------------------------------------------


def _key_verdicts(ops: list[Op], model: Any, sibling_reads: bool = False) -> tuple[bool, bool]:
    calls = pair_calls(ops)
    prepared = prepare(calls, model, sibling_reads)
    wgl_ok, _, _ = search(prepared, model, model.init, float("inf"), 1 << 30)
    ref = reference(calls, sibling_reads=sibling_reads)
    return wgl_ok, ref


@SETTINGS
@given(register_histories())
def test_unique_value_algorithm_and_wgl_agree_with_reference(ops: list[Op]) -> None:
    calls = pair_calls(ops)
    prepared = prepare(calls, REGISTER)
    fast_ok, wit, _ = check_unique(prepared, None)
    wgl_ok, _, _ = search(prepared, REGISTER, None, float("inf"), 1 << 30)
    ref = reference(calls)
    assert fast_ok == ref
    assert wgl_ok == ref
    if not ref:
        names = {i for j in wit for i in prepared[j][5]}
        assert not reference(witness_calls(calls, tuple(names)))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(register_histories(siblings=True))
def test_sibling_reads_agree_with_reference(ops: list[Op]) -> None:
    calls = pair_calls(ops)
    prepared = prepare(calls, REGISTER, sibling_reads=True)
    fast_ok, _, _ = check_unique(prepared, None)
    assert fast_ok == reference(calls, sibling_reads=True)


@SETTINGS
@given(register_histories(cas=True, unique=False))
def test_wgl_agrees_with_reference_on_cas_registers(ops: list[Op]) -> None:
    wgl_ok, ref = _key_verdicts(ops, CAS_REGISTER)
    assert wgl_ok == ref


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(register_histories(cas=True, unique=False, max_calls=8))
def test_wgl_witness_is_non_linearizable_on_its_own(ops: list[Op]) -> None:
    calls = pair_calls(ops)
    res = check_key("k", prepare(calls, CAS_REGISTER), CAS_REGISTER)
    ref = reference(calls)
    assert (res.valid is Verdict.VALID) == ref
    if not ref:
        sub = witness_calls(calls, res.witness)
        assert sub
        # From the real initial state, and -- for windows cut mid-history -- from any state.
        assert not reference(sub)
        if res.details["from_any_state"]:
            assert not reference(sub, init="any")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(register_histories(keys=("a", "b"), max_calls=8))
def test_keys_compose(ops: list[Op]) -> None:
    calls = pair_calls(ops)
    by_key: dict[Any, list[Call]] = {}
    for c in calls:
        by_key.setdefault(c.key, []).append(c)
    linearizable = all(reference(cs) for cs in by_key.values())
    observed = any(c.type == "ok" and c.f in ("read", "cas") for c in calls)
    # a linearizable history in which nothing observed the registers proves nothing: unknown
    expected = (Verdict.VALID if observed else Verdict.UNKNOWN) if linearizable \
        else Verdict.INVALID
    assert verdict(ops).valid is expected


def test_unique_algorithm_declines_duplicate_values_and_cas() -> None:
    h = H()
    h.call(0, "write", 1)
    h.call(1, "write", 1)
    with pytest.raises(NotApplicable):
        check_unique(prepare(pair_calls(h.ops), REGISTER), None)
    h2 = H()
    h2.call(0, "cas", (None, 1))
    with pytest.raises(NotApplicable):
        check_unique(prepare(pair_calls(h2.ops), CAS_REGISTER), None)


def test_free_initial_state_binds_on_first_read() -> None:
    h = H()
    h.call(1, "read", None, out=5)
    h.call(0, "write", 1)
    h.call(1, "read", None, out=1)
    prepared = prepare(pair_calls(h.ops), REGISTER)
    assert check_unique(prepared, FREE)[0]
    assert not check_unique(prepared, None)[0]
    h.call(2, "read", None, out=6)
    assert not check_unique(prepare(pair_calls(h.ops), REGISTER), FREE)[0]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(register_histories(max_calls=40, nprocs=5))
def test_unique_value_algorithm_agrees_with_wgl_on_larger_histories(ops: list[Op]) -> None:
    prepared = prepare(pair_calls(ops), REGISTER)
    fast_ok, wit, _ = check_unique(prepared, None)
    wgl_ok, _, _ = search(prepared, REGISTER, None, float("inf"), 1 << 30)
    assert fast_ok == wgl_ok
    if not fast_ok:
        # the named clusters alone are already non-linearizable
        sub = [prepared[i] for i in sorted(set(wit))]
        assert not search(sub, REGISTER, None, float("inf"), 1 << 30)[0]


def test_a_window_from_any_state_may_start_in_a_value_written_later() -> None:
    """Found by Hypothesis: a read of 1 completing before the write of 1 began is fine in a
    window that starts in an unknown state (it may be 1), so the window must grow."""
    raw = [(0, 1, "invoke", "cas", (None, 0)), (1, 0, "invoke", "cas", (None, 1)),
           (2, 0, "ok", "cas", (None, 1)), (3, 0, "invoke", "read", None),
           (4, 0, "ok", "read", 1), (5, 0, "invoke", "write", 1), (6, 0, "info", "write", 1),
           (7, 2, "invoke", "read", None), (8, 1, "fail", "cas", (None, 0)),
           (9, 2, "ok", "read", None)]
    ops = [Op(index=i, time=i, process=p, type=t, f=f, key="k", value=v)
           for i, p, t, f, v in raw]
    calls = pair_calls(ops)
    res = check_key("k", prepare(calls, CAS_REGISTER), CAS_REGISTER)
    assert res.valid is Verdict.INVALID
    sub = witness_calls(calls, res.witness)
    assert not reference(sub, init="any") and 7 in res.witness


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(register_histories(cas=True, unique=False, max_calls=10))
def test_the_search_frontier_ends_the_shortest_failing_prefix(ops: list[Op]) -> None:
    """Where the search gave up is where the shortest failing prefix ends: the same prefix a
    binary search over every completion finds, one search instead of many."""
    prepared = sorted(prepare(pair_calls(ops), CAS_REGISTER))
    found, _, frontier = search(prepared, CAS_REGISTER, None, float("inf"), 1 << 30)
    if found:
        return

    def fails(calls: Any, init: Any) -> bool:
        return not search(calls, CAS_REGISTER, init, float("inf"), 1 << 30)[0]

    assert _prefix(prepared, frontier + 1) == _shortest_failing_prefix(
        prepared, None, fails, float("inf"))


def busy_cas_key(clients: int, calls: int, seed: int) -> list[Op]:
    """One cas register, ``clients`` clients always busy, values 0..4: each call takes effect
    at a random moment while in flight (so the history is linearizable); 3 % crash (``info``)
    and take effect later or never."""
    rng = random.Random(seed)
    h = H()
    state: Any = None
    pending: dict[int, list[Any]] = {}  # client -> [f, value, applied, out]
    process = list(range(clients))

    def apply(call: list[Any]) -> None:
        nonlocal state
        f, value = call[0], call[1]
        if f == "read":
            call[3] = state
        elif f == "write":
            state = value
        elif state == value[0]:
            call[3], state = True, value[1]
        else:
            call[3] = False
        call[2] = True

    while len(h.ops) < 2 * calls:
        c = rng.randrange(clients)
        call = pending.get(c)
        if call is None:
            f = rng.choice(["read", "read", "write", "cas"])
            value = (rng.randrange(5) if f == "write" else
                     (rng.randrange(5), rng.randrange(5)) if f == "cas" else None)
            pending[c] = [f, value, False, None]
            h.invoke(process[c], f, value)
        elif not call[2] and rng.random() < 0.5:
            apply(call)
        elif rng.random() < 0.03:
            del pending[c]
            h.info(process[c], call[0], call[1])
            process[c] += clients
            if not call[2] and call[0] != "read" and rng.random() < 0.5:
                apply(call)  # a crashed call taking effect later
        else:
            del pending[c]
            if not call[2]:
                apply(call)
            f, value, _, out = call
            if f == "cas" and not out:
                h.fail(process[c], f, value)
            else:
                h.ok(process[c], f, out if f == "read" else value)
    return h.ops


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_busy_cas_key_is_decided_without_trying_every_order(seed: int) -> None:
    """Thirty clients on one cas key: the orders of the calls in flight are past counting, but
    a read legal now is linearized now, and alike calls are taken in one order; the search
    explores tens of configurations per call (without these rules, millions in all: the
    benchmark's 30-client key was undecided in 20 s)."""
    ops = busy_cas_key(30, 3000, seed)
    prepared = sorted(prepare(pair_calls(ops), CAS_REGISTER))
    found, configurations, _ = search(prepared, CAS_REGISTER, None, float("inf"), 1 << 30)
    assert found
    assert configurations < 40 * len(prepared)


def test_a_key_out_of_budget_says_how_far_its_search_got() -> None:
    """A budget spent on a long history names the completion the search never got past: the
    history before it has a linearization."""
    ops = busy_cas_key(30, 3000, 1)
    prepared = sorted(prepare(pair_calls(ops), CAS_REGISTER))
    with pytest.raises(OutOfBudget) as spent:
        search(prepared, CAS_REGISTER, None, float("inf"), memory_limit=2_000_000)
    reached = spent.value.linearized_before
    assert reached is not None and 0 < reached < len(ops)
    assert search(_prefix(prepared, reached), CAS_REGISTER, None, float("inf"), 1 << 30)[0]
    res = check_key("k", prepared, CAS_REGISTER, memory_limit=2_000_000)
    assert res.valid is Verdict.UNKNOWN
    assert res.message == (f"out of memory budget; the calls before op {reached} have a "
                           "linearization, none was found past it")
