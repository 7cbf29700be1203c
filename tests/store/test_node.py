"""The node logic, driven deterministically through the simulator: no sockets, no sleeps."""

from __future__ import annotations

import os
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from kvcheck.store.config import ClusterConfig
from kvcheck.store.node import Failed, Found, Written
from kvcheck.store.sim import Simulation
from kvcheck.store.storage import StorageError

NODES = ["n1", "n2", "n3", "n4", "n5"]


def values(response: object) -> list[bytes | None]:
    assert isinstance(response, Found), response
    return sorted((v.value for v in response.versions), key=lambda v: v or b"")


def replicas(sim: Simulation, key: bytes) -> tuple[str, ...]:
    return sim.ring.preference_list(key, sim.cluster.n)


def outsider(sim: Simulation, key: bytes) -> str:
    return next(n for n in sim.nodes if n not in replicas(sim, key))


def test_a_write_through_one_node_is_read_through_any_other() -> None:
    sim = Simulation(NODES, seed=1)
    assert isinstance(sim.wait_for(sim.put("n1", b"k", b"v")), Written)
    for node in NODES:
        assert values(sim.wait_for(sim.get(node, b"k"))) == [b"v"]


def test_an_unknown_key_reads_as_no_versions() -> None:
    sim = Simulation(NODES, seed=1)
    assert values(sim.wait_for(sim.get("n2", b"absent"))) == []


def test_write_quorum_counts_acks_and_a_silent_replica_makes_w_equal_n_indeterminate() -> None:
    sim = Simulation(NODES, ClusterConfig(n=3, w=2, r=2), seed=2)
    key = b"k"
    coordinator, *others = replicas(sim, key)
    for node in sim.nodes:
        if node != others[0]:
            sim.cut(others[0], node)  # that replica never answers anyone
    written = sim.wait_for(sim.put(coordinator, key, b"a"))
    assert isinstance(written, Written)
    failed = sim.wait_for(sim.put(coordinator, key, b"b", written.context, w=3))
    assert isinstance(failed, Failed)
    assert failed.applied == "unknown"
    assert "2 of 3 acknowledgements" in failed.reason
    assert isinstance(sim.wait_for(sim.get(coordinator, key, r=3)), Failed)
    assert values(sim.wait_for(sim.get(coordinator, key, r=2))) == [b"b"]


def test_reads_answer_after_r_replies_and_time_out_without_them() -> None:
    # Strict: a sloppy read would ask a stand-in in the refused replica's place (below).
    sim = Simulation(NODES, ClusterConfig(n=3, w=3, r=2, request_timeout_ms=500,
                                          sloppy_quorum=False), seed=3)
    key = b"k"
    sim.wait_for(sim.put("n1", key, b"v"))
    first, second, third = replicas(sim, key)
    sim.crash(second)
    sim.cut(first, third)
    answer = sim.wait_for(sim.get(first, key))
    assert isinstance(answer, Failed) and answer.applied == "no"
    assert "1 of 2" in answer.reason


def test_a_coordinator_outside_the_preference_list_asks_the_next_replica_when_one_is_down() -> None:
    sim = Simulation(NODES, seed=4)
    key = b"key"
    via = outsider(sim, key)
    sim.crash(replicas(sim, key)[0])
    assert isinstance(sim.wait_for(sim.put(via, key, b"v")), Written)
    assert values(sim.wait_for(sim.get(via, key))) == [b"v"]


def test_a_write_no_replica_can_receive_surely_was_not_applied() -> None:
    sim = Simulation(NODES, seed=5)
    key = b"key"
    via = outsider(sim, key)
    for node in replicas(sim, key):
        sim.crash(node)
    failed = sim.wait_for(sim.put(via, key, b"v"))
    assert isinstance(failed, Failed) and failed.applied == "no"


def test_a_write_cut_off_after_stamping_is_indeterminate_and_may_surface_later() -> None:
    sim = Simulation(NODES, ClusterConfig(n=3, w=2, r=1), seed=6)
    key = b"key"
    via = outsider(sim, key)
    stamper = replicas(sim, key)[0]
    for node in sim.nodes:
        if node != stamper:
            sim.cut(stamper, node, both_ways=False)  # it hears requests; its answers are lost
    failed = sim.wait_for(sim.put(via, key, b"v"))
    assert isinstance(failed, Failed) and failed.applied == "unknown"
    sim.heal()
    assert values(sim.wait_for(sim.get(stamper, key, r=1))) == [b"v"]


def test_concurrent_blind_writes_are_siblings_and_a_write_with_context_resolves_them() -> None:
    sim = Simulation(NODES, seed=7)
    a, b = sim.put("n1", b"k", b"a"), sim.put("n4", b"k", b"b")
    sim.wait_for(a), sim.wait_for(b)
    read = sim.wait_for(sim.get("n2", b"k"))
    assert values(read) == [b"a", b"b"]
    assert isinstance(read, Found)
    sim.wait_for(sim.put("n3", b"k", b"merged", context=read.context))
    assert values(sim.wait_for(sim.get("n5", b"k"))) == [b"merged"]


def test_lww_lets_a_skewed_coordinator_lose_a_later_write() -> None:
    sim = Simulation(NODES, ClusterConfig(versioning="lww"), seed=8)
    sim.skew("n2", -30.0)  # n2's wall clock is 30 s behind
    sim.wait_for(sim.put("n1", b"k", b"first"))
    assert isinstance(sim.wait_for(sim.put("n2", b"k", b"second")), Written)
    assert values(sim.wait_for(sim.get("n3", b"k"))) == [b"first"]


def test_deletes_write_tombstones_that_are_purged_after_the_grace_period() -> None:
    sim = Simulation(NODES, ClusterConfig(tombstone_grace_ms=5000), seed=9)
    written = sim.wait_for(sim.put("n1", b"k", b"v"))
    assert isinstance(written, Written)
    sim.wait_for(sim.put("n1", b"k", None, context=written.context))
    assert values(sim.wait_for(sim.get("n2", b"k"))) == [None]
    holders = replicas(sim, b"k")
    assert all(sim.nodes[n].disk.get(b"k") for n in holders)
    sim.run_for(20)
    assert not any(sim.nodes[n].disk.get(b"k") for n in holders)
    assert values(sim.wait_for(sim.get("n2", b"k"))) == []


def test_a_crashed_node_keeps_its_acknowledged_writes_and_a_paused_one_catches_up() -> None:
    sim = Simulation(NODES, ClusterConfig(n=3, w=3, r=1), seed=10)
    key = b"k"
    sim.wait_for(sim.put("n1", key, b"v"))
    first, second, _ = replicas(sim, key)
    sim.crash(first)
    sim.restart(first)
    assert values(sim.wait_for(sim.get(first, key, r=1))) == [b"v"]
    sim.pause(second)
    read = sim.wait_for(sim.get(first, key, r=1))
    assert isinstance(read, Found)
    request = sim.put(first, key, b"w", read.context, w=2)
    assert isinstance(sim.wait_for(request), Written)
    sim.resume(second)
    sim.run_for(1)
    assert values(sim.wait_for(sim.get(second, key, r=1))) == [b"w"]


def test_the_same_seed_gives_the_same_history_byte_for_byte() -> None:
    def run(seed: int) -> list[str]:
        sim = Simulation(NODES, seed=seed, loss=0.1)
        for i in range(30):
            sim.put(NODES[i % 5], f"k{i % 4}".encode(), str(i).encode())
            sim.get(NODES[(i + 2) % 5], f"k{i % 4}".encode())
            sim.run_for(0.001)
        sim.run_for(5)
        return sim.trace

    assert run(11) == run(11)
    assert run(11) != run(12)


_SAME_SEED_RUN = """
import hashlib
from kvcheck.store.sim import Simulation
nodes = ["n1", "n2", "n3", "n4", "n5"]
sim = Simulation(nodes, seed=11, loss=0.1)
for i in range(30):
    sim.put(nodes[i % 5], b"k%d" % (i % 4), b"%d" % i)
    sim.run_for(0.001)
sim.crash("n2")
sim.run_for(6)
sim.restart("n2")
sim.run_for(5)
print(hashlib.sha256("\\n".join(sim.trace).encode()).hexdigest())
"""


def test_the_same_seed_gives_the_same_history_in_processes_that_hash_strings_differently(
) -> None:
    """Node names are strings, whose hashes differ from one process to the next: no outcome may
    depend on the order of a set or dict of them."""
    def run(hash_seed: str) -> str:
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        return subprocess.run([sys.executable, "-c", _SAME_SEED_RUN], env=env, check=True,
                              capture_output=True, text=True).stdout

    assert run("1") == run("2") == run("3")


# -- quorum intersection under random faults ---------------------------------------------------

faults = st.lists(
    st.tuples(
        st.sampled_from(["put", "put", "get", "get", "cut", "heal", "crash", "restart"]),
        st.sampled_from(NODES), st.sampled_from(NODES), st.sampled_from([b"x", b"y"]),
    ),
    min_size=1, max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(faults, st.integers(0, 2**16))
def test_with_strict_quorums_and_w_plus_r_above_n_a_read_sees_every_acknowledged_write(
    ops: list[tuple[str, str, str, bytes]], seed: int
) -> None:
    """Strict quorums intersect. One request at a time, each put with the context of a
    successful read: a successful read returns the last acknowledged write of the key, or an
    indeterminate write issued after it — and nothing but those and indeterminate writes."""
    strict = ClusterConfig(n=3, w=2, r=2, request_timeout_ms=300, sloppy_quorum=False)
    sim = Simulation(NODES, strict, seed=seed, loss=0.2)
    last: dict[bytes, bytes] = {}
    indeterminate: dict[bytes, list[bytes]] = {b"x": [], b"y": []}
    since_last: dict[bytes, list[bytes]] = {b"x": [], b"y": []}
    for i, (kind, a, b, key) in enumerate(ops):
        if kind == "put" and sim.nodes[a].state == "up":
            read = sim.wait_for(sim.get(a, key))
            if not isinstance(read, Found):
                continue
            value = str(i).encode()
            answer = sim.wait_for(sim.put(a, key, value, read.context))
            if isinstance(answer, Written):
                last[key] = value
                since_last[key] = []
            elif answer.applied == "unknown":
                indeterminate[key].append(value)
                since_last[key].append(value)
        elif kind == "get" and sim.nodes[a].state == "up":
            answer = sim.wait_for(sim.get(a, key))
            if isinstance(answer, Found) and key in last:
                got = {v.value for v in answer.versions}
                assert last[key] in got or got & set(since_last[key]), (got, last[key])
                assert got <= {last[key], *indeterminate[key]}, (got, last[key])
        elif kind == "cut" and a != b:
            sim.cut(a, b)
        elif kind == "heal":
            sim.heal()
        elif kind == "crash" and sum(n.state == "crashed" for n in sim.nodes.values()) < 2:
            if sim.nodes[a].state == "up":
                sim.crash(a)
        elif kind == "restart" and sim.nodes[a].state == "crashed":
            sim.restart(a)


def test_read_repair_brings_a_replica_that_missed_a_write_up_to_date() -> None:
    sim = Simulation(NODES, ClusterConfig(n=3, w=2, r=2), seed=13)
    key = b"k"
    first, _, third = replicas(sim, key)
    for node in sim.nodes:
        if node != third:
            sim.cut(third, node)  # the third replica misses the write
    assert isinstance(sim.wait_for(sim.put(first, key, b"v")), Written)
    assert sim.nodes[third].disk.get(key) == []
    sim.heal()
    assert values(sim.wait_for(sim.get(first, key))) == [b"v"]
    sim.run_for(1)
    assert [v.value for v in sim.nodes[third].disk.get(key)] == [b"v"]
    assert sim.nodes[first].logic.counters["read_repairs"] == 1
    assert sim.nodes[first].logic.counters["repairs_acked"] == 1


# -- sloppy quorum and hinted handoff ---------------------------------------------------------

KEYS = [f"key-{i}".encode() for i in range(30)]


def test_a_replica_down_during_writes_receives_them_by_hinted_handoff() -> None:
    sim = Simulation(NODES, ClusterConfig(n=3, w=3, r=2), seed=14)
    sim.crash("n2")
    sim.run_for(5)  # the others mark n2 down
    for i, key in enumerate(KEYS):
        assert isinstance(sim.wait_for(sim.put(NODES[i % 5 if i % 5 != 1 else 0], key, b"v")),
                          Written)  # W=3 with a replica down: only a stand-in makes it
    owned = [key for key in KEYS if "n2" in replicas(sim, key)]
    assert owned
    assert sum(sim.nodes[n].hints.counts().get("n2", 0) for n in sim.nodes) == len(owned)
    sim.restart("n2")
    sim.run_for(5)  # gossip shows n2 alive; stand-ins hand off
    assert all([v.value for v in sim.nodes["n2"].disk.get(key)] == [b"v"] for key in owned)
    assert not any(sim.nodes[n].hints.counts() for n in sim.nodes)
    for key in owned:  # stand-ins dropped what was never theirs
        holders = {n for n in sim.nodes if sim.nodes[n].disk.get(key)}
        assert holders == set(replicas(sim, key))


def test_strict_quorums_refuse_what_sloppy_ones_accept_when_a_replica_is_down() -> None:
    for sloppy, expected in ((False, Failed), (True, Written)):
        sim = Simulation(NODES, ClusterConfig(n=3, w=3, sloppy_quorum=sloppy), seed=15)
        key = KEYS[0]
        sim.crash(replicas(sim, key)[1])
        sim.run_for(5)
        assert isinstance(sim.wait_for(sim.put(outsider(sim, key), key, b"v")), expected)


def test_a_sloppy_write_refused_by_a_crashed_replica_goes_to_a_stand_in_at_once() -> None:
    """Before the failure detector knows the replica is down, its refused connection is enough
    (Dynamo's coordinator walks on along the ring); a strict quorum fails the same write. The
    stand-in is the next node up along the ring — the coordinator itself, at times, which then
    keeps the hint in its own storage (the server has no link to itself)."""
    coordinator_stood_in = 0
    for key in KEYS[:12]:
        for sloppy, expected in ((False, Failed), (True, Written)):
            sim = Simulation(NODES, ClusterConfig(n=3, w=3, sloppy_quorum=sloppy), seed=15)
            owners = replicas(sim, key)
            lost, coordinator = owners[1], outsider(sim, key)
            sim.crash(lost)
            assert isinstance(sim.wait_for(sim.put(coordinator, key, b"v")), expected)
            assert lost in sim.nodes[coordinator].logic.context.membership.up()  # not yet down
            if not sloppy:
                continue
            walk = sim.nodes[coordinator].logic.context.placement.next.walk(key)
            stand_in = next(n for n in walk if n not in owners)
            assert [n for n in sim.nodes if sim.nodes[n].hints.counts().get(lost)] == [stand_in]
            assert sim.nodes[coordinator].logic.counters["stand_ins_after_refusal"] == 1
            coordinator_stood_in += stand_in == coordinator
            sim.restart(lost)
            sim.run_for(5)  # the stand-in hands the write to the replica it stood in for
            assert [v.value for v in sim.nodes[lost].disk.get(key)] == [b"v"]
            assert not any(sim.nodes[n].hints.counts() for n in sim.nodes)
    assert 0 < coordinator_stood_in < 12  # both cases were exercised


def test_a_sloppy_read_refused_by_a_crashed_replica_asks_a_stand_in_at_once() -> None:
    """R = N with a replica crashed, before the failure detector knows: a strict read fails,
    a sloppy one asks the next node along the ring (or reads the coordinator's own copy) and
    answers with what the live replicas hold."""
    for key in KEYS[:6]:
        for sloppy, expected in ((False, Failed), (True, Found)):
            sim = Simulation(NODES, ClusterConfig(n=3, w=2, r=3, sloppy_quorum=sloppy), seed=16)
            coordinator = outsider(sim, key)
            assert isinstance(sim.wait_for(sim.put(coordinator, key, b"v")), Written)
            sim.run_for(1)
            lost = replicas(sim, key)[1]
            sim.crash(lost)
            response = sim.wait_for(sim.get(coordinator, key))
            assert isinstance(response, expected), (key, sloppy, response)
            assert lost in sim.nodes[coordinator].logic.context.membership.up()
            if sloppy:
                assert values(response) == [b"v"]
                assert sim.nodes[coordinator].logic.counters["stand_ins_after_refusal"] == 1


def test_a_whole_zone_down_leaves_every_key_readable_and_writable() -> None:
    zones = {"n1": "a", "n2": "a", "n3": "b", "n4": "b", "n5": "c", "n6": "c"}
    sim = Simulation(list(zones), ClusterConfig(n=3, w=3, r=3), seed=16, zones=zones)
    assert all({zones[n] for n in replicas(sim, key)} == {"a", "b", "c"} for key in KEYS)
    sim.crash("n1")
    sim.crash("n2")
    sim.run_for(5)
    for i, key in enumerate(KEYS):
        via = ["n3", "n4", "n5", "n6"][i % 4]
        assert isinstance(sim.wait_for(sim.put(via, key, b"v")), Written)
        assert values(sim.wait_for(sim.get(via, key))) == [b"v"]


def test_blocking_read_repair_answers_only_once_stale_replicas_hold_the_merge() -> None:
    for mode, repaired_when_answered in (("async", False), ("blocking", True)):
        sim = Simulation(NODES, ClusterConfig(n=3, w=2, r=3, read_repair=mode,
                                              sloppy_quorum=False), seed=17)
        key = b"k"
        first, _, third = replicas(sim, key)
        for node in sim.nodes:
            if node != third:
                sim.cut(node, third, both_ways=False)  # the third replica misses the write
        assert isinstance(sim.wait_for(sim.put(first, key, b"v")), Written)
        sim.heal()
        assert values(sim.wait_for(sim.get(first, key))) == [b"v"]
        assert bool(sim.nodes[third].disk.get(key)) is repaired_when_answered
        sim.run_for(1)
        assert [v.value for v in sim.nodes[third].disk.get(key)] == [b"v"]


def test_blocking_read_repair_fails_the_read_when_the_coordinator_cannot_store_the_merge(
        ) -> None:
    """Else the read returns what only one replica holds, and a later quorum read — through
    replicas that never got it — can miss what this one returned."""
    sim = Simulation(NODES, ClusterConfig(n=3, w=2, r=2, read_repair="blocking",
                                          sloppy_quorum=False), seed=19)
    key = b"k"
    first, _, third = replicas(sim, key)
    sim.cut(first, third)  # the third replica misses the write
    assert isinstance(sim.wait_for(sim.put(first, key, b"v")), Written)
    sim.heal()
    sim.crash(first)
    sim.fail_disk(third, "write")
    answer = sim.wait_for(sim.get(third, key))
    assert isinstance(answer, Failed) and "blocking read repair" in answer.reason
    assert not sim.nodes[third].disk.get(key)


def test_a_replica_whose_storage_fails_a_read_refuses_it_and_the_node_keeps_serving() -> None:
    sim = Simulation(NODES, ClusterConfig(n=3, w=3, r=2, sloppy_quorum=False), seed=18)
    key = b"k"
    first, second, third = replicas(sim, key)
    assert isinstance(sim.wait_for(sim.put(first, key, b"v")), Written)

    def damaged(read_key: bytes) -> list[object]:
        raise StorageError(f"corrupt block in a table holding {read_key!r}")

    sim.nodes[second].disk.get = damaged  # type: ignore[method-assign]
    assert values(sim.wait_for(sim.get(first, key))) == [b"v"]  # first and third answer
    assert sim.nodes[second].logic.counters["storage_errors"] == 1
    answer = sim.wait_for(sim.get(first, key, r=3))
    assert isinstance(answer, Failed) and "read quorum unreachable" in answer.reason
    assert values(sim.wait_for(sim.get(third, key))) == [b"v"]


def test_a_replica_that_missed_writes_behind_a_partition_gets_them_by_hints_after_a_heal(
) -> None:
    sim = Simulation(NODES, ClusterConfig(n=3, w=2, sloppy_quorum=False,
                                          antientropy_interval_ms=60_000), seed=19)
    cut_off = "n4"
    for node in NODES:
        if node != cut_off:
            sim.cut(node, cut_off, both_ways=False)  # n4 hears nothing; gossip still sees it
    owned = [key for key in KEYS if cut_off in replicas(sim, key)]
    for key in owned:
        coordinator = next(n for n in replicas(sim, key) if n != cut_off)
        assert isinstance(sim.wait_for(sim.put(coordinator, key, b"v")), Written)
    sim.run_for(1.5)  # the puts' timeouts pass: n4 never acknowledged
    assert not any(sim.nodes[cut_off].disk.get(key) for key in owned)
    assert sum(sim.nodes[n].hints.counts().get(cut_off, 0) for n in NODES) == len(owned)
    sim.heal()
    sim.run_for(2)  # a few gossip rounds; no reads, and anti-entropy is not due (60 s)
    assert all([v.value for v in sim.nodes[cut_off].disk.get(key)] == [b"v"] for key in owned)
    assert not any(sim.nodes[n].hints.counts() for n in NODES)


def test_a_stamp_that_arrives_after_its_put_gave_up_still_reaches_every_replica() -> None:
    """The stamp request sat behind a partition (here: a paused stamper) and was delivered after
    the coordinator's timeout. The late reply is spread to the other replicas at once, not left
    on the stamper alone until anti-entropy finds it."""
    sim = Simulation(NODES, ClusterConfig(n=3, w=2, antientropy_interval_ms=60_000), seed=20)
    sim.run_for(1)
    key = b"k"
    stamper, coordinator = replicas(sim, key)[0], outsider(sim, key)
    sim.pause(stamper)
    answer = sim.wait_for(sim.put(coordinator, key, b"late"))
    assert isinstance(answer, Failed) and answer.applied == "unknown"
    sim.resume(stamper)  # the request is delivered now
    sim.run_for(0.1)
    assert all([v.value for v in sim.nodes[node].disk.get(key)] == [b"late"]
               for node in replicas(sim, key))
    assert sim.nodes[coordinator].logic.counters["late_stamps_spread"] == 1
