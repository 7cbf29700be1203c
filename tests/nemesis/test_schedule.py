"""Schedules as data: a drawn fault and its written form are one thing, a hand-written schedule
reads as the faults it says, and a bad one is refused naming the fault."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcheck.harness.spec import SpecError, TestSpec
from kvcheck.nemesis import (
    KINDS,
    CutLinks,
    KillNodes,
    Nemesis,
    NemesisError,
    PacketSupport,
    Planned,
    SetClocks,
    StrobeClocks,
    check_nodes,
    fault_of,
    planned_from_json,
    read_schedule,
    write_schedule,
)

NODES = ["n1", "n2", "n3", "n4", "n5"]
ZONES = {"n1": "a", "n2": "b", "n3": "c", "n4": "a", "n5": "b"}
ALL_PACKETS = PacketSupport(frozenset({"delay", "loss", "duplicate", "reorder", "rate"}))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(KINDS))
def test_a_drawn_fault_and_its_written_form_make_the_same_actions(seed: int, kind: str) -> None:
    nemesis = Nemesis([kind], NODES, random.Random(seed), hold=4.0, packets=ALL_PACKETS,
                      spare="n6", replicas=3, zones=ZONES)
    fault = nemesis.draw(kind)
    written = Planned(1.5, 4.0, kind, fault.targets, fault.detail).to_json()
    again = fault_of(planned_from_json(json.loads(json.dumps(written)), "here"))
    assert (again.kind, again.targets, again.start, again.stop) == (
        fault.kind, fault.targets, fault.start, fault.stop)


def schedule(tmp_path: Path, *faults: dict[str, Any], **top: Any) -> Path:
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps({"format": "kvcheck-schedule", "version": 1, **top,
                                "faults": list(faults)}))
    return path


def test_a_hand_written_scenario_reads_as_it_says(tmp_path: Path) -> None:
    """Partition {n1,n2} from {n3,n4,n5} at 5 s for 14 s; kill n4 at 9 s for 5 s; move n2's
    clock back 1.5 s at 20 s."""
    path = schedule(tmp_path,
                    {"at": 9, "duration": 5, "kind": "kill", "targets": ["n4"]},
                    {"at": 5, "duration": 14, "kind": "partition", "targets": ["n1", "n2"],
                     "components": [["n1", "n2"], ["n3", "n4", "n5"]]},
                    {"at": 20, "duration": 3, "kind": "clock", "targets": ["n2"],
                     "offset_ms": {"n2": -1500}})
    partition, kill, clock = read_schedule(path)  # sorted by start
    cut = fault_of(partition).start
    assert cut == (CutLinks(frozenset(
        {(a, b) for a in ("n1", "n2") for b in ("n3", "n4", "n5")}
        | {(b, a) for a in ("n1", "n2") for b in ("n3", "n4", "n5")})),)
    assert fault_of(kill).start == (KillNodes(("n4",)),)
    assert fault_of(clock).start == (SetClocks({"n2": -1.5}),)
    check_nodes((partition, kill, clock), NODES, "n6")


def test_a_strobe_lasts_as_long_as_its_fault() -> None:
    planned = Planned(0, 7, "clock", ("n1",), {"strobe": {"delta_ms": 200, "period_ms": 20}})
    assert fault_of(planned).start == (StrobeClocks(("n1",), 0.2, 0.02, 7),)


@pytest.mark.parametrize(("fault", "message"), [
    ({"at": 1, "duration": 2, "kind": "flood", "targets": ["n1"]}, "fault 1: kind must be"),
    ({"at": -1, "duration": 2, "kind": "kill", "targets": ["n1"]}, "at must be a number"),
    ({"at": 1, "duration": "2", "kind": "kill", "targets": ["n1"]}, "duration must be"),
    ({"at": 1, "duration": 2, "kind": "kill", "targets": []}, "targets must be a non-empty"),
    ({"at": 1, "duration": 2, "kind": "partition", "targets": ["n1"],
      "components": [["n1", "n2"]]}, "at least two components"),
    ({"at": 1, "duration": 2, "kind": "clock", "targets": ["n1"], "offset_ms": {"n2": 5}},
     "an offset for each target"),
    ({"at": 1, "duration": 2, "kind": "packet", "targets": ["n1"]}, "asks for no effect"),
    ({"at": 1, "duration": 2, "kind": "membership", "targets": ["n6"], "change": "grow",
      "via": "n1"}, "change must be join or leave"),
    ({"at": 1, "duration": 2, "kind": "disk", "targets": ["n1"], "error": "slow"},
     "error must be one of write, read, fsync"),
    ({"at": 1, "duration": 2, "kind": "disk", "targets": ["n1"]}, "unusable parameters"),
])
def test_a_bad_fault_is_refused_naming_it(tmp_path: Path, fault: dict[str, Any],
                                          message: str) -> None:
    path = schedule(tmp_path, fault)
    with pytest.raises(NemesisError, match=message) as error:
        read_schedule(path)
    assert str(error.value).startswith(f"{path}: fault 1")


def test_faults_of_one_kind_take_turns(tmp_path: Path) -> None:
    path = schedule(tmp_path, {"at": 1, "duration": 5, "kind": "kill", "targets": ["n1"]},
                    {"at": 4, "duration": 2, "kind": "kill", "targets": ["n2"]})
    with pytest.raises(NemesisError, match=r"two kill faults overlap \(1-6 s and 4-6 s\)"):
        read_schedule(path)


@pytest.mark.parametrize(("text", "message"), [
    ("not json", "cannot read a schedule"), ('{"faults": 3}', 'a "faults" list'),
    ('{"format": "kvcheck-history", "faults": []}', "not a kvcheck-schedule version 1 file")])
def test_a_file_that_is_no_schedule_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "s.json"
    path.write_text(text)
    with pytest.raises(NemesisError, match=message):
        read_schedule(path)


def test_unknown_nodes_are_named() -> None:
    faults = (Planned(2, 1, "partition", ("n1",), {"components": [["n1"], ["n9"]]}),)
    with pytest.raises(NemesisError, match="the partition fault at 2 s names n9"):
        check_nodes(faults, NODES[:3], "n4")
    join = (Planned(2, 1, "membership", ("n4",), {"change": "join", "via": "n1"}),)
    check_nodes(join, NODES[:3], "n4")  # the spare may join


def test_a_recorded_schedule_replays_without_its_skipped_faults(tmp_path: Path) -> None:
    path = tmp_path / "schedule.json"
    write_schedule(path, "overlap", [
        Planned(1, 2, "kill", ("n1",)),
        Planned(2, 3, "membership", ("n6",), {"change": "join", "via": "n2"},
                skipped="a membership change needs every member reachable, and kill is on")])
    assert json.loads(path.read_text())["mode"] == "overlap"
    assert read_schedule(path) == (Planned(1, 2, "kill", ("n1",)),)


def test_the_spec_takes_its_kinds_from_the_schedule() -> None:
    faults = (Planned(1, 2, "kill", ("n1",)), Planned(2, 2, "partition", ("n1",),
                                                       {"components": [["n1"], ["n2", "n3"]]}))
    spec = TestSpec(nodes=3, schedule=faults)
    assert spec.nemesis == ("kill", "partition")
    assert spec.to_json()["schedule"][0] == {"at": 1, "duration": 2, "kind": "kill",
                                             "targets": ["n1"]}
    with pytest.raises(SpecError, match="names n4"):
        TestSpec(nodes=3, schedule=(Planned(1, 2, "kill", ("n4",)),))


def test_a_zone_fault_reads_as_it_says_and_a_bad_one_is_refused_naming_what_to_write(
        tmp_path: Path) -> None:
    network = {"at": 2, "duration": 5, "kind": "zone", "targets": ["n1", "n4"], "zone": "a",
               "outage": "network", "components": [["n1", "n4"], ["n2", "n3", "n5"]]}
    power = {"at": 9, "duration": 3, "kind": "zone", "targets": ["n2", "n5"], "zone": "b",
             "outage": "power"}
    first, second = read_schedule(schedule(tmp_path, power, network))
    (cut,) = fault_of(first).start
    assert isinstance(cut, CutLinks) and ("n1", "n2") in cut.links and ("n3", "n4") in cut.links
    assert ("n1", "n4") not in cut.links  # the zone's nodes still talk among themselves
    assert fault_of(second).start == (KillNodes(("n2", "n5")),)
    for bad, words in (
            ({**network, "outage": "flood"}, "outage must be one of network, power"),
            ({k: v for k, v in network.items() if k != "components"},
             r"a network outage needs components"),
            ({**network, "components": [["n1"], ["n2", "n3", "n4", "n5"]]},
             "the first of its components must be its targets"),
            ({**power, "zone": ""}, "zone must name the zone lost")):
        with pytest.raises(NemesisError, match=words):
            read_schedule(schedule(tmp_path, bad))
