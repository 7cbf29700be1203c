"""``kvcheck run --db etcd`` end to end, in real containers: a correct system comes out valid
under partitions, kills and pauses, with every checker that can judge it; clock faults, which
cannot reach etcd, are refused before anything starts. (The known-unsafe serializable-read
canary, which needs longer runs, is in suites/nightly.toml.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from leftovers import leftovers

from kvcheck.checkers import read_history

pytestmark = pytest.mark.integration


def kvcheck(*args: str, histories: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kvcheck", "run", "--db", "etcd", *args,
                           "--histories", str(histories)],
                          capture_output=True, text=True, timeout=600)


def test_etcd_is_linearizable_under_partitions_kills_and_pauses(tmp_path: Path) -> None:
    run = kvcheck("--nodes", "3", "--time-limit", "20", "--rate", "60", "--nemesis",
                  "partition,kill,pause", "--nemesis-interval", "4", "--recovery-time", "2",
                  "--seed", "11", histories=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    run_dir = (tmp_path / "latest").resolve()
    results = json.loads((run_dir / "results.json").read_text())
    checkers = results["checkers"]
    assert set(checkers) == {"stats", "stale-reads", "convergence", "linearizable"}
    assert all(c["valid"] is True for c in checkers.values())
    assert checkers["linearizable"]["figures"]["calls"] > 300
    history = read_history(run_dir / "history.jsonl")
    assert any(op.f == "cas" and op.type == "ok" for op in history)
    faults = {op.f for op in history if op.process == "nemesis" and op.f.startswith("start-")}
    assert len(faults) >= 2, faults  # the faults really overlapped the load
    assert (run_dir / "nodes" / "n1" / "etcd.log").stat().st_size > 0
    assert leftovers(tmp_path) == []


def test_clock_faults_are_refused_for_etcd(tmp_path: Path) -> None:
    run = kvcheck("--nemesis", "partition,clock", histories=tmp_path)
    assert run.returncode == 254
    assert "--nemesis clock is not supported for --db etcd: libfaketime cannot move etcd's " \
           "clock" in " ".join(run.stderr.split())
    assert not any(tmp_path.iterdir())  # refused before anything started


def test_serializable_reads_are_caught_stale_under_a_partition(tmp_path: Path) -> None:
    """The known-unsafe configuration: a member cut off from the leader answers serializable
    reads from its own store. Caught by the stale-reads checker, for that reason."""
    # Many workers with a short timeout, so that those of the cut-off member, whose writes
    # hang, still read often while the partition lasts; judged on stale reads alone (the
    # linearizability checker's search over so many concurrent clients is long, and adds
    # nothing to what this canary shows).
    run = kvcheck("--db-opt", "reads=serializable", "--nodes", "3", "--time-limit", "25",
                  "--concurrency", "6n", "--op-timeout", "0.5", "--expect", "no-stale-reads",
                  "--rate", "120", "--nemesis", "partition", "--partition-topologies",
                  "isolate-one", "--nemesis-interval", "8", "--recovery-time", "2",
                  "--seed", "3", histories=tmp_path)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    run_dir = (tmp_path / "latest").resolve()
    results = json.loads((run_dir / "results.json").read_text())
    stale = results["checkers"]["stale-reads"]
    assert stale["valid"] is False and stale["anomaly_counts"] == {
        "stale-read": stale["figures"]["stale_reads"]}
    history = read_history(run_dir / "history.jsonl")
    by_index = {op.index: op for op in history}
    isolated = {node for op in history if op.f == "start-partition" and op.type == "info"
                for group in op.value["components"] if len(group) == 1 for node in group}
    # every stale read was served by a member the partition had cut off
    assert {by_index[a["ops"][-1]].node for a in stale["anomalies"]} <= isolated
    assert leftovers(tmp_path) == []
