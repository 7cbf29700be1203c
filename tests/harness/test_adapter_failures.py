"""An adapter that raises stops the run with a clear error naming it and the node, the cluster is
torn down, and ``kvcheck run`` exits 255 (real containers; nodes that only sleep)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from leftovers import leftovers

pytestmark = pytest.mark.integration
HERE = Path(__file__).parent


def run(db: str, histories: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kvcheck", "run", "--db", f"sample_databases:{db}", "--nodes", "2",
         "--time-limit", "3", "--rate", "20", "--nemesis", "none", "--recovery-time", "0",
         "--histories", str(histories)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(HERE)})


@pytest.mark.parametrize(("db", "message"), [
    ("ReadyRaises", "the adapter of --db sample_databases:ReadyRaises failed: ready('n1') "
                    "raised RuntimeError: cannot tell whether n1 is ready. The cluster was torn "
                    "down."),
    ("ClientRaises", "the adapter of --db sample_databases:ClientRaises failed: the client of "
                     "n"),
    ("ClientFactoryRaises", "the adapter of --db sample_databases:ClientFactoryRaises failed: "
                            "client('n"),
])
def test_an_adapter_that_raises_is_named_and_nothing_is_left(db: str, message: str,
                                                             tmp_path: Path) -> None:
    result = run(db, tmp_path)
    assert result.returncode == 255, result.stdout + result.stderr
    assert message in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr
    assert leftovers(tmp_path) == []


def test_a_node_whose_program_exits_stops_the_run_at_once_with_its_log(tmp_path: Path) -> None:
    result = run("ExitsAtOnce", tmp_path)
    assert result.returncode == 255, result.stdout + result.stderr
    # said by the start-up watch, not by the readiness deadline
    assert "a process of n1, n2 exited while it was starting" in result.stderr
    assert "unknown flag --frobnicate" in result.stderr  # the node's log says why
    assert leftovers(tmp_path) == []


def test_a_run_in_which_every_request_failed_is_not_valid(tmp_path: Path) -> None:
    """No vacuous pass: nothing succeeded, so nothing could have been stale or
    non-linearizable — stats objects, and the other checkers say they could not judge."""
    result = run("Refuses", tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    results = json.loads(((tmp_path / "latest").resolve() / "results.json").read_text())
    verdicts = {name: check["valid"] for name, check in results["checkers"].items()}
    assert verdicts == {"stats": False, "stale-reads": "unknown", "linearizable": "unknown"}
    stats = results["checkers"]["stats"]
    assert stats["anomaly_counts"] == {"never-succeeded": 2}  # reads and writes
    assert "rests on" in result.stdout and "no read could have been stale" in result.stdout
    assert leftovers(tmp_path) == []
