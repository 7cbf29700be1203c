"""The nemesis draws faults as data: seeded, minorities, healable, honest about packets."""

from __future__ import annotations

import random

import pytest

from kvcheck.nemesis import (
    ClearPackets,
    CutLinks,
    CutPower,
    FailDisks,
    HealDisks,
    HealLinks,
    JoinNode,
    KillNodes,
    LeaveNode,
    Nemesis,
    NemesisError,
    PacketFault,
    PacketSupport,
    PauseNodes,
    ResetClocks,
    RestartNodes,
    ResumeNodes,
    SetClocks,
    StrobeClocks,
    parse_kinds,
)
from kvcheck.nemesis.plan import usable_topologies

NODES = ["n1", "n2", "n3", "n4", "n5"]
ALL_PACKETS = PacketSupport(frozenset({"delay", "loss", "duplicate", "reorder", "rate"}))
HEALS = {CutLinks: HealLinks, KillNodes: RestartNodes, PauseNodes: ResumeNodes,
         SetClocks: ResetClocks, StrobeClocks: ResetClocks, PacketFault: ClearPackets,
         FailDisks: HealDisks, CutPower: RestartNodes}


def test_kinds_parse_from_a_comma_list_and_unknown_ones_are_named() -> None:
    assert parse_kinds("partition, kill,partition") == ("partition", "kill")
    assert parse_kinds("none") == ()
    with pytest.raises(NemesisError, match=r"unknown nemesis kind.*explode.*known: partition"):
        parse_kinds("partition,explode")


def test_the_same_seed_draws_the_same_faults() -> None:
    def draw(seed: int) -> list[object]:
        nemesis = Nemesis(["partition", "kill", "pause", "clock", "packet"], NODES,
                          random.Random(seed), hold=5, packets=ALL_PACKETS)
        return [nemesis.next_fault() for _ in range(20)]

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


def test_every_fault_heals_what_it_breaks_and_hits_only_a_minority_of_processes() -> None:
    nemesis = Nemesis(["partition", "kill", "pause", "clock", "packet", "disk", "power"],
                      NODES, random.Random(0), hold=5, packets=ALL_PACKETS)
    powered_off = []
    for _ in range(200):
        fault = nemesis.next_fault()
        (start,) = fault.start
        assert [type(a) for a in fault.stop] == [HEALS[type(start)]]
        if fault.kind in ("kill", "pause", "clock", "packet", "disk"):
            assert 1 <= len(fault.targets) <= 2
        if fault.kind == "power":
            powered_off.append(len(fault.targets))
        assert fault.describe()["fault"] == fault.kind
    assert set(powered_off) == {1, 2, len(NODES)}  # a minority, or every node at once


def test_the_packet_nemesis_uses_only_effects_the_backend_supports() -> None:
    only_loss = PacketSupport(frozenset({"loss", "rate"}), "no netem in this kernel")
    nemesis = Nemesis(["packet"], NODES, random.Random(1), hold=5, packets=only_loss)
    effects = {e for _ in range(50) for e in nemesis.next_fault().start[0].effects}  # type: ignore[union-attr]
    assert effects == {"loss", "rate"}
    with pytest.raises(NemesisError, match="no netem in this kernel"):
        Nemesis(["packet"], NODES, random.Random(1), hold=5,
                packets=PacketSupport(frozenset(), "no netem in this kernel"))


def test_clock_faults_range_from_milliseconds_to_minutes() -> None:
    nemesis = Nemesis(["clock"], NODES, random.Random(2), hold=5)
    offsets = [abs(o) for _ in range(300) for a in nemesis.next_fault().start
               if isinstance(a, SetClocks) for o in a.offsets.values()]
    assert min(offsets) < 0.1 and max(offsets) > 30
    assert all(0.01 <= o <= 120 for o in offsets)


def test_membership_faults_restore_the_membership_they_change_and_never_go_below_n() -> None:
    nemesis = Nemesis(["membership"], NODES, random.Random(5), hold=5, spare="n6", replicas=3)
    changes = set()
    for _ in range(100):
        fault = nemesis.next_fault()
        (start,), (stop,) = fault.start, fault.stop
        if isinstance(start, JoinNode):
            assert start.node == "n6" and start.via in NODES
            assert stop == LeaveNode("n6")
        else:
            assert isinstance(start, LeaveNode) and start.node in NODES
            assert isinstance(stop, JoinNode) and stop.node == start.node
            assert stop.via in NODES and stop.via != start.node
        changes.add(type(start))
    assert changes == {JoinNode, LeaveNode}
    only_grow = Nemesis(["membership"], NODES[:3], random.Random(5), hold=5, spare="n4",
                        replicas=3)
    assert all(isinstance(only_grow.next_fault().start[0], JoinNode) for _ in range(20))
    with pytest.raises(NemesisError, match="spare node"):
        Nemesis(["membership"], NODES[:3], random.Random(5), hold=5, replicas=3)


def test_partitions_draw_only_the_topologies_asked_for_and_isolate_the_primary() -> None:
    nodes = ["n1", "n2", "n3", "n4", "n5"]
    nemesis = Nemesis(["partition"], nodes, random.Random(3), hold=1.0,
                      topologies=["isolate-primary"], primaries=True)
    assert nemesis.wants_primary("partition")
    for primary in ("n2", "n4", "n5"):
        fault = nemesis.next_fault(primary)
        assert (fault.detail["topology"], fault.detail["primary"]) == ("isolate-primary",
                                                                      primary)
        assert primary in fault.targets
    unknown = nemesis.next_fault(None)  # no primary known now: one node, said so
    assert unknown.detail["topology"] == "isolate-one"
    assert unknown.detail["instead_of"] == "isolate-primary: no primary was known"
    halves = Nemesis(["partition"], nodes, random.Random(3), hold=1.0,
                     topologies=["halves", "bridge"])
    assert not halves.wants_primary("partition")
    assert {halves.next_fault().detail["topology"] for _ in range(20)} == {"halves", "bridge"}


@pytest.mark.parametrize(("nodes", "wanted", "primaries", "message"), [
    (5, ["spiral"], True, "unknown partition topology spiral"),
    (5, ["isolate-primary"], False, "needs a database that names its primary"),
    (3, ["majorities-ring"], False, "majorities-ring topology needs at least 4 nodes"),
])
def test_topologies_that_cannot_be_drawn_are_refused(nodes: int, wanted: list[str],
                                                     primaries: bool, message: str) -> None:
    with pytest.raises(NemesisError, match=message):
        usable_topologies(nodes, wanted, primaries)


def test_by_default_every_topology_the_cluster_allows() -> None:
    assert usable_topologies(3) == ("halves", "random-halves", "isolate-one", "bridge")
    assert usable_topologies(5, primaries=True)[-1] == "isolate-primary"


def test_a_zone_outage_takes_a_whole_zone_by_network_or_power_and_needs_two_zones() -> None:
    zones = {"n1": "a", "n2": "b", "n3": "c", "n4": "a", "n5": "b"}
    nemesis = Nemesis(["zone"], NODES, random.Random(4), hold=5, zones=zones)
    seen = set()
    for _ in range(60):
        fault = nemesis.draw("zone")
        zone, outage = fault.detail["zone"], fault.detail["outage"]
        seen.add((zone, outage))
        assert fault.targets == tuple(n for n in NODES if zones[n] == zone)
        if outage == "network":
            assert fault.detail["components"] == [list(fault.targets),
                                                  [n for n in NODES if zones[n] != zone]]
            assert fault.stop == (HealLinks(fault.start[0].links),)  # type: ignore[union-attr]
        else:
            assert fault.start == (KillNodes(fault.targets),)
    assert seen == {(z, o) for z in "abc" for o in ("network", "power")}
    only_power = Nemesis(["zone"], NODES, random.Random(4), hold=5, zones=zones, outage="power")
    assert {only_power.draw("zone").detail["outage"] for _ in range(20)} == {"power"}
    with pytest.raises(NemesisError, match="two zones or more"):
        Nemesis(["zone"], NODES, random.Random(4), hold=5, zones=dict.fromkeys(NODES, "a"))
    with pytest.raises(NemesisError, match="network, power"):
        Nemesis(["zone"], NODES, random.Random(4), hold=5, zones=zones, outage="flood")
