"""Anti-entropy: Merkle trees find what replicas disagree on, at a cost that follows the
difference, and a wiped replica gets its data back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from store.antientropy import DEPTH, FANOUT, MerkleTree
from store.config import ClusterConfig
from store.node import ANTIENTROPY_TIMER, Written
from store.sim import Simulation
from store.versions import stamp


def tree(items: dict[bytes, bytes]) -> MerkleTree:
    return MerkleTree.build(items.items())


@given(st.dictionaries(st.binary(min_size=1, max_size=6), st.binary(min_size=8, max_size=8),
                       max_size=60), st.data())
def test_trees_differ_exactly_in_the_leaves_of_the_keys_that_differ(
    base: dict[bytes, bytes], data: st.DataObject
) -> None:
    other = dict(base)
    changed = data.draw(st.sets(st.sampled_from(sorted(base)) if base else st.nothing()))
    for key in changed:
        other[key] = b"changed!"
    a, b = tree(base), tree(other)
    assert (a.root == b.root) == (not changed)
    differing = [0] if a.root != b.root else []
    for level in range(DEPTH):
        differing = a.differing(level + 1, b.children(level, differing))
    assert set(a.keys_in(differing)) >= changed
    assert set(b.keys_in(differing)) >= changed


def two_replicas(keys: int, missing: int) -> Simulation:
    """Two nodes, N=2: both replicate every key. n2 lacks the last ``missing`` keys."""
    sim = Simulation(["n1", "n2"], ClusterConfig(n=2, w=1, r=1, antientropy_interval_ms=10**9),
                     seed=1)
    for i in range(keys):
        key = f"key-{i}".encode()
        _, versions = stamp("n1.1", [], {}, b"value", 1, 10)
        sim.nodes["n1"].disk.put(key, versions)
        if i < keys - missing:
            sim.nodes["n2"].disk.put(key, versions)
    return sim


def traffic(sim: Simulation) -> dict[str, int]:
    names = ("antientropy_hashes_sent", "antientropy_keys_sent", "antientropy_repairs_sent")
    return {name: sum(n.logic.counters.get(name, 0) for n in sim.nodes.values())
            for name in names}


def one_round(sim: Simulation) -> dict[str, int]:
    """Every segment once: with one peer, FANOUT rounds."""
    for _ in range(FANOUT):
        sim.fire("n1", ANTIENTROPY_TIMER)
        sim.run_for(0.1)
    return traffic(sim)


def test_in_sync_replicas_exchange_one_hash_per_segment_however_much_data_they_hold() -> None:
    for keys in (100, 5000):
        assert one_round(two_replicas(keys, 0)) == {
            "antientropy_hashes_sent": FANOUT, "antientropy_keys_sent": 0,
            "antientropy_repairs_sent": 0}


def test_traffic_follows_the_difference_not_the_data() -> None:
    small = one_round(two_replicas(5000, 3))
    large = one_round(two_replicas(5000, 60))
    assert small["antientropy_repairs_sent"] == 3
    assert large["antientropy_repairs_sent"] == 60
    assert small["antientropy_keys_sent"] < 20  # the keys of 3 leaves, not of 5000
    assert small["antientropy_hashes_sent"] < large["antientropy_hashes_sent"] < 5000


def test_after_a_round_both_replicas_hold_the_same_keys() -> None:
    sim = two_replicas(500, 40)
    one_round(sim)
    assert sorted(sim.nodes["n1"].disk.keys()) == sorted(sim.nodes["n2"].disk.keys())
    assert one_round(sim)["antientropy_repairs_sent"] == 40  # nothing more was needed


def test_a_wiped_replica_is_whole_again_by_anti_entropy() -> None:
    sim = Simulation(["n1", "n2", "n3", "n4", "n5"], ClusterConfig(antientropy_interval_ms=1000),
                     seed=2)
    keys = [f"k{i}".encode() for i in range(200)]
    for i, key in enumerate(keys):
        sim.wait_for(sim.put(f"n{i % 5 + 1}", key, b"v"))
    mine = [key for key in keys if "n3" in sim.ring.preference_list(key, 3)]
    sim.wipe("n3")
    assert not list(sim.nodes["n3"].disk.keys())
    sim.run_for(90)  # no reads, no writes: only anti-entropy can bring the data back
    assert all([v.value for v in sim.nodes["n3"].disk.get(key)] == [b"v"] for key in mine)


def test_a_peer_back_from_a_partition_is_caught_up_at_once_not_at_the_next_rounds() -> None:
    nodes = ["n1", "n2", "n3", "n4", "n5"]
    sim = Simulation(nodes, ClusterConfig(n=3, w=2, sloppy_quorum=False), seed=3)
    sim.run_for(2)
    for node in nodes[:4]:
        sim.cut(node, "n5")
    sim.run_for(5)  # n5 is suspected: it will come back "alive"
    keys = [f"k{i}".encode() for i in range(60)]
    written = [key for i, key in enumerate(keys)
               if isinstance(sim.wait_for(sim.put(nodes[i % 4], key, b"v")), Written)]
    missed = [key for key in written if "n5" in sim.ring.preference_list(key, 3)]
    assert missed and not any(sim.nodes["n5"].disk.get(key) for key in missed)
    sim.heal()
    sim.run_for(4)  # far less than a regular anti-entropy pass (10 s a segment)
    assert all(sim.nodes["n5"].disk.get(key) for key in missed)
