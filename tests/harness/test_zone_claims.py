"""The design's claim about data centers, measured in the simulator over several seeds: six nodes
in three zones, N = 3, strict W = R = 2 — losing a zone (its network or its power) leaves every
key readable and writable through the nodes of the other zones, with no stale read; the same
six nodes with zones ignored, the same two nodes lost, leave the keys that had two replicas on
them neither readable nor writable through the others. (In Docker: test_zones_docker.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kvcheck.harness.cli import main
from kvcheck.harness.exitcodes import Exit
from kvcheck.harness.outage import Outage, outages
from kvcheck.store.config import ClusterConfig

#: Zone c of six nodes in three zones (n1 in a, n2 in b, n3 in c, n4 in a, ...).
LOST = ["n3", "n6"]
OTHERS = ["n1", "n2", "n4", "n5"]
START, DURATION = 10.0, 15.0
#: Seconds after a network outage starts within which a put may still wait on a replica of the
#: lost zone to stamp it: until the failure detector suspects the zone's nodes (no heartbeat
#: for ``suspect_after_ms``) and an indirect probe confirms it, plus one request timeout for a
#: put started just before. A power outage refuses connections: no wait at all.
_CONFIG = ClusterConfig()
DETECTION_S = (_CONFIG.suspect_after_ms + _CONFIG.probe_timeout_ms
               + _CONFIG.gossip_interval_ms + _CONFIG.request_timeout_ms) / 1000
SEEDS = (1, 2, 3)


def outage(kind: str) -> dict[str, Any]:
    """The fault that loses ``LOST``: a zone outage, or with zones ignored, the same two nodes
    cut off (a partition) or killed."""
    at = {"at": START, "duration": DURATION, "targets": LOST}
    components = {"components": [LOST, OTHERS]}
    return {"zone-network": {**at, "kind": "zone", "zone": "c", "outage": "network",
                             **components},
            "zone-power": {**at, "kind": "zone", "zone": "c", "outage": "power"},
            "partition": {**at, "kind": "partition", **components},
            "kill": {**at, "kind": "kill"}}[kind]


def run(tmp_path: Path, zones: int, fault: str, seed: int) -> Path:
    schedule = tmp_path / f"{fault}.json"
    schedule.write_text(json.dumps({"format": "kvcheck-schedule", "version": 1,
                                    "faults": [outage(fault)]}))
    histories = tmp_path / f"{zones}-{fault}-{seed}"
    code = main(["run", "--backend", "sim", "--histories", str(histories), "--nodes", "6",
                 "--zones", str(zones), "--n", "3", "--w", "2", "--r", "2",
                 "--schedule", str(schedule), "--time-limit", "30", "--recovery-time", "5",
                 "--seed", str(seed)])
    run_dir = (histories / "latest").resolve()
    assert code == Exit.OK, f"not valid: {run_dir}"  # no stale read, nothing lost
    return run_dir


def outage_of(run_dir: Path) -> Outage:
    (outage,) = outages(run_dir)
    assert outage.lost == set(LOST)
    return outage


@pytest.mark.parametrize("fault", ["zone-power", "zone-network"])
def test_with_replicas_in_three_zones_losing_one_leaves_every_key_available_elsewhere(
        tmp_path: Path, fault: str) -> None:
    for seed in SEEDS:
        outage = outage_of(run(tmp_path, 3, fault, seed))
        assert len(outage.keys) >= 3
        for key in outage.keys:
            assert outage.replicas_lost(key) == 1  # one replica per zone
            for f in ("read", "write"):
                calls = outage.through(key, f, lost=False)
                assert any(ok for _, ok in calls), (seed, key, f)
                failed_at = [at for at, ok in calls if not ok]
                if fault == "zone-power":
                    assert failed_at == [], (seed, key, f)
                else:  # only until the failure detector knows the zone is gone
                    assert all(at < DETECTION_S for at in failed_at), (seed, key, f, failed_at)
            for f in ("read", "write"):  # clients bound to the lost zone's nodes fail
                assert not any(ok for _, ok in outage.through(key, f, lost=True))


@pytest.mark.parametrize("fault", ["kill", "partition"])
def test_with_zones_ignored_the_keys_with_two_replicas_on_the_lost_nodes_are_unavailable(
        tmp_path: Path, fault: str) -> None:
    for seed in SEEDS:
        outage = outage_of(run(tmp_path, 1, fault, seed))
        doubly = {key for key in outage.keys if outage.replicas_lost(key) >= 2}
        assert doubly, f"seed {seed}: no key with two replicas on {LOST} was used in the outage"
        for key in doubly:
            for f in ("read", "write"):
                calls = outage.through(key, f, lost=False)
                assert calls and not any(ok for _, ok in calls), (seed, key, f)
