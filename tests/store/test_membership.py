"""Gossip membership and failure detection: unit rules, then whole clusters in the simulator."""

from __future__ import annotations

import random

from kvcheck.store.config import ClusterConfig
from kvcheck.store.membership import GossipEntry, Membership
from kvcheck.store.sim import Simulation

NODES = ["n1", "n2", "n3", "n4", "n5"]
CONFIG = ClusterConfig(gossip_interval_ms=500, suspect_after_ms=3000, probe_timeout_ms=1000)


def membership() -> Membership:
    """n1's view of n1..n4; n4 was last heard at 2.0, the others at 0.0."""
    view = Membership("n1", ["n1", "n2", "n3", "n4"], generation=1, suspect_after=3,
                      probe_timeout=1, fanout=2, rng=random.Random(0))
    view.begin(0.0)
    view.merge("n4", [GossipEntry("n4", (1, 1), False)], 2.0)
    return view


def test_silence_makes_a_suspect_and_a_second_source_makes_it_down() -> None:
    view = membership()
    changes, probes = view.check(2.9)
    assert not changes and not probes
    changes, probes = view.check(3.0)
    assert [(c.node_id, c.state) for c in changes] == [("n2", "suspect"), ("n3", "suspect")]
    assert sorted(probes) == [("n4", "n2"), ("n4", "n3")]  # indirect probes via the live one
    assert view.state("n2") == "suspect"  # one source is not enough
    view.merge("n3", [GossipEntry("n2", (0, 0), True), GossipEntry("n3", (1, 5), False)], 3.1)
    assert (view.state("n2"), view.state("n3")) == ("down", "alive")


def test_a_probe_that_reaches_the_suspect_keeps_it_from_being_marked_down() -> None:
    view = membership()
    view.check(3.0)
    assert view.probe_result("n2", True, "n3") == []
    assert view.state("n2") == "suspect"
    assert [c.state for c in view.probe_result("n3", False, "n2")] == ["down"]


def test_a_growing_heartbeat_brings_any_member_back() -> None:
    view = membership()
    view.check(3.0)
    view.probe_result("n2", False, "n3")
    assert view.state("n2") == "down"
    changes = view.merge("n3", [GossipEntry("n2", (1, 1), False)], 10.0)
    assert [(c.node_id, c.state) for c in changes] == [("n2", "alive")]
    changes, probes = view.check(12.9)
    assert "n2" not in {c.node_id for c in changes} | {suspect for _, suspect in probes}


def test_a_restarted_node_beats_its_previous_life_and_speaks_for_itself() -> None:
    view = membership()
    view.merge("n3", [GossipEntry("n2", (1, 40), False)], 1.0)
    assert view.merge("n2", [GossipEntry("n2", (2, 1), False)], 2.0) == []  # new generation
    assert view.views["n2"].heartbeat == (2, 1)
    view.merge("n2", [GossipEntry("n2", (1, 1), False)], 2.5)  # wiped: its word wins
    assert view.views["n2"].heartbeat == (1, 1)


def states(sim: Simulation, observer: str) -> dict[str, str]:
    return {m: sim.nodes[observer].logic.membership.state(m) for m in NODES if m != observer}


def test_a_crashed_node_is_marked_down_by_everyone_within_the_detection_bound() -> None:
    sim = Simulation(NODES, CONFIG, seed=1)
    sim.run_for(5)
    assert all(set(states(sim, n).values()) == {"alive"} for n in NODES)
    sim.crash("n3")
    sim.run_for(3.0 + 0.5 + 1.0)  # suspect_after + a gossip round + a probe
    assert all(states(sim, n)["n3"] == "down" for n in NODES if n != "n3")
    sim.restart("n3")
    sim.run_for(2)
    assert all(states(sim, n)["n3"] == "alive" for n in NODES if n != "n3")


def test_a_paused_node_is_marked_down_and_comes_back_when_resumed() -> None:
    sim = Simulation(NODES, CONFIG, seed=2)
    sim.run_for(2)
    sim.pause("n2")
    sim.run_for(10)
    assert all(states(sim, n)["n2"] == "down" for n in NODES if n != "n2")
    sim.resume("n2")
    sim.run_for(2)
    assert all(states(sim, n)["n2"] == "alive" for n in NODES if n != "n2")
    assert states(sim, "n2") == dict.fromkeys(["n1", "n3", "n4", "n5"], "alive")


def test_a_node_that_hears_nobody_suspects_everyone_but_marks_no_one_down() -> None:
    sim = Simulation(NODES, CONFIG, seed=3)
    sim.run_for(2)
    for node in NODES[1:]:
        sim.cut(node, "n1", both_ways=False)  # n1 still talks, but hears nothing
    sim.run_for(15)
    assert set(states(sim, "n1").values()) == {"suspect"}
    assert all(states(sim, n)["n1"] == "alive" for n in NODES[1:])


def test_wall_clock_skew_causes_no_false_suspicion() -> None:
    sim = Simulation(NODES, CONFIG, seed=4)
    sim.skew("n1", 300.0)
    sim.skew("n2", -300.0)
    sim.run_for(5)
    sim.skew("n1", -120.0)
    sim.run_for(10)
    assert all(set(states(sim, n).values()) == {"alive"} for n in NODES)
    assert not any(sim.nodes[n].logic.membership_changes for n in NODES)
