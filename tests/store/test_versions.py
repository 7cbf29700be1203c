"""Dotted version vectors: siblings, supersession, last-write-wins, pruning, encoding."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kvcheck.store.versions import (
    MAX_CONTEXT_ENTRIES,
    MAX_COUNTER,
    BadContext,
    Dot,
    Version,
    context_token,
    decode_versions,
    encode_versions,
    join,
    parse_context_token,
    prune,
    resolve,
    stamp,
    sync,
)

BIG = 100  # vector clock size limit that never prunes


def values(versions: list[Version]) -> list[bytes | None]:
    return sorted(v.value or b"" for v in versions)


def test_blind_put_becomes_a_sibling_and_a_put_with_context_supersedes_what_it_saw() -> None:
    _, state = stamp("x", [], {}, b"v1", 1, BIG)
    read_context = join(state)
    _, state = stamp("x", state, read_context, b"a", 2, BIG)  # saw v1: replaces it
    assert values(state) == [b"a"]
    _, state = stamp("x", state, {}, b"b", 3, BIG)  # saw nothing: sibling
    assert values(state) == [b"a", b"b"]
    _, state = stamp("x", state, join(state), b"c", 4, BIG)  # saw both
    assert values(state) == [b"c"]


def test_stale_context_supersedes_only_the_versions_it_covers() -> None:
    _, state = stamp("x", [], {}, b"v1", 1, BIG)
    old = join(state)
    _, state = stamp("x", state, {}, b"v2", 2, BIG)  # concurrent with v1
    _, state = stamp("x", state, old, b"v3", 3, BIG)  # saw v1 only
    assert values(state) == [b"v2", b"v3"]


def test_same_actor_blind_writes_do_not_overwrite_each_other() -> None:
    """The flaw of per-node vector clocks that dotted version vectors fix."""
    _, state = stamp("x", [], {}, b"a", 1, BIG)
    _, state = stamp("x", state, {}, b"b", 2, BIG)
    assert values(state) == [b"a", b"b"]
    assert {v.dot for v in state} == {Dot("x", 1), Dot("x", 2)}


def test_lww_keeps_the_latest_timestamp_whatever_the_causality() -> None:
    _, state = stamp("x", [], {}, b"late-clock", 50, BIG)
    _, state = stamp("y", state, {}, b"early-clock", 10, BIG)
    assert values(resolve(sync(state), "lww")) == [b"late-clock"]
    assert values(resolve(sync(state), "vclock")) == [b"early-clock", b"late-clock"]


def test_prune_drops_the_oldest_entries_but_never_the_stampers() -> None:
    context = {"a": (1, 10), "b": (1, 5), "c": (1, 30), "d": (4, 1)}
    assert prune(context, "d", 3) == {"a": (1, 10), "c": (1, 30), "d": (4, 1)}
    assert prune(context, "e", 3) == {"a": (1, 10), "c": (1, 30)}
    assert prune(context, "e", 10) == context


def test_pruned_clocks_make_false_siblings_never_lost_writes() -> None:
    state: list[Version] = []
    for i, actor in enumerate("abcd"):
        _, state = stamp(actor, state, join(state), f"v{i}".encode(), i, 2)
    assert b"v3" in values(state)


# -- sync is a join, and agrees with a model of causality --------------------------------------

versions_strategy = st.lists(
    st.tuples(st.sampled_from(["r1", "r2", "r3"]), st.integers(0, 3), st.booleans()),
    max_size=12,
)


def build(ops: list[tuple[str, int, bool]]) -> list[list[Version]]:
    """Replica states from stamps with random read contexts (for join properties)."""
    replicas: dict[str, list[Version]] = {"r1": [], "r2": [], "r3": []}
    snapshots: list[list[Version]] = []
    for i, (actor, source, use_context) in enumerate(ops):
        seen = snapshots[source % len(snapshots)] if snapshots and use_context else []
        _, replicas[actor] = stamp(actor, replicas[actor], join(seen), bytes([i]), i, BIG)
        snapshots.append(list(replicas[actor]))
    return list(replicas.values())


@given(versions_strategy)
def test_sync_is_commutative_associative_and_idempotent(ops: list[tuple[str, int, bool]]) -> None:
    a, b, c = build(ops)
    assert sync(a, b) == sync(b, a)
    assert sync(sync(a, b), c) == sync(a, sync(b, c))
    assert sync(a, a) == sync(a)
    assert sync(sync(a, b), b) == sync(a, b)


arbitrary_versions = st.dictionaries(
    st.builds(Dot, st.sampled_from(["r1", "r2", "r3"]), st.integers(1, 4)),
    st.dictionaries(st.sampled_from(["r1", "r2", "r3"]),
                    st.tuples(st.integers(1, 4), st.just(0))),
    max_size=8,
).map(lambda contexts: [Version(dot, context, b"v", 0) for dot, context in contexts.items()])


@given(arbitrary_versions)
def test_sync_keeps_exactly_the_versions_no_other_one_covers(versions: list[Version]) -> None:
    """Whatever the contexts, even one that claims its own version's dot."""
    kept = [v for v in versions if not any(o.covers(v.dot) for o in versions if o is not v)]
    assert sync(versions) == sorted(kept, key=lambda v: (v.dot.actor, v.dot.counter))


operations = st.lists(
    st.one_of(
        # write at replica, with the context of a read at replica (or blind)
        st.tuples(st.just("write"), st.sampled_from("ABC"), st.sampled_from("ABC-")),
        st.tuples(st.just("sync"), st.sampled_from("ABC"), st.sampled_from("ABC")),
    ),
    max_size=30,
)


@settings(max_examples=300)
@given(operations)
def test_siblings_are_exactly_the_writes_no_known_write_has_seen(
    ops: list[tuple[str, str, str]],
) -> None:
    """Model: each write records which writes its writer had seen (transitively); a replica's
    live writes are those it knows of that no other write it knows of has seen."""
    state: dict[str, list[Version]] = {r: [] for r in "ABC"}
    known: dict[str, set[int]] = {r: set() for r in "ABC"}
    seen_by: dict[int, set[int]] = {}

    def live(replica: str) -> set[int]:
        return {w for w in known[replica]
                if not any(w in seen_by[o] for o in known[replica] if o != w)}

    for i, (kind, here, there) in enumerate(ops):
        if kind == "write":
            observed = live(there) if there != "-" else set()
            context = join(state[there]) if there != "-" else {}
            seen_by[i] = set(observed).union(*(seen_by[w] for w in observed))
            _, state[here] = stamp(here, state[here], context, str(i).encode(), i, BIG)
            known[here] |= {i} | known[there] if there != "-" else {i}
        else:
            state[here] = sync(state[here], state[there])
            known[here] |= known[there]
        for replica in "ABC":
            assert {int(v.value or b"") for v in state[replica]} == live(replica)


# -- encoding ----------------------------------------------------------------------------------


@given(versions_strategy)
def test_versions_round_trip_through_their_encoding(ops: list[tuple[str, int, bool]]) -> None:
    for replica in build(ops):
        assert decode_versions(encode_versions(replica)) == replica
        assert parse_context_token(context_token(join(replica))) == join(replica)


@pytest.mark.parametrize("token", ["!!!", "aGVsbG8", "kZOpbjEu", "gA"])
def test_bad_context_tokens_are_rejected_clearly(token: str) -> None:
    with pytest.raises(BadContext, match="malformed causal context"):
        parse_context_token(token)


@pytest.mark.parametrize("clock", [
    {"n1.ab": (2**64 - 1, 0)}, {"n1.ab": (MAX_COUNTER + 1, 0)}, {"n1.ab": (1, 2**63)},
    {f"a{i}": (1, 0) for i in range(MAX_CONTEXT_ENTRIES + 1)},
])
def test_a_context_past_the_bounds_is_rejected_clearly(clock: dict[str, tuple[int, int]]) -> None:
    token = context_token(clock)  # msgpack encodes them all: a client can send them
    with pytest.raises(BadContext, match=r"out of bounds|entries"):
        parse_context_token(token)


def test_a_context_at_the_bounds_is_accepted() -> None:
    widest = {f"a{i}": (MAX_COUNTER, -(2**63)) for i in range(MAX_CONTEXT_ENTRIES)}
    assert parse_context_token(context_token(widest)) == widest


@given(st.dictionaries(st.sampled_from(["n1.ab", "n2.cd", "x"]),
                       st.tuples(st.integers(1, 2**64 - 1), st.integers(-(2**63), 2**64 - 1))))
@example({"n1.ab": (MAX_COUNTER, 2**63 - 1)})
def test_every_context_accepted_stamps_versions_that_encode(
        clock: dict[str, tuple[int, int]]) -> None:
    try:
        context = parse_context_token(context_token(clock))
    except BadContext:
        assert any(c > MAX_COUNTER or ms >= 2**63 for c, ms in clock.values())
        return
    version, siblings = stamp("n1.ab", [], context, b"v", 2**42, 10)
    assert version.dot.counter <= MAX_COUNTER + 1
    msgpack.packb(encode_versions(siblings), use_bin_type=True)  # no OverflowError


def test_empty_context_token_is_the_empty_context() -> None:
    assert parse_context_token("") == {}
    assert context_token({}) == ""


@pytest.mark.parametrize("raw", [
    None, [[]], [["a", 0, [], b"v", 1]], [["a", 1, [], "text", 1]], [["", 1, [], b"v", 1]],
    [["a", 1, [["b", 1]], b"v", 1]], [["a", True, [], b"v", 1]],
])
def test_malformed_versions_raise_value_error(raw: object) -> None:
    with pytest.raises(ValueError):
        decode_versions(raw)


lww_operations = st.lists(
    st.tuples(st.sampled_from(["write", "sync"]), st.sampled_from("ABC"),
              st.sampled_from("ABC"), st.integers(0, 5)),
    max_size=30,
)


@settings(max_examples=300)
@given(lww_operations)
@example([("write", "A", "A", 1), ("sync", "C", "A", 0), ("write", "B", "B", 4),
          ("sync", "A", "B", 0), ("write", "A", "A", 5)])  # A stamps its dot again; C has the old
def test_with_last_write_wins_replicas_that_exchange_everything_agree(
    ops: list[tuple[str, str, str, int]],
) -> None:
    """Last-write-wins keeps one version and forgets the others, their dots with them: a
    replica may stamp a dot it stamped before, with another value. Replicas must still agree
    once each has merged every other's state, whatever the order."""
    state: dict[str, list[Version]] = {r: [] for r in "ABC"}
    for i, (kind, here, there, clock) in enumerate(ops):
        if kind == "write":  # blind, as a last-write-wins client writes
            _, versions = stamp(here, state[here], {}, str(i).encode(), clock, BIG)
            state[here] = resolve(versions, "lww")
        else:
            state[here] = resolve(sync(state[here], state[there]), "lww")
    for _ in range(2):
        for here in "ABC":
            for there in "ABC":
                state[here] = resolve(sync(state[here], state[there]), "lww")
    assert state["A"] == state["B"] == state["C"]
