"""Zones in containers: six nodes in three zones lose a data center's power, the run is valid,
and the stats checker's availability by zone inside each outage shows the lost zone's clients
failing while every call through the other zones succeeds. (The same claim over several seeds,
both outage kinds, and against zones ignored: test_zone_claims.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from leftovers import leftovers

from kvcheck.harness.cli import main
from kvcheck.harness.exitcodes import Exit

pytestmark = pytest.mark.integration


def test_a_zone_power_outage_leaves_the_other_zones_available_and_the_run_valid(
        tmp_path: Path) -> None:
    code = main(["run", "--nodes", "6", "--zones", "3", "--n", "3", "--w", "2", "--r", "2",
                 "--nemesis", "zone", "--zone-outage", "power", "--zone-latency-ms", "30",
                 "--time-limit", "20", "--nemesis-interval", "5", "--recovery-time", "3",
                 "--seed", "4", "--histories", str(tmp_path)])
    run_dir = (tmp_path / "latest").resolve()
    assert code == Exit.OK
    test = json.loads((run_dir / "test.json").read_text())
    assert test["zones"] == {"n1": "a", "n2": "b", "n3": "c", "n4": "a", "n5": "b", "n6": "c"}
    if test.get("notes"):  # a kernel without netem: said, not silently skipped
        assert "no delay between zones" in test["notes"][0]
    stats = json.loads((run_dir / "results.json").read_text())["checkers"]["stats"]
    windows = [w for w in stats["figures"]["availability"]["windows"] if w["fault"] == "zone"]
    assert windows
    zones = test["zones"]
    for window in windows:
        lost = {zones[node] for node in window["targets"]}
        assert len(lost) == 1
        by_zone = window["by_zone"]
        for zone, share in by_zone.items():
            if zone in lost:
                assert share["ok"] < share["calls"]  # refused while the zone is dark
            else:
                assert share["calls"] > 0 and share["ok"] == share["calls"], (zone, share)
    schedule = json.loads((run_dir / "schedule.json").read_text())["faults"]
    assert all(f["outage"] == "power" and f["zone"] in "abc" for f in schedule)
    assert leftovers(tmp_path) == []
