"""Joins and leaves under concurrent writes, in the simulator: nothing acknowledged is lost, every
key stays readable during the move, and the data ends on the new owners."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcheck.store.config import ClusterConfig
from kvcheck.store.node import Found, Written
from kvcheck.store.placement import Placement
from kvcheck.store.sim import Simulation

CONFIG = ClusterConfig(n=3, w=2, r=2, sloppy_quorum=False)
#: Virtual seconds a join or leave of a small cluster may take, at most.
CHANGE_LIMIT = 120.0


def statuses(sim: Simulation) -> set[str]:
    """Every status any live node's placement holds for any member."""
    return {r.status for node in sim.nodes.values() if node.state == "up"
            for r in node.logic.placement.records.values()}


def settled(sim: Simulation, member: str, status: str) -> bool:
    """Every node that is up sees ``member`` as ``status`` and no change in progress."""
    return all(getattr(node.logic.placement.records.get(member), "status", None) == status
               and not node.logic.placement.in_transition
               for node in sim.nodes.values() if node.state == "up"
               and node.logic.placement.records[node.node_id].status != "left")


class Writer:
    """Writes distinct keys through the live nodes while the simulation runs, and reads back
    keys acknowledged earlier: each read must see its key's value."""

    def __init__(self, sim: Simulation, via: list[str]) -> None:
        self.sim = sim
        self.via = via
        self.puts: dict[int, bytes] = {}
        self.acked: list[bytes] = []
        self.reads: dict[int, bytes] = {}
        self.count = 0

    def run_until(self, done: object, limit: float = CHANGE_LIMIT) -> None:
        deadline = self.sim.now + limit
        while not done():  # type: ignore[operator]
            assert self.sim.now < deadline, f"not done after {limit} virtual seconds"
            node = self.via[self.count % len(self.via)]
            key = f"key-{self.count}".encode()
            self.puts[self.sim.put(node, key, key)] = key
            if self.acked:
                earlier = self.acked[(self.count * 7) % len(self.acked)]
                self.reads[self.sim.get(node, earlier)] = earlier
            self.count += 1
            self.sim.run_for(0.02)
            self.collect()

    def collect(self) -> None:
        for request, key in list(self.puts.items()):
            if request in self.sim.responses:
                del self.puts[request]
                if isinstance(self.sim.responses[request][1], Written):
                    self.acked.append(key)
        for request, key in list(self.reads.items()):
            if request in self.sim.responses:
                del self.reads[request]
                found = self.sim.responses[request][1]
                assert isinstance(found, Found), (key, found)
                assert [v.value for v in found.versions] == [key], (key, found)

    def finish(self) -> None:
        self.sim.run_for(5)
        self.collect()
        assert not self.puts and not self.reads


def counter(sim: Simulation, name: str) -> int:
    return sum(node.logic.counters.get(name, 0) for node in sim.nodes.values())


def assert_on_new_owners(sim: Simulation, keys: list[bytes], w: int) -> None:
    """Every key is stored by at least ``w`` members of its preference list in the final ring."""
    placement: Placement = sim.nodes["n1"].logic.placement
    for key in keys:
        owners = placement.current.preference_list(key, sim.cluster.n)
        holding = [o for o in owners if sim.nodes[o].disk.get(key)]
        assert len(holding) >= w, (key, owners, holding)


def test_a_join_under_concurrent_writes_loses_nothing_and_moves_keys_to_the_newcomer() -> None:
    sim = Simulation(["n1", "n2", "n3", "n4"], CONFIG, seed=1)
    writer = Writer(sim, ["n1", "n2", "n3", "n4"])
    writer.run_until(lambda: writer.count >= 300)
    repairs = counter(sim, "antientropy_repairs_sent")
    sim.join("n5", via="n2")
    writer.via.append("n5")
    writer.run_until(lambda: settled(sim, "n5", "normal"))
    # Streaming moves the keys; anti-entropy waits, or it would send the newcomer every key too.
    assert counter(sim, "antientropy_paused") > 0
    assert counter(sim, "antientropy_repairs_sent") == repairs
    writer.run_until(lambda: len(writer.acked) >= 700)
    writer.finish()
    assert len(writer.acked) == writer.count  # no fault: every write succeeds
    assert_on_new_owners(sim, writer.acked, CONFIG.w)
    placement = sim.nodes["n5"].logic.placement
    gained = [k for k in writer.acked if "n5" in placement.current.preference_list(k, 3)]
    assert gained and all(sim.nodes["n5"].disk.get(k) for k in gained)
    for key in writer.acked[::25]:
        found = sim.wait_for(sim.get("n5", key))
        assert isinstance(found, Found) and [v.value for v in found.versions] == [key]


def test_a_leave_under_concurrent_writes_loses_nothing_and_the_leaver_owns_nothing() -> None:
    sim = Simulation(["n1", "n2", "n3", "n4", "n5"], CONFIG, seed=2)
    writer = Writer(sim, ["n1", "n3", "n4", "n5"])
    writer.run_until(lambda: writer.count >= 300)
    assert sim.leave("n2") is None
    writer.run_until(lambda: settled(sim, "n2", "left"))
    writer.run_until(lambda: len(writer.acked) >= 700)
    writer.finish()
    assert len(writer.acked) == writer.count
    placement = sim.nodes["n1"].logic.placement
    assert "n2" not in placement.current.members
    assert_on_new_owners(sim, writer.acked, CONFIG.w)
    sim.crash("n2")  # the operator stops it; nothing depended on it
    for key in writer.acked[::25]:
        found = sim.wait_for(sim.get("n1", key))
        assert isinstance(found, Found) and [v.value for v in found.versions] == [key]


def test_a_join_survives_a_source_that_crashes_mid_stream() -> None:
    """A source that stops answering is replaced by the other current replicas of its keys."""
    sim = Simulation(["n1", "n2", "n3", "n4"], CONFIG, seed=3)
    writer = Writer(sim, ["n1", "n2", "n3"])
    writer.run_until(lambda: writer.count >= 400)
    writer.finish()
    sim.join("n5", via="n1")
    writer.run_until(lambda: sim.nodes["n5"].logic.counters.get("stream_keys_received", 0) > 0)
    sim.crash("n4")
    writer.run_until(lambda: settled(sim, "n5", "normal"))
    writer.finish()
    sim.restart("n4")
    sim.run_for(10)
    assert_on_new_owners(sim, writer.acked, CONFIG.w)


def test_leave_refuses_below_n_members_and_during_another_change() -> None:
    sim = Simulation(["n1", "n2", "n3"], CONFIG, seed=4)
    refused = sim.leave("n1")
    assert refused is not None and "fewer than n=3" in refused.reason and not refused.later
    sim.join("n4", via="n1")
    sim.run_for(1)
    for node in ("n2", "n4"):  # another member, and the joining node itself
        refused = sim.leave(node)
        assert refused is not None and "another change is in progress" in refused.reason
        assert refused.later
    with pytest.raises(ValueError, match="already a member"):
        sim.join("n2", via="n1")


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), leaving=st.sampled_from(["n1", "n3", "n5"]),
       crash=st.booleans())
def test_join_then_leave_with_a_crash_and_restart_keeps_every_acknowledged_write(
        seed: int, leaving: str, crash: bool) -> None:
    nodes = ["n1", "n2", "n3", "n4", "n5"]
    sim = Simulation(nodes, CONFIG, seed=seed)
    writer = Writer(sim, ["n2", "n4"])
    writer.run_until(lambda: writer.count >= 100)
    sim.join("n6", via="n4")
    if crash:
        writer.run_until(lambda: writer.count >= 150)
        sim.crash("n2")
        writer.via = ["n4"]
        writer.run_until(lambda: writer.count >= 200)
        sim.restart("n2")
        writer.run_until(lambda: sim.connected("n2"))  # ready again, as kvcheck waits for
        writer.via = ["n2", "n4"]
    writer.run_until(lambda: settled(sim, "n6", "normal"))
    assert sim.leave(leaving) is None
    writer.run_until(lambda: settled(sim, leaving, "left"))
    writer.finish()
    sim.crash(leaving)
    assert_on_new_owners(sim, writer.acked, 1)
    for key in writer.acked:
        found = sim.wait_for(sim.get("n4", key))
        assert isinstance(found, Found) and [v.value for v in found.versions] == [key], key


def test_hints_for_a_member_that_leaves_go_to_the_keys_new_replicas() -> None:
    cluster = ClusterConfig(n=3, w=2, r=2, sloppy_quorum=True, suspect_after_ms=1000)
    sim = Simulation(["n1", "n2", "n3", "n4", "n5"], cluster, seed=6)
    sim.pause("n2")  # down long enough for stand-ins to take its writes
    sim.run_for(10)
    keys = [f"key-{i}".encode() for i in range(200)]
    for key in keys:
        assert isinstance(sim.wait_for(sim.put("n1", key, key)), Written)
    holder = next(name for name, node in sim.nodes.items() if node.hints.counts().get("n2"))
    sim.cut(holder, "n2")  # so its hints cannot reach n2 before n2 has left
    sim.resume("n2")
    assert sim.leave("n2") is None
    sim.run_for(60)
    assert settled(sim, "n2", "left")
    sim.heal()
    sim.run_for(5)
    assert all("n2" not in node.hints.counts() for name, node in sim.nodes.items()
               if name != "n2")
    sim.crash("n2")
    assert_on_new_owners(sim, keys, 2)


def test_a_settled_cluster_stops_rewriting_its_records() -> None:
    """Gossip that repeats a node's own record back to it changes nothing: every record keeps
    its version once the cluster has settled (each new version is saved to disk, with fsync)."""
    sim = Simulation(["n1", "n2", "n3"], CONFIG, seed=5)
    sim.run_for(10)

    def versions() -> dict[str, dict[str, int]]:
        return {node_id: {r.node_id: r.version for r in node.logic.placement.records.values()}
                for node_id, node in sim.nodes.items()}

    settled = versions()
    sim.run_for(60)
    assert versions() == settled


def test_a_wiped_node_takes_its_record_back_above_what_the_others_hold() -> None:
    """A node that restarts on an empty disk starts from the configured records; the others hold
    a later version of its record (here, from a join since): what they gossip back raises its
    version past theirs, once, and every node ends up holding the record it says."""
    sim = Simulation(["n1", "n2", "n3"], CONFIG, seed=6)
    sim.join("n4", via="n1")
    for _ in range(int(CHANGE_LIMIT)):
        if settled(sim, "n4", "normal"):
            break
        sim.run_for(1)
    before = sim.nodes["n2"].logic.placement.records["n1"]
    assert before.version > 0
    sim.wipe("n1")
    sim.run_for(10)
    records = {node_id: node.logic.placement.records["n1"] for node_id, node in sim.nodes.items()}
    assert len(set(records.values())) == 1
    assert records["n1"].version > before.version
    sim.run_for(30)
    assert sim.nodes["n1"].logic.placement.records["n1"] == records["n1"]
