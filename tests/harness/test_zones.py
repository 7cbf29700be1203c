"""Zones in a test's specification: how nodes are spread, what is refused and why, what the
store is configured with, and the distance between zones in the simulator."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any

import pytest

from kvcheck.harness.cli import main
from kvcheck.harness.cli.values import node_values, node_weights
from kvcheck.harness.databases.kvstore import peers_toml
from kvcheck.harness.exitcodes import Exit
from kvcheck.harness.shell_faults import zone_delay_script
from kvcheck.harness.spec import SpecError, TestSpec
from kvcheck.nemesis import Planned
from kvcheck.store.config import peers_from_mapping
from kvcheck.store.sim import Simulation


def spec(**given: Any) -> TestSpec:
    return TestSpec(**{"nodes": 6, "seed": 1, "nemesis": (), **given})


def test_zones_take_the_nodes_in_turn_and_the_spare_continues_the_turn() -> None:
    zoned = spec(zones=3, nemesis=("zone", "membership"))
    assert zoned.node_zones == {"n1": "a", "n2": "b", "n3": "c", "n4": "a", "n5": "b",
                                "n6": "c", "n7": "a"}
    assert zoned.zone_of("n9") == "c"  # a node an autoscaler adds takes its turn too
    described = zoned.to_json()
    assert described["zones"] == zoned.node_zones  # the spare too: the membership nemesis
    assert described["weights"] == dict.fromkeys(zoned.node_zones, 1)
    assert "zone_map" not in described
    assert spec().to_json()["zones"] == dict.fromkeys([f"n{i}" for i in range(1, 7)], "a")


def test_a_zone_map_and_weights_place_each_node() -> None:
    mapped = spec(zone_map=(("n1", "east"), ("n2", "east"), ("n3", "west"), ("n4", "west"),
                            ("n5", "east"), ("n6", "west")), weights=(("n1", 2),))
    assert mapped.zones == 2 and mapped.zone_of("n7") == "east"
    assert mapped.weight("n1") == 2 and mapped.weight("n2") == 1


@pytest.mark.parametrize(("given", "words"), [
    ({"zones": 7}, r"--zones must be from 1 to the number of nodes \(6 at most\)"),
    ({"zones": 0}, "--zones must be from 1"),
    ({"zone_map": (("n1", "a"),)}, "--zone-map gives no zone for n2, n3, n4, n5, n6"),
    ({"zone_map": (*((f"n{i}", "a") for i in range(1, 7)), ("n9", "b"))},
     "--zone-map names n9, not a node of this test"),
    ({"zones": 3, "zone_map": tuple((f"n{i}", "ab"[i % 2]) for i in range(1, 7))},
     "--zones 3 and a --zone-map of 2 zone.s. disagree"),
    ({"zone_map": tuple((f"n{i}", "a b") for i in range(1, 7))}, "'a b' is not a zone name"),
    ({"weights": (("n1", 0),)}, "the weight of n1 must be a whole number from 1 to 64"),
    ({"weights": (("n8", 2),)}, "--weights names n8"),
    ({"nemesis": ("zone",)}, "--nemesis zone takes a zone away: spread the nodes over two"),
    ({"zones": 3, "zone_outage": "power"}, "--zone-outage needs the zone nemesis"),
    ({"zones": 3, "nemesis": ("zone",), "zone_outage": "flood"},
     "--zone-outage must be network or power"),
    ({"zone_latency_ms": 30}, "--zone-latency-ms delays packets between zones: give --zones 2"),
    ({"zones": 2, "zone_latency_ms": -1}, "--zone-latency-ms must be a number"),
    ({"zones": 2, "zone_latency_ms": 30, "nemesis": ("packet",)},
     "--zone-latency-ms and --nemesis packet both need each node's queueing discipline"),
    ({"db": "etcd", "weights": (("n1", 2),)}, "--weights sets the reference store's"),
])
def test_impossible_zones_are_refused_naming_the_option(given: dict[str, Any],
                                                        words: str) -> None:
    with pytest.raises(SpecError, match=words):
        spec(**given)


def test_a_zone_outage_needs_the_database_to_undergo_what_it_is_made_of() -> None:
    unkillable = {"db": "sample_databases:Unkillable", "zones": 3, "nemesis": ("zone",)}
    with pytest.raises(SpecError, match="a power outage is a kill of the zone's nodes, which "
                                        "--db sample_databases:Unkillable cannot undergo: it "
                                        r"restarts itself \(choose the other with"):
        spec(**unkillable)
    assert spec(**unkillable, zone_outage="network").zone_outage == "network"
    with pytest.raises(SpecError, match="a power outage is a kill"):
        spec(**unkillable, zone_outage="power")


def test_a_scheduled_zone_fault_must_lose_exactly_its_zone() -> None:
    wrong = Planned(1, 5, "zone", ("n1",), {"zone": "a", "outage": "power"})
    with pytest.raises(SpecError, match="loses zone 'a', whose nodes are n1, n4, but its "
                                        "targets are n1"):
        spec(zones=3, schedule=(wrong,))
    right = Planned(1, 5, "zone", ("n1", "n4"), {"zone": "a", "outage": "power"})
    assert spec(zones=3, schedule=(right,)).nemesis == ("zone",)
    assert spec(zones=3, backend="sim", zone_latency_ms=30, nemesis=("packet",))


def test_node_values_and_weights_parse_from_the_command_line() -> None:
    assert node_values(" n1=a, n2 = b ,") == (("n1", "a"), ("n2", "b"))
    assert node_weights("n1=2,n2=1") == (("n1", 2), ("n2", 1))
    for text, words in (("n1", "expected NODE=VALUE"), ("n1=a,n1=b", "n1 named twice"),
                        ("=a", "expected NODE=VALUE")):
        with pytest.raises(argparse.ArgumentTypeError, match=words):
            node_values(text)
    with pytest.raises(argparse.ArgumentTypeError, match="a weight is a whole number"):
        node_weights("n1=1.5")


def test_the_store_learns_its_peers_zones_and_weights_from_the_file_the_adapter_writes() -> None:
    zoned = spec(zones=3, weights=(("n2", 3),))
    text = peers_toml({"n2": "10.0.0.2", "n3": "10.0.0.3"}, zoned)
    peers = peers_from_mapping(tomllib.loads(text)["peers"])
    assert [(p.node_id, str(p.address), p.zone, p.weight) for p in peers] == [
        ("n2", "10.0.0.2:7000", "b", 3), ("n3", "10.0.0.3:7000", "c", 1)]


def test_the_delay_between_zones_goes_to_far_addresses_only() -> None:
    script = zone_delay_script(30, ["10.0.0.3", "10.0.0.4"], "eth0")
    assert "netem delay 30ms" in script and script.count("match ip dst") == 2
    assert "match ip dst 10.0.0.3/32 flowid 1:4" in script
    assert script.startswith("tc qdisc add dev eth0 root handle 1: prio bands 4")


def test_the_simulator_delays_messages_between_zones_and_not_within_one() -> None:
    """Replica latencies (a put's replication, sent to arrival) of a cluster in two zones:
    those between the zones carry the delay, those within a zone do not."""
    zones = {"n1": "a", "n2": "a", "n3": "b"}
    near = Simulation(list(zones), zones=zones, seed=3, trace=False)
    far = Simulation(list(zones), zones=zones, seed=3, trace=False, zone_delay=0.030)
    for sim in (near, far):
        for i in range(20):
            sim.wait_for(sim.put("n1", f"k{i}".encode(), b"v"))
    assert max(near.latencies["write"]) < 0.005
    assert min(far.latencies["write"]) < 0.005
    assert max(far.latencies["write"]) >= 0.030
    assert far.zones == zones


def test_the_simulator_keeps_a_link_cut_twice_until_both_cuts_are_undone() -> None:
    sim = Simulation(["n1", "n2", "n3"], seed=1, trace=False)
    sim.cut("n1", "n2")
    sim.cut("n1", "n2", both_ways=False)
    sim.uncut("n1", "n2")
    assert set(sim.cut_links) == {("n1", "n2")}
    sim.uncut("n1", "n2", both_ways=False)
    assert not sim.cut_links


def test_a_search_for_failures_refuses_zone_faults_it_cannot_place(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["explore", "--nemesis", "partition,zone", "--budget", "1",
                 "--histories", str(tmp_path)])
    assert code == Exit.USAGE
    assert "--nemesis zone: the search puts every node in one zone" in capsys.readouterr().err
    assert not (tmp_path / "explore").exists()
