"""``kvcheck run --backend sim``: whole tests of the reference store in virtual time, through the
same runner as in Docker — every fault kind, the same run directory, the same verdicts — and the
same history, byte for byte, from the same seed in any process."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from kvcheck.checkers import check_run
from kvcheck.harness.cli import main
from kvcheck.harness.exitcodes import Exit

#: Every kind but disk: a full disk breaks the correct store's no-stale-reads (docs/sim.md).
FAULT_KINDS = ("partition", "kill", "pause", "clock", "packet", "membership", "power")


def sim_run(histories: Path, *argv: str) -> tuple[int, Path]:
    """Run ``kvcheck run --backend sim`` in this process; return its exit code and run dir."""
    code = main(["run", "--backend", "sim", "--histories", str(histories), *argv])
    return code, (histories / "latest").resolve()


def lines(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()
            [1:]]


def test_a_simulated_run_undergoes_every_fault_kind_and_strict_quorums_come_out_valid(
        tmp_path: Path) -> None:
    code, run_dir = sim_run(
        tmp_path, "--nodes", "5", "--time-limit", "80", "--nemesis", ",".join(FAULT_KINDS),
        "--nemesis-mode", "turns", "--nemesis-interval", "4", "--recovery-time", "5",
        "--seed", "5")
    assert code == Exit.OK
    for name in ("test.json", "history.jsonl", "schedule.json", "final-state.json",
                 "results.json", "report.html"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "test.json").read_text())["backend"] == "sim"
    ops = lines(run_dir)
    started = {op["f"].removeprefix("start-") for op in ops
               if op["process"] == "nemesis" and op["f"].startswith("start-")}
    assert started == set(FAULT_KINDS)
    completions = Counter((op["f"], op["type"]) for op in ops if op["process"] != "nemesis")
    assert completions["read", "ok"] > 100 and completions["write", "ok"] > 100
    errors = Counter(op.get("error") for op in ops if op["type"] in ("fail", "info")
                     and op["process"] != "nemesis")
    assert errors["connection refused"] > 0  # clients of a killed node
    assert any(e and e.startswith(("read timed out", "write timed out")) for e in errors)
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["checkers"]) >= {"stale-reads", "convergence"}
    assert (run_dir / "nodes" / "n6" / "kvstore.log").read_text().count("joining") >= 1


@pytest.mark.parametrize("seed", range(1, 9))
def test_a_sweep_of_the_correct_store_under_overlapping_faults_is_valid_on_every_seed(
        tmp_path: Path, seed: int) -> None:
    """Strict quorums with W + R > N keep their promise whatever the faults, on every seed;
    the register and set workloads in turn."""
    code, _ = sim_run(tmp_path, "--nodes", "5", "--time-limit", "30",
                      "--workload", ("register", "set")[seed % 2],
                      "--nemesis", ",".join(FAULT_KINDS), "--nemesis-interval", "4",
                      "--recovery-time", "5", "--seed", str(seed))
    assert code == Exit.OK


def test_an_operation_limit_caps_what_the_workers_issue_and_the_faults_go_on(
        tmp_path: Path) -> None:
    code, run_dir = sim_run(tmp_path, "--nodes", "3", "--time-limit", "20",
                            "--operation-limit", "40", "--nemesis", "kill",
                            "--nemesis-interval", "3", "--seed", "4")
    assert code == Exit.OK
    ops = lines(run_dir)
    assert sum(op["type"] == "invoke" and op["process"] != "nemesis" and not op.get("final")
               for op in ops) == 40
    assert max(op["time"] for op in ops if op["f"] == "start-kill") > 10e9  # after the clients
    assert json.loads((run_dir / "test.json").read_text())["operation_limit"] == 40


def test_the_verdict_read_back_from_disk_is_the_one_printed(tmp_path: Path) -> None:
    code, run_dir = sim_run(tmp_path, "--nodes", "3", "--time-limit", "10", "--seed", "2")
    assert code == Exit.of(check_run(run_dir).valid)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_read_quorum_that_misses_the_write_quorum_is_caught_reading_stale_values(
        tmp_path: Path, seed: int) -> None:
    """W + R <= N promises no more than convergence; judged for no stale reads, partitions
    show the reads that missed an acknowledged write."""
    code, run_dir = sim_run(
        tmp_path, "--nodes", "5", "--w", "1", "--r", "1", "--time-limit", "60",
        "--nemesis", "partition", "--nemesis-interval", "5", "--expect", "no-stale-reads",
        "--seed", str(seed))
    assert code == Exit.INVALID
    results = json.loads((run_dir / "results.json").read_text())
    stale = results["checkers"]["stale-reads"]
    assert stale["valid"] is False
    assert {a["kind"] for a in stale["anomalies"]} == {"stale-read"}


@pytest.mark.parametrize("seed", [1, 3])
def test_last_write_wins_under_strict_quorums_and_partitions_reads_nothing_stale(
        tmp_path: Path, seed: int) -> None:
    """Last-write-wins forgets the versions it drops, dots and all, so a node can stamp a dot
    again: replicas holding the two versions of one dot must still agree (they once did not,
    and diverged for good on these seeds)."""
    code, _ = sim_run(tmp_path, "--nodes", "5", "--versioning", "lww", "--time-limit", "60",
                      "--nemesis", "partition", "--nemesis-interval", "5", "--seed", str(seed))
    assert code == Exit.OK


REPLAY = ["run", "--backend", "sim", "--nodes", "5", "--time-limit", "20",
          "--nemesis", ",".join(FAULT_KINDS), "--nemesis-interval", "3", "--recovery-time", "3"]


def replay(tmp_path: Path, name: str, hash_seed: str, seed: int) -> str:
    """The sha-256 of the history of a simulated run in a new process."""
    histories = tmp_path / name
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    subprocess.run([sys.executable, "-m", "kvcheck", *REPLAY, "--seed", str(seed),
                    "--histories", str(histories)], env=env, check=False,
                   capture_output=True, timeout=300)
    history = (histories / "latest" / "history.jsonl").read_bytes()
    return hashlib.sha256(history).hexdigest()


def test_the_same_seed_gives_the_same_history_byte_for_byte_in_any_process(
        tmp_path: Path) -> None:
    """Strings hash differently in each process (PYTHONHASHSEED): no order of a set or dict
    of them, no wall clock and no scheduling accident may reach the history."""
    first = replay(tmp_path, "a", "1", seed=9)
    assert replay(tmp_path, "b", "2", seed=9) == first
    assert replay(tmp_path, "c", "3", seed=10) != first


def test_failing_disks_refuse_writes_stop_a_node_whose_sync_fails_and_lose_no_acknowledged_write(
        tmp_path: Path) -> None:
    schedule = tmp_path / "disks.json"
    schedule.write_text(json.dumps({"format": "kvcheck-schedule", "version": 1, "faults": [
        {"at": 2, "duration": 4, "kind": "disk", "targets": ["n1"], "error": "write"},
        {"at": 8, "duration": 4, "kind": "disk", "targets": ["n2"], "error": "read"},
        {"at": 14, "duration": 4, "kind": "disk", "targets": ["n3"], "error": "fsync"}]}))
    code, run_dir = sim_run(tmp_path, "--nodes", "3", "--w", "3", "--r", "3", "--time-limit",
                            "20", "--workload", "set", "--schedule", str(schedule), "--seed", "1")
    assert code == Exit.OK  # with R = N every read meets every replica: nothing stale
    ops = [op for op in lines(run_dir) if op["process"] != "nemesis" and op["type"] != "invoke"]

    def outcomes(f: str, start: float, end: float) -> Counter[str]:
        return Counter(op["type"] for op in ops if op["f"] == f and start < op["time"] / 1e9 < end)

    # W = R = 3: a replica that cannot write, or read, fails every write, or read.
    for f, start, end in (("add", 2.5, 5.9), ("read", 8.5, 11.9)):
        seen = outcomes(f, start, end)
        assert seen["ok"] == 0 < seen.total()
    assert outcomes("add", 6.5, 7.9)["ok"] > 0
    log = (run_dir / "nodes" / "n3" / "kvstore.log").read_text()
    assert "stopped: commit log sync failed" in log
    assert "restarted after its disk was healed" in log
    results = json.loads((run_dir / "results.json").read_text())["checkers"]
    figures = results["lost-writes"]["figures"]
    assert figures["lost"] == 0 < figures["acknowledged"]


DISKS = ["--nodes", "5", "--time-limit", "30", "--nemesis", "disk,kill,power,partition",
         "--nemesis-interval", "4", "--recovery-time", "5"]


@pytest.mark.parametrize("seed", range(1, 7))
def test_with_blocking_read_repair_strict_quorums_keep_their_promise_when_disks_fail(
        tmp_path: Path, seed: int) -> None:
    code, _ = sim_run(tmp_path, *DISKS, "--read-repair", "blocking", "--seed", str(seed),
                      "--workload", ("register", "set")[seed % 2])
    assert code == Exit.OK


def test_async_read_repair_lets_a_read_miss_what_an_earlier_one_returned_so_it_promises_less(
        tmp_path: Path) -> None:
    """A read returns a failed write's element from the one replica that stored it; the
    replicas whose disks are full cannot take the repair (or lose it with their power), and a
    later quorum read of those misses it. So with async read repair a test expects only
    eventual convergence, and measures the stale reads; blocking read repair fails such a read
    instead (the same runs, above)."""
    code, run_dir = sim_run(tmp_path, *DISKS, "--read-repair", "async", "--seed", "5",
                            "--workload", "set")
    assert code == Exit.OK
    assert json.loads((run_dir / "test.json").read_text())["guarantee"] == "eventual-convergence"
    figures = json.loads((run_dir / "results.json").read_text())["checkers"]["lost-writes"][
        "figures"]
    assert figures["stale"] > 0 and figures["lost"] == 0


@pytest.mark.parametrize(("argv", "words"), [
    (["--db", "etcd"], "runs the reference store only"),
    (["--leave-running"], "--leave-running needs --backend docker"),
    (["--backend", "docker", "--nemesis", "power"], "--nemesis power needs --backend sim"),
])
def test_what_the_simulator_cannot_run_is_refused_with_the_option_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], words: str) -> None:
    code, _ = sim_run(tmp_path, *argv)
    assert code == Exit.USAGE
    assert words in capsys.readouterr().err
    assert not (tmp_path / "latest").exists()
