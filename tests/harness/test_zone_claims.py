"""The design's claim about data centers, measured in the simulator over several seeds: six nodes
in three zones, N = 3, strict W = R = 2 — losing a zone (its network or its power) leaves every
key readable and writable through the nodes of the other zones, with no stale read; the same
six nodes with zones ignored, the same two nodes lost, leave the keys that had two replicas on
them neither readable nor writable through the others. (In Docker: test_zones_docker.py.)"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from kvcheck.harness.cli import main
from kvcheck.harness.exitcodes import Exit
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


class Window:
    """The client operations invoked inside the outage, by key and by where they went."""

    def __init__(self, run_dir: Path) -> None:
        ops = [json.loads(line) for line in
               (run_dir / "history.jsonl").read_text().splitlines()[1:]]
        start = next(o for o in ops if o["process"] == "nemesis" and o["type"] == "info"
                     and o["f"].startswith("start-"))
        stop = next(o for o in ops if o["process"] == "nemesis"  # before any node is back
                    and o["f"].startswith("stop-"))
        self.replicas: dict[str, list[str]] = json.loads(
            (run_dir / "final-state.json").read_text())["replicas"]
        #: (key, f, through a lost node?) -> [(seconds after the start, ok?)]
        self.calls: dict[tuple[str, str, bool], list[tuple[float, bool]]] = defaultdict(list)
        invoked: dict[Any, dict[str, Any]] = {}
        for op in ops:
            if op["process"] == "nemesis" or op.get("final"):
                continue
            if op["type"] == "invoke":
                invoked[op["process"]] = op
                continue
            call = invoked.pop(op["process"])
            if start["index"] < call["index"] < stop["index"]:
                self.calls[call["key"], call["f"], call["node"] in LOST].append(
                    ((call["time"] - start["time"]) / 1e9, op["type"] == "ok"))

    def keys(self) -> set[str]:
        return {key for key, _, _ in self.calls}

    def through_others(self, key: str, f: str) -> list[tuple[float, bool]]:
        return self.calls.get((key, f, False), [])

    def two_replicas_lost(self, key: str) -> bool:
        return len(set(self.replicas[key]) & set(LOST)) >= 2


@pytest.mark.parametrize("fault", ["zone-power", "zone-network"])
def test_with_replicas_in_three_zones_losing_one_leaves_every_key_available_elsewhere(
        tmp_path: Path, fault: str) -> None:
    for seed in SEEDS:
        window = Window(run(tmp_path, 3, fault, seed))
        assert len(window.keys()) >= 3
        for key in window.keys():
            assert not window.two_replicas_lost(key)  # one replica per zone
            for f in ("read", "write"):
                calls = window.through_others(key, f)
                assert any(ok for _, ok in calls), (seed, key, f)
                failed_at = [at for at, ok in calls if not ok]
                if fault == "zone-power":
                    assert failed_at == [], (seed, key, f)
                else:  # only until the failure detector knows the zone is gone
                    assert all(at < DETECTION_S for at in failed_at), (seed, key, f, failed_at)
            for f in ("read", "write"):  # clients bound to the lost zone's nodes fail
                assert not any(ok for _, ok in window.calls.get((key, f, True), []))


@pytest.mark.parametrize("fault", ["kill", "partition"])
def test_with_zones_ignored_the_keys_with_two_replicas_on_the_lost_nodes_are_unavailable(
        tmp_path: Path, fault: str) -> None:
    for seed in SEEDS:
        window = Window(run(tmp_path, 1, fault, seed))
        doubly = {key for key in window.keys() if window.two_replicas_lost(key)}
        assert doubly, f"seed {seed}: no key with two replicas on {LOST} was used in the outage"
        for key in doubly:
            for f in ("read", "write"):
                calls = window.through_others(key, f)
                assert calls and not any(ok for _, ok in calls), (seed, key, f)
