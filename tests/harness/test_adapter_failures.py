"""An adapter that raises stops the run with a clear error naming it and the node, the cluster is
torn down, and ``kvcheck run`` exits 255 (real containers; nodes that only sleep)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
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
    started = time.monotonic()
    result = run("ExitsAtOnce", tmp_path)
    assert result.returncode == 255, result.stdout + result.stderr
    assert "a process of n1, n2 exited while it was starting" in result.stderr
    assert "unknown flag --frobnicate" in result.stderr  # the node's log says why
    assert time.monotonic() - started < 50  # not the 60 s a node has to become ready
    assert leftovers(tmp_path) == []
