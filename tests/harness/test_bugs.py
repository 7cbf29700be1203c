"""Testing the tester: each deliberate mistake of the reference store (``--bug``) is found by a
small seeded search of simulated runs — invalid for that mistake's reason, the anomaly its part
of the design causes — and the same run of the correct store is valid."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from kvcheck.harness.cli import main
from kvcheck.harness.exitcodes import Exit
from kvcheck.harness.spec import SpecError, TestSpec
from kvcheck.store.bugs import BUGS
from kvcheck.store.config import ClusterConfig
from kvcheck.store.ring import Member, Ring

RUN = ["--nodes", "5", "--time-limit", "60", "--nemesis", "partition", "--nemesis-interval", "5"]
#: Each bug: the options that show it, the checker that must catch it, and the anomaly.
CAUGHT_BY = {
    "count-own-read-twice": ([], "stale-reads", "stale-read"),
    "ack-when-sent": ([], "stale-reads", "stale-read"),
    "merge-keeps-newest": (["--workload", "set"], "lost-writes", "lost"),
    "repair-replaces": (["--workload", "set"], "lost-writes", "lost"),
    "dot-from-context": (["--workload", "set"], "lost-writes", "lost"),
    "context-not-kept": ([], "stale-reads", "superseded-sibling"),
    "lww-last-arrival": (["--versioning", "lww"], "stale-reads", "stale-read"),
    "ack-before-fsync": (["--workload", "set", "--nemesis", "power", "--rate", "500"],
                         "lost-writes", "lost"),
}
#: Seeds tried, in order, before a bug counts as not caught.
SEEDS = 4


def sim_run(histories: Path, *argv: str, run: Sequence[str] = RUN
            ) -> tuple[int, dict[str, dict[str, object]]]:
    """Exit code and checker results of ``kvcheck run --backend sim RUN ARGV``."""
    code = main(["run", "--backend", "sim", "--histories", str(histories), *run, *argv])
    run_dir = (histories / "latest").resolve()
    return code, json.loads((run_dir / "results.json").read_text())["checkers"]


def test_every_bug_has_a_test_that_catches_it() -> None:
    assert set(CAUGHT_BY) | {"hints-in-memory"} == set(BUGS)


@pytest.mark.parametrize("bug", sorted(CAUGHT_BY))
def test_a_seeded_search_catches_each_bug_for_its_reason_and_the_correct_store_passes(
        tmp_path: Path, bug: str) -> None:
    options, checker, kind = CAUGHT_BY[bug]
    for seed in range(1, SEEDS + 1):
        code, results = sim_run(tmp_path / f"bug-{seed}", *options, "--bug", bug,
                                "--seed", str(seed))
        invalid = {name for name, result in results.items() if result["valid"] is False}
        if invalid:
            break
    else:
        pytest.fail(f"{bug} was not caught on seeds 1 to {SEEDS}")
    assert code == Exit.INVALID
    assert invalid == {checker}
    assert kind in {a["kind"] for a in results[checker]["anomalies"]}  # type: ignore[attr-defined]
    code, _ = sim_run(tmp_path / "correct", *options, "--seed", str(seed))
    assert code == Exit.OK


NODES = [f"n{i}" for i in range(1, 6)]
RING = Ring.build([Member(node, "default") for node in NODES], ClusterConfig().vnodes_per_weight)


def replicas(key: str) -> list[str]:
    return sorted(RING.preference_list(key.encode(), 3))


def stand_ins_only(path: Path, key: str) -> Path:
    """A schedule in which writes of ``key`` through the nodes that do not replicate it reach
    only stand-ins, which are killed while they hold the hints: the key's replicas are cut off
    from the others from 1 s to 26 s, and the others killed at 17 s for 2 s."""
    others = [node for node in NODES if node not in replicas(key)]
    path.write_text(json.dumps({"format": "kvcheck-schedule", "version": 1, "faults": [
        {"at": 1, "duration": 25, "kind": "partition", "targets": NODES,
         "components": [replicas(key), others]},
        {"at": 17, "duration": 2, "kind": "kill", "targets": others}]}))
    return path


def test_hints_kept_in_memory_lose_writes_that_only_stand_ins_held(tmp_path: Path) -> None:
    """The set workload's key s5 takes writes from about 13 s to 18 s on seed 1: those through
    the nodes cut off from its replicas are lost, and only keys replicated where s5 is."""
    options = ["--nodes", "5", "--workload", "set", "--sloppy-quorum", "--time-limit", "40",
               "--seed", "1", "--schedule", str(stand_ins_only(tmp_path / "cut.json", "s5"))]
    code, results = sim_run(tmp_path / "bug", *options, "--bug", "hints-in-memory", run=())
    assert code == Exit.INVALID
    assert {name for name, r in results.items() if r["valid"] is False} == {"lost-writes"}
    lost = {a["key"] for a in results["lost-writes"]["anomalies"]  # type: ignore[attr-defined]
            if a["kind"] == "lost"}
    assert "s5" in lost and all(replicas(key) == replicas("s5") for key in lost)
    code, _ = sim_run(tmp_path / "correct", *options, run=())
    assert code == Exit.OK


def test_bugs_reach_every_node_as_flags_and_unknown_ones_are_refused() -> None:
    spec = TestSpec(bugs=("ack-when-sent",))
    assert "--bug=ack-when-sent" in spec.store_flags()
    assert spec.to_json()["bugs"] == ["ack-when-sent"]
    with pytest.raises(SpecError, match="no such bug: nope"):
        TestSpec(bugs=("nope",))
    with pytest.raises(SpecError, match="reference store"):
        TestSpec(db="etcd", bugs=("ack-when-sent",))


@pytest.mark.parametrize(("module", "command"), [
    ("kvcheck", "run"), ("kvcheck", "explore"), ("kvcheck.store", "serve")])
def test_bug_help_lists_one_bug_per_line_its_name_first(
        module: str, command: str, tmp_path: Path) -> None:
    listed = subprocess.run([sys.executable, "-m", module, command, "--bug", "help"],
                            capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert [line.split()[0] for line in listed.splitlines()] == list(BUGS)
    assert not list(tmp_path.iterdir())  # it lists them, and does nothing else


def test_a_node_refuses_to_start_with_an_unknown_bug(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "kvcheck.store", "serve", "--bug", "nope",
                           "--node-id", "n1", "--listen", "127.0.0.1:1", "--data-dir",
                           str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2
    assert "no such bug: nope" in done.stderr
