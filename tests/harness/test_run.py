"""``kvcheck run`` end to end, with real containers: verdicts, run directories, no leftovers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from leftovers import leftovers, run_ids
from polling import faults_on, wait_until

from kvcheck.harness.docker_cluster import RUN_LABEL
from kvcheck.harness.engine import connect

pytestmark = pytest.mark.integration

SHORT = ["--nodes", "3", "--rate", "40", "--time-limit", "12", "--nemesis-interval", "3",
         "--recovery-time", "3"]


def kvcheck(*args: str, histories: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kvcheck", *args, "--histories", str(histories)],
                          capture_output=True, text=True, timeout=timeout)


def assert_no_store_crashed(run_dir: Path) -> None:
    """No node's log shows a traceback: faults may stop a store, never crash it."""
    for log in run_dir.glob("nodes/*/kvstore.log"):
        assert "Traceback" not in log.read_text(), log


def results_of(run_dir: Path) -> dict[str, object]:
    results = json.loads((run_dir / "results.json").read_text())
    return {name: check["valid"] for name, check in results["checkers"].items()}


def test_a_partition_run_with_strict_quorums_keeps_its_guarantee(tmp_path: Path) -> None:
    run = kvcheck("run", *SHORT, "--nemesis", "partition", "--n", "3", "--w", "2", "--r", "2",
                  "--no-sloppy-quorum", "--name", "strict", "--seed", "7", histories=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    run_dir = (tmp_path / "latest").resolve()
    assert run_dir.parent == tmp_path / "strict"
    for name in ("test.json", "history.jsonl", "final-state.json", "results.json",
                 "report.html", "nodes/n1/kvstore.log"):
        assert (run_dir / name).exists(), name
    test = json.loads((run_dir / "test.json").read_text())
    assert (test["guarantee"], test["seed"]) == ("no-stale-reads", 7)
    assert results_of(run_dir)["stale-reads"] is True
    history = [json.loads(line) for line in (run_dir / "history.jsonl").open()][1:]
    assert any(op["f"] == "start-partition" and op["type"] == "info" for op in history)
    assert sum(op["type"] == "ok" for op in history) > 100
    assert "no-stale-reads" in run.stdout and "valid" in run.stdout
    assert_no_store_crashed(run_dir)
    assert leftovers(tmp_path) == []


def test_lww_under_clock_strobe_loses_acknowledged_set_adds(tmp_path: Path) -> None:
    run = kvcheck("run", *SHORT, "--workload", "set", "--versioning", "lww",
                  "--nemesis", "clock", "--name", "lww-canary", histories=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    assert results_of((tmp_path / "latest").resolve())["lost-writes"] is False
    assert leftovers(tmp_path) == []


def test_sigint_in_the_middle_of_a_partition_leaves_nothing_behind(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "kvcheck", "run", "--nodes", "3", "--time-limit", "120",
         "--nemesis", "partition", "--nemesis-interval", "2", "--name", "interrupted",
         "--histories", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        history = tmp_path / "latest" / "history.jsonl"
        wait_until(lambda: "partition" in faults_on(history), process, 120,
                   "no partition started")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, out + err
    assert "torn down" in err
    assert leftovers(tmp_path) == []
    assert not list(tmp_path.glob("interrupted/*/nodes/*/faketime"))


def test_members_leave_and_join_during_a_run_and_no_acknowledged_write_is_lost(
        tmp_path: Path) -> None:
    """Seed 3 draws a member leaving (and joining again) and spare n5 joining (and leaving)."""
    run = kvcheck("run", "--nodes", "4", "--rate", "60", "--time-limit", "14",
                  "--nemesis-interval", "3", "--recovery-time", "3", "--nemesis", "membership",
                  "--no-sloppy-quorum", "--name", "membership", "--seed", "3",
                  histories=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    run_dir = (tmp_path / "latest").resolve()
    history = [json.loads(line) for line in (run_dir / "history.jsonl").open()][1:]
    changes = [op["value"]["change"] for op in history
               if op["f"] == "start-membership" and op["type"] == "info"]
    assert {"leave", "join"} <= set(changes), changes
    assert all(results_of(run_dir).values())
    n5 = (run_dir / "nodes" / "n5" / "kvstore.log").read_text()
    assert "serving on" in n5
    assert_no_store_crashed(run_dir)
    assert leftovers(tmp_path) == []


def test_a_store_that_exits_by_itself_makes_the_run_invalid_and_is_named(
        tmp_path: Path) -> None:
    """A crash is a defect of the store, whatever the checkers say of the history: here the
    store of n2 is killed behind the harness's back, as if it had crashed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "kvcheck", "run", "--nodes", "3", "--rate", "40",
         "--time-limit", "10", "--recovery-time", "2", "--nemesis", "none", "--name", "crash",
         "--histories", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        history = tmp_path / "latest" / "history.jsonl"
        wait_until(lambda: history.exists() and history.read_text().count('"type":"ok"') > 20,
                   process, 120, "no operations")
        (run_id,) = run_ids(tmp_path)
        (n2,) = connect().containers.list(filters={"label": ["org.kvcheck.node=n2",
                                                             f"{RUN_LABEL}={run_id}"]})
        code, output = n2.exec_run(["sh", "-c", "kill -9 $(cat /kvcheck/kvstore.pid)"])
        assert code == 0, output
        out, err = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, out + err
    assert "the store crashed on n2" in err
    run_dir = history.resolve().parent
    assert json.loads((run_dir / "final-state.json").read_text())["crashed_nodes"] == ["n2"]
    assert leftovers(tmp_path) == []
