"""Zones: test.json's ``zones`` read and checked; availability by zone in the stats figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from checker_builders import H

from kvcheck.checkers import (
    HistoryError,
    TestConfig,
    check_run,
    check_stats,
    read_test_config,
    write_history,
)
from kvcheck.checkers.history import zone_groups

ZONES = {"n1": "a", "n2": "b", "n3": "c", "n4": "a"}
ZONED = TestConfig(zones=ZONES)


def zone_outage() -> H:
    """Zone a (n1, n4) loses its network: inside the window the calls through its nodes fail or
    time out, those through b and c succeed; one call names no node, one a node of no zone."""
    h = H()
    for p, node in enumerate(("n1", "n2", "n3")):
        h.call(p, "write", p, node=node)
    h.nemesis("start-zone", {"fault": "zone", "targets": ["n1", "n4"], "zone": "a",
                             "outage": "network"})
    h.call(0, "write", 10, type_="fail", node="n1")
    h.call(1, "read", type_="info", node="n4")
    h.call(2, "write", 11, node="n2")
    h.call(3, "read", out=[11], node="n3")
    h.call(4, "read", out=[11], node="n2")
    h.call(5, "write", 12, type_="fail")  # no node
    h.call(6, "write", 13, node="n9")  # a node no zone names
    h.nemesis("stop-zone", {"fault": "zone", "targets": ["n1", "n4"], "zone": "a"})
    h.call(0, "write", 14, node="n1")
    h.call(7, "read", out=[14], node="n1", final=True)  # final reads are left out
    return h


def share(calls: int, ok: int) -> dict[str, Any]:
    return {"calls": calls, "ok": ok, "availability": round(ok / calls, 6) if calls else None}


def test_a_zone_window_counts_the_calls_through_each_zones_nodes() -> None:
    availability = check_stats(zone_outage().ops, ZONED).figures["availability"]
    (w,) = availability["windows"]
    assert (w["fault"], w["targets"]) == ("zone", ["n1", "n4"])
    assert (w["calls"], w["ok"]) == (7, 4)
    assert w["by_zone"] == {"a": share(2, 0), "b": share(2, 2), "c": share(1, 1)}
    assert w["no_zone"] == share(2, 1)
    assert availability["by_zone"] == {"a": share(4, 2), "b": share(3, 3), "c": share(2, 2)}
    assert availability["no_zone"] == share(2, 1)
    assert availability["overall"] == share(11, 8)
    assert "by_zone" not in availability["outside_faults"]


def test_a_zone_without_calls_is_listed_with_none() -> None:
    h = H()
    h.call(0, "write", 1, node="n1")
    zones = {**ZONES, "n7": "d"}  # the spare, in a zone of its own
    by_zone = check_stats(h.ops, TestConfig(zones=zones)).figures["availability"]["by_zone"]
    assert list(by_zone) == ["a", "b", "c", "d"]
    assert by_zone["d"] == {"calls": 0, "ok": 0, "availability": None}


@pytest.mark.parametrize("zones", [{}, {"n1": "a", "n2": "a", "n3": "a", "n4": "a"}])
def test_one_zone_or_none_counts_nothing_by_zone(zones: dict[str, str]) -> None:
    availability = check_stats(zone_outage().ops, TestConfig(zones=zones)).figures["availability"]
    assert "by_zone" not in availability and "no_zone" not in availability
    (w,) = availability["windows"]
    assert "by_zone" not in w and "no_zone" not in w
    assert availability["overall"] == share(11, 8)


def test_zone_groups_list_each_zones_nodes_only_with_two_zones_or_more() -> None:
    assert zone_groups({"n2": "b", "n1": "a", "n3": "b"}) == {"a": ["n1"], "b": ["n2", "n3"]}
    assert zone_groups({"n1": "a", "n2": "a"}) == {} == zone_groups({})


def test_test_json_zones_are_read_and_kept_in_raw(tmp_path: Path) -> None:
    path = tmp_path / "test.json"
    path.write_text(json.dumps({"nodes": ["n1", "n2"], "zones": {"n1": "a", "n2": "b"},
                                "weights": {"n1": 1, "n2": 2}}))
    config = read_test_config(path)
    assert config.zones == {"n1": "a", "n2": "b"}
    assert config.raw["weights"] == {"n1": 1, "n2": 2}
    assert TestConfig.from_json({"nodes": ["n1"]}).zones == {}


@pytest.mark.parametrize("zones", [["a", "b"], None, "a", {"n1": ""}, {"n1": 1},
                                   {"n1": None}, {"n1": ["a"]}])
def test_malformed_zones_are_refused(tmp_path: Path, zones: Any) -> None:
    path = tmp_path / "test.json"
    path.write_text(json.dumps({"zones": zones}))
    with pytest.raises(HistoryError, match="zones") as e:
        read_test_config(path)
    assert str(e.value).startswith(str(path))
    with pytest.raises(ValueError, match="zones"):
        TestConfig(zones=zones)


def test_a_run_directorys_zones_reach_the_stats_checker(tmp_path: Path) -> None:
    write_history(tmp_path / "history.jsonl", zone_outage().ops)
    (tmp_path / "test.json").write_text(json.dumps({"zones": ZONES, "checkers": ["stats"]}))
    check_run(tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    w = results["checkers"]["stats"]["figures"]["availability"]["windows"][0]
    assert w["by_zone"]["a"] == share(2, 0) and w["no_zone"] == share(2, 1)
