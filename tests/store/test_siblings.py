"""The sibling cap, in node logic: a write that supersedes none of a key's ``siblings_max``
siblings is refused and changes nothing; one that supersedes any is always taken; merges are
never refused, so replicas converge even above the cap, and a write with a read's context
resolves it. Real processes: ``test_limits.py``."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from kvcheck.store.antientropy import SharedHashes
from kvcheck.store.config import ClusterConfig
from kvcheck.store.hints import Hints
from kvcheck.store.node import Found, TooManySiblings, Written
from kvcheck.store.replica import AtSiblingCap, Replica, Stamped
from kvcheck.store.ring import Member, Ring
from kvcheck.store.sim import Simulation
from kvcheck.store.storage import MemoryStorage
from kvcheck.store.versions import Clock, join

NODES = ["n1", "n2", "n3", "n4", "n5"]
CAPPED = ClusterConfig(siblings_warning=2, siblings_max=3)


def replicas(sim: Simulation, key: bytes) -> tuple[str, ...]:
    return sim.ring.preference_list(key, sim.cluster.n)


def fill(sim: Simulation, via: str, key: bytes, count: int) -> list[Written]:
    """``count`` blind writes of ``key`` through ``via``, one after the other, all taken."""
    written = []
    for i in range(count):
        answer = sim.wait_for(sim.put(via, key, b"blind-%d" % i))
        assert isinstance(answer, Written), answer
        written.append(answer)
    return written


def stored(sim: Simulation, key: bytes) -> dict[str, int]:
    """How many siblings of ``key`` each replica stores."""
    return {node: len(sim.nodes[node].disk.get(key)) for node in replicas(sim, key)}


def test_a_blind_write_past_the_cap_is_refused_and_changes_no_replica() -> None:
    sim = Simulation(NODES, CAPPED, seed=31)
    key = b"k"
    via = replicas(sim, key)[0]  # it stamps the write itself
    assert [w.siblings for w in fill(sim, via, key, 3)] == [1, 2, 3]
    sim.run_for(1)
    before = {node: sim.nodes[node].disk.get(key) for node in sim.nodes}
    assert sim.wait_for(sim.put(via, key, b"one too many")) == TooManySiblings(3, 3)
    assert sim.wait_for(sim.put(via, key, None)) == TooManySiblings(3, 3)  # a blind delete
    sim.run_for(1)
    assert {node: sim.nodes[node].disk.get(key) for node in sim.nodes} == before
    counters = sim.nodes[via].logic.counters
    assert (counters["siblings_refused"], counters["siblings_warnings"]) == (2, 1)
    assert sim.nodes[via].logic.status()["requests_in_flight"] == 0


def test_a_stamper_that_is_not_the_coordinator_refuses_it_over_the_wire() -> None:
    sim = Simulation(NODES, CAPPED, seed=32)
    key = b"k"
    outsider = next(node for node in NODES if node not in replicas(sim, key))
    fill(sim, outsider, key, 3)
    assert sim.wait_for(sim.put(outsider, key, b"one too many")) == TooManySiblings(3, 3)
    assert sim.nodes[outsider].logic.counters["siblings_refused"] == 1
    sim.run_for(1)
    assert stored(sim, key) == {node: 3 for node in replicas(sim, key)}


def test_at_the_cap_a_write_that_supersedes_a_sibling_is_taken_and_a_read_context_resolves(
) -> None:
    sim = Simulation(NODES, CAPPED, seed=33)
    key = b"k"
    via = replicas(sim, key)[0]
    first, _, _ = fill(sim, via, key, 3)
    replaced = sim.wait_for(sim.put(via, key, b"replaces the first", context=first.context))
    assert isinstance(replaced, Written) and replaced.siblings == 3
    read = sim.wait_for(sim.get(via, key))
    assert isinstance(read, Found) and len(read.versions) == 3
    resolved = sim.wait_for(sim.put(via, key, b"resolved", context=read.context))
    assert isinstance(resolved, Written) and resolved.siblings == 1
    sim.run_for(1)
    assert stored(sim, key) == {node: 1 for node in replicas(sim, key)}


def test_merges_are_never_refused_so_replicas_converge_above_the_cap_until_a_write_resolves(
) -> None:
    """Two sides of a partition each take the cap's worth of blind writes; after the heal every
    replica holds both sides' (twice the cap), blind writes are refused, one that supersedes a
    sibling is taken, and a write with the context of a read resolves them everywhere."""
    sim = Simulation(NODES, ClusterConfig(n=3, w=1, r=1, siblings_warning=2, siblings_max=3),
                     seed=34)
    key = b"k"
    first, second, third = replicas(sim, key)
    for node in NODES:
        if node != first:
            sim.cut(first, node)
    earliest = fill(sim, first, key, 3)[0]
    fill(sim, second, key, 3)
    sim.heal()
    sim.run_for(20)  # hints, anti-entropy
    assert stored(sim, key) == {first: 6, second: 6, third: 6}
    assert sim.wait_for(sim.put(third, key, b"blind")) == TooManySiblings(6, 3)
    replaced = sim.wait_for(sim.put(third, key, b"replaces one", context=earliest.context))
    assert isinstance(replaced, Written) and replaced.siblings == 6
    read = sim.wait_for(sim.get(third, key))
    assert isinstance(read, Found) and len(read.versions) == 6
    assert isinstance(sim.wait_for(sim.put(third, key, b"resolved", context=read.context)),
                      Written)
    sim.run_for(1)
    assert stored(sim, key) == {first: 1, second: 1, third: 1}


# -- one replica, against the rule ------------------------------------------------------------

#: A write: blind, with the context of a full read, or with the context an earlier write
#: returned (the index of that write, modulo how many there were).
Write = tuple[str, int]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.lists(st.tuples(st.sampled_from(["blind", "read", "earlier"]),
                                             st.integers(0, 50)), max_size=40))
def test_a_replica_refuses_exactly_the_writes_that_would_grow_the_key_past_the_cap(
        cap: int, writes: list[Write]) -> None:
    storage = MemoryStorage()
    ring = Ring.build([Member("n1")], 8)
    node = Replica("n1.1", ClusterConfig(n=1, w=1, r=1, siblings_warning=cap, siblings_max=cap),
                   storage, Hints(), SharedHashes("n1", ring, 1), Counter())
    earlier: list[Clock] = []
    for i, (kind, pick) in enumerate(writes):
        before = storage.get(b"k")
        context: Clock = {}
        if kind == "read":
            context = join(before)
        elif kind == "earlier" and earlier:
            context = earlier[pick % len(earlier)]
        supersedes = any(v.dot.counter <= context.get(v.dot.actor, (0, 0))[0] for v in before)
        stamped = node.stamp(b"k", context, b"%d" % i, i)
        if not supersedes and len(before) >= cap:
            assert stamped == AtSiblingCap(len(before))
            assert storage.get(b"k") == before
        else:
            assert isinstance(stamped, Stamped)
            earlier.append(join(v for v in stamped.versions if v.dot == stamped.dot))
            assert len(storage.get(b"k")) <= max(cap, len(before))
