"""Anti-entropy: trees kept write by write equal trees built from scratch, they find what replicas
disagree on at a cost that follows the difference, and a wiped replica gets its data back."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kvcheck.store.antientropy import DEPTH, FANOUT, SharedHashes, contribution, leaf_of
from kvcheck.store.config import ClusterConfig
from kvcheck.store.node import Tick, Written
from kvcheck.store.ring import Member, Ring
from kvcheck.store.sim import Simulation
from kvcheck.store.storage import MemoryStorage
from kvcheck.store.versions import Version, join, stamp

RING = Ring.build([Member(f"n{i}") for i in range(1, 5)], 16)
PEERS = ("n2", "n3", "n4")


def versions_of(value: bytes | None, counter: int = 1) -> list[Version]:
    return list(stamp("n1.1", [], {}, value, counter, 10)[1])


def built(storage: MemoryStorage) -> SharedHashes:
    hashes = SharedHashes("n1", RING, 3)
    while not hashes.build_step(lambda where: storage.scan(where=where), 7):
        pass
    return hashes


def all_hashes(hashes: SharedHashes) -> dict[tuple[str, int, int], bytes]:
    return {(peer, level, i): hashes.hash(peer, level, i)
            for peer in PEERS for level in range(DEPTH + 1) for i in range(FANOUT ** level)}


values = st.one_of(st.none(), st.binary(max_size=3))  # None: a tombstone
writes = st.lists(st.tuples(st.integers(0, 40), st.one_of(values, st.just(b"<forget>"))),
                  max_size=60)


@settings(max_examples=60)
@given(st.lists(st.tuples(st.integers(0, 40), values), max_size=40), writes,
       st.integers(0, 60), st.integers(1, 5))
def test_hashes_kept_write_by_write_equal_hashes_built_from_scratch(
    before: list[tuple[int, bytes | None]], after: list[tuple[int, bytes | None]],
    build_at: int, budget: int,
) -> None:
    """Writes before the build, during it (between slices) and after it all count once."""
    storage = MemoryStorage()
    for i, value in before:
        storage.put(b"k%d" % i, versions_of(value))
    hashes = SharedHashes("n1", RING, 3)
    scan = lambda where: storage.scan(where=where)  # noqa: E731
    for step, (i, value) in enumerate(after):
        if step >= build_at:
            hashes.build_step(scan, budget)
        key = b"k%d" % i
        new = [] if value == b"<forget>" else versions_of(value, step + 2)
        old = storage.get(key)
        storage.put(key, new)
        hashes.update(key, old, new)
    while not hashes.build_step(scan, budget):
        pass
    assert all_hashes(hashes) == all_hashes(built(storage))


@settings(max_examples=60)
@given(st.dictionaries(st.integers(0, 200), values, max_size=60), st.data())
def test_a_descent_from_the_root_finds_exactly_the_leaves_of_the_live_keys_that_differ(
    base: dict[int, bytes | None], data: st.DataObject,
) -> None:
    changed = data.draw(st.dictionaries(st.integers(0, 200), values, max_size=10))
    a, b = MemoryStorage(), MemoryStorage()
    for i, value in base.items():
        a.put(b"k%d" % i, versions_of(value))
        b.put(b"k%d" % i, versions_of(value))
    for i, value in changed.items():
        b.put(b"k%d" % i, versions_of(value, 2))
    ta, tb = built(a), built(b)
    expected = {(peer, leaf_of(key)) for peer in PEERS for key, _ in b.scan()
                if peer in tb.peers_sharing(key)
                and contribution(key, a.get(key)) != contribution(key, b.get(key))}
    found = set()
    for peer in PEERS:
        differing = [0] if ta.hash(peer, 0, 0) != tb.hash(peer, 0, 0) else []
        for level in range(1, DEPTH + 1):
            differing = [c for i in differing for c in range(i * FANOUT, (i + 1) * FANOUT)
                         if ta.hash(peer, level, c) != tb.hash(peer, level, c)]
        found |= {(peer, leaf) for leaf in differing}
    assert found == expected


def test_a_tree_is_unavailable_until_built() -> None:
    storage = MemoryStorage()
    for i in range(100):
        storage.put(b"k%d" % i, versions_of(b"v"))
    hashes = SharedHashes("n1", RING, 3)
    assert not hashes.ready_for("n2")
    assert not hashes.build_step(lambda where: storage.scan(where=where), 50)
    assert not hashes.ready_for("n2")
    assert hashes.build_step(lambda where: storage.scan(where=where), 50)
    assert hashes.ready_for("n2") and not hashes.ready_for("n1")
    hashes.rebuild()
    assert not hashes.ready_for("n2")


# -- between nodes ------------------------------------------------------------------------------


def two_replicas(keys: int, missing: int) -> Simulation:
    """Two nodes, N=2: both replicate every key. n2 lacks the last ``missing`` keys. Returns
    once both have built their trees."""
    sim = Simulation(["n1", "n2"], ClusterConfig(n=2, w=1, r=1, antientropy_interval_ms=10**9),
                     seed=1)
    for i in range(keys):
        key = f"key-{i}".encode()
        versions = versions_of(b"value")
        sim.nodes["n1"].disk.put(key, versions)
        if i < keys - missing:
            sim.nodes["n2"].disk.put(key, versions)
    sim.run_for(1)
    return sim


def traffic(sim: Simulation) -> dict[str, int]:
    names = ("antientropy_hashes_sent", "antientropy_keys_sent", "antientropy_repairs_sent")
    return {name: sum(n.logic.counters.get(name, 0) for n in sim.nodes.values())
            for name in names}


def one_round(sim: Simulation) -> dict[str, int]:
    """One round of n1's (the whole tree, with its follow-ups)."""
    sim.fire("n1", Tick.ANTIENTROPY)
    sim.run_for(2)
    return traffic(sim)


def test_in_sync_replicas_exchange_one_hash_a_round_however_much_data_they_hold() -> None:
    for keys in (100, 5000):
        assert one_round(two_replicas(keys, 0)) == {
            "antientropy_hashes_sent": 1, "antientropy_keys_sent": 0,
            "antientropy_repairs_sent": 0}


def test_traffic_follows_the_difference_not_the_data() -> None:
    small = one_round(two_replicas(5000, 3))
    large = one_round(two_replicas(5000, 60))
    assert small["antientropy_repairs_sent"] == 3
    assert large["antientropy_repairs_sent"] == 60
    assert small["antientropy_keys_sent"] < 20  # the keys of 3 leaves, not of 5000
    assert small["antientropy_hashes_sent"] < large["antientropy_hashes_sent"] < 5000


def test_after_a_round_both_replicas_hold_the_same_keys_and_trees() -> None:
    sim = two_replicas(500, 40)
    one_round(sim)
    assert sorted(sim.nodes["n1"].disk.keys()) == sorted(sim.nodes["n2"].disk.keys())
    n1, n2 = (sim.nodes[n].logic.shared for n in ("n1", "n2"))
    assert n1.hash("n2", 0, 0) == n2.hash("n1", 0, 0)
    assert one_round(sim)["antientropy_repairs_sent"] == 40  # nothing more was needed


def test_a_delete_reaches_a_replica_that_still_holds_the_value() -> None:
    sim = two_replicas(50, 0)
    key = b"key-7"
    value = sim.nodes["n1"].disk.get(key)
    _, deleted = stamp("n1.1", value, join(value), None, 2, 10)
    sim.nodes["n1"].logic.replica.store(key, deleted, value)
    one_round(sim)
    assert [v.value for v in sim.nodes["n2"].disk.get(key)] == [None]
    assert one_round(sim)["antientropy_repairs_sent"] == traffic(sim)["antientropy_repairs_sent"]


def test_trees_follow_every_write_path_through_partitions_hints_and_repairs() -> None:
    """Stamps, replicated writes, hinted writes and their handoff, read repair and deletes: in
    the end each node's trees equal trees built from its disk."""
    nodes = ["n1", "n2", "n3", "n4", "n5"]
    sim = Simulation(nodes, ClusterConfig(antientropy_interval_ms=10**9), seed=5)
    sim.run_for(2)
    for other in nodes[1:]:
        sim.cut("n1", other)
    sim.run_for(5)
    keys = [f"k{i}".encode() for i in range(40)]
    for i, key in enumerate(keys):
        sim.wait_for(sim.put(nodes[i % 5], key, b"v%d" % i))
    sim.heal()
    sim.run_for(8)  # handoffs
    for i, key in enumerate(keys[:10]):
        sim.wait_for(sim.put(nodes[i % 5], key, None))
        sim.wait_for(sim.get(nodes[(i + 1) % 5], key))
    sim.run_for(2)
    assert sum(n.logic.counters.get("hints_delivered", 0) for n in sim.nodes.values())
    for node in sim.nodes.values():
        fresh = SharedHashes(node.node_id, sim.ring, 3)
        while not fresh.build_step(lambda where, d=node.disk: d.scan(where=where), 100):
            pass
        kept = node.logic.shared
        assert all(kept.hash(p, DEPTH, leaf) == fresh.hash(p, DEPTH, leaf)
                   for p in nodes if p != node.node_id for leaf in range(FANOUT ** DEPTH))


def test_a_wiped_replica_is_whole_again_by_anti_entropy_within_seconds() -> None:
    sim = Simulation(["n1", "n2", "n3", "n4", "n5"], ClusterConfig(), seed=2)
    keys = [f"k{i}".encode() for i in range(200)]
    for i, key in enumerate(keys):
        sim.wait_for(sim.put(f"n{i % 5 + 1}", key, b"v"))
    mine = [key for key in keys if "n3" in sim.ring.preference_list(key, 3)]
    sim.wipe("n3")
    assert not list(sim.nodes["n3"].disk.keys())
    sim.run_for(15)  # no reads, no writes: only anti-entropy can bring the data back
    assert all([v.value for v in sim.nodes["n3"].disk.get(key)] == [b"v"] for key in mine)


def test_a_peer_back_from_a_partition_is_caught_up_at_once_not_at_the_next_rounds() -> None:
    nodes = ["n1", "n2", "n3", "n4", "n5"]
    sim = Simulation(nodes, ClusterConfig(n=3, w=2, sloppy_quorum=False,
                                          antientropy_interval_ms=60_000), seed=3)
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
    sim.run_for(4)  # far less than a regular round (60 s)
    assert all(sim.nodes["n5"].disk.get(key) for key in missed)
