"""Testing the tester: each deliberate mistake of the reference store (``--bug``) makes a
simulated run invalid, for that mistake's reason — the anomaly its part of the design causes —
while the same runs of the correct store are valid (tests/harness/test_sim_run.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kvcheck.harness.cli import main
from kvcheck.harness.exitcodes import Exit
from kvcheck.harness.spec import SpecError, TestSpec
from kvcheck.store.bugs import BUGS

#: Each bug: the workload that shows it, the checker that must catch it, and the anomaly.
CAUGHT_BY = {
    "count-own-read-twice": ("register", "stale-reads", "stale-read"),
    "ack-when-sent": ("register", "stale-reads", "stale-read"),
    "merge-keeps-newest": ("set", "lost-writes", "lost"),
}


def test_every_bug_has_a_test_that_catches_it() -> None:
    assert set(CAUGHT_BY) == set(BUGS)


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("bug", sorted(CAUGHT_BY))
def test_a_simulated_run_of_a_store_with_a_bug_is_invalid_for_the_bugs_reason(
        tmp_path: Path, bug: str, seed: int) -> None:
    workload, checker, kind = CAUGHT_BY[bug]
    code = main(["run", "--backend", "sim", "--bug", bug, "--workload", workload,
                 "--nodes", "5", "--time-limit", "60", "--nemesis", "partition",
                 "--nemesis-interval", "5", "--seed", str(seed), "--histories", str(tmp_path)])
    assert code == Exit.INVALID
    run_dir = (tmp_path / "latest").resolve()
    assert json.loads((run_dir / "test.json").read_text())["bugs"] == [bug]
    results = json.loads((run_dir / "results.json").read_text())["checkers"]
    invalid = {name for name, result in results.items() if result["valid"] is False}
    assert invalid == {checker}
    assert kind in {a["kind"] for a in results[checker]["anomalies"]}


def test_bugs_reach_every_node_as_flags_and_unknown_ones_are_refused() -> None:
    spec = TestSpec(bugs=("ack-when-sent",))
    assert "--bug=ack-when-sent" in spec.store_flags()
    with pytest.raises(SpecError, match="no such bug: nope"):
        TestSpec(bugs=("nope",))
    with pytest.raises(SpecError, match="reference store"):
        TestSpec(db="etcd", bugs=("ack-when-sent",))


@pytest.mark.parametrize("command", [["kvcheck", "run"], ["kvstore", "serve"]])
def test_bug_help_lists_one_bug_per_line_its_name_first(command: list[str]) -> None:
    module = "kvcheck" if command[0] == "kvcheck" else "kvcheck.store"
    listed = subprocess.run([sys.executable, "-m", module, command[1], "--bug", "help"],
                            capture_output=True, text=True, check=True).stdout
    assert [line.split()[0] for line in listed.splitlines()] == list(BUGS)


def test_a_node_refuses_to_start_with_an_unknown_bug(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "kvcheck.store", "serve", "--bug", "nope",
                           "--node-id", "n1", "--listen", "127.0.0.1:1", "--data-dir",
                           str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2
    assert "no such bug: nope" in done.stderr
