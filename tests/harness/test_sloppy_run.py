"""``kvcheck run`` with sloppy quorums (the store's default) through a partition, with real
containers: reads go stale while the halves are apart, and the replicas converge after the heal.

The run is planned by its seed: ``--seed 12`` with a ``--nemesis-interval`` of 8 s and a
``--time-limit`` of 16 s gives exactly one partition, into halves ({n1, n2} and {n3, n4, n5}),
starting about 4.6 s in and lasting 8 s (the nemesis's schedule depends on the seed alone).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

RUN = ["--nodes", "5", "--rate", "100", "--time-limit", "16", "--nemesis", "partition",
       "--nemesis-interval", "8", "--recovery-time", "10", "--sloppy-quorum", "--seed", "12",
       "--name", "sloppy"]


def test_a_sloppy_partition_run_reads_stale_then_converges_after_the_heal(tmp_path: Path) -> None:
    """What the design predicts for sloppy quorums, both halves of it.

    Stale reads: once each half has marked the other down (suspicion after 3 s of silence, then
    a second opinion — long before the 8 s partition ends), each half serves every key from
    sloppy quorums of its own nodes, two of which always exist (W = R = 2); every worker uses
    the same three keys, half reads, half writes, so reads in one half miss the writes
    acknowledged in the other. The count depends on timing; that there are some does not.

    Convergence: after the heal and 10 s of recovery every replica of every key holds the same
    versions (hints, late stamps, read repair and anti-entropy), and every final read agrees.
    Nothing here waits on a clock: the run's own recovery wait is the only delay.
    """
    run = subprocess.run([sys.executable, "-m", "kvcheck", "run", *RUN,
                          "--histories", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr  # eventual convergence held
    run_dir = (tmp_path / "latest").resolve()
    test = json.loads((run_dir / "test.json").read_text())
    assert test["guarantee"] == "eventual-convergence"
    history = [json.loads(line) for line in (run_dir / "history.jsonl").open()][1:]
    partitions = [op["value"] for op in history
                  if op["f"] == "start-partition" and op["type"] == "info"]
    assert [p["components"] for p in partitions] == [[["n1", "n2"], ["n3", "n4", "n5"]]]
    checkers = json.loads((run_dir / "results.json").read_text())["checkers"]
    stale = checkers["stale-reads"]
    assert stale["valid"] is True and stale["figures"]["enforced"] is False  # measured only
    assert stale["figures"]["stale_reads"] > 0
    convergence = checkers["convergence"]
    assert convergence["valid"] is True, convergence
    figures = convergence["figures"]
    assert figures["keys"] > 0 and figures["diverged_keys"] == figures["undecided_keys"] == 0
    assert figures["final_read_keys"] > 0 and figures["final_read_keys_disagreeing"] == 0
    for log in run_dir.glob("nodes/*/kvstore.log"):  # the partition stopped no store
        assert "Traceback" not in log.read_text(), log
