"""``kvcheck run --db redis`` end to end, in real containers: Redis with Sentinel loses
acknowledged writes when a partition isolates its primary (asynchronous replication, as Redis's
own documentation says), and kvcheck must catch that — for that reason, not another."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from leftovers import leftovers

from kvcheck.checkers import read_history

pytestmark = pytest.mark.integration


def test_an_isolated_primary_loses_acknowledged_writes(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "kvcheck", "run", "--db", "redis", "--workload", "set",
         "--nodes", "3", "--time-limit", "25", "--rate", "60", "--nemesis", "partition",
         "--partition-topologies", "isolate-primary", "--nemesis-interval", "10",
         "--recovery-time", "2", "--seed", "5", "--histories", str(tmp_path)],
        capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    run_dir = (tmp_path / "latest").resolve()
    results = json.loads((run_dir / "results.json").read_text())
    lost_writes = results["checkers"]["lost-writes"]
    assert lost_writes["valid"] is False and lost_writes["anomaly_counts"]["lost"] > 0
    assert results["checkers"]["stats"]["valid"] is True  # clients were served throughout
    assert json.loads((run_dir / "final-state.json").read_text())["crashed_nodes"] == []
    # The primary was isolated, and the writes lost were acknowledged while it was.
    history = read_history(run_dir / "history.jsonl")
    (start,) = [op for op in history if op.f == "start-partition" and op.type == "info"]
    (stop,) = [op for op in history if op.f == "stop-partition" and op.type == "info"]
    assert start.value["topology"] == "isolate-primary"
    acknowledged = {op.index: op for op in history}
    lost = [a for a in lost_writes["anomalies"] if a["kind"] == "lost"]
    assert any(start.time <= acknowledged[a["ops"][1]].time <= stop.time for a in lost)
    assert leftovers(tmp_path) == []
