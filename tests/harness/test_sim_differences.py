"""Where the simulator and the cluster in Docker disagree (docs/sim.md), the same scenario run on
both, each side's behaviour asserted.

A cut shorter than the server's TCP_USER_TIMEOUT (2 s): in Docker the kernel keeps what the
coordinator sent across the cut and retransmits it, so a write that needs the cut-off replica
is acknowledged once the cut heals; the simulator drops what crosses a cut from the first
message on, so the same write times out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvcheck.checkers import Op, read_history
from kvcheck.harness.cli import main

#: W = N: every write needs n3, which is cut off for 1 s; the coordinator waits up to 5 s.
SCENARIO = ["--nodes", "3", "--n", "3", "--w", "3", "--r", "1", "--no-sloppy-quorum",
            "--workload", "register", "--concurrency", "1", "--rate", "20", "--time-limit", "8",
            "--recovery-time", "2", "--request-timeout-ms", "5000", "--op-timeout", "10",
            "--seed", "1"]
CUT = {"at": 2, "duration": 1, "kind": "partition", "targets": ["n3"],
       "components": [["n3"], ["n1", "n2"]]}


def writes_across_the_cut(tmp_path: Path, backend: str) -> tuple[float, list[tuple[Op, Op]]]:
    """Run the scenario; return when the heal began, and (invocation, completion) of each
    write invoked from the cut's start to then."""
    schedule = tmp_path / "cut.json"
    schedule.write_text(json.dumps({"format": "kvcheck-schedule", "version": 1,
                                    "faults": [CUT]}))
    main(["run", "--backend", backend, *SCENARIO, "--schedule", str(schedule),
          "--histories", str(tmp_path / "h")])
    history = read_history((tmp_path / "h" / "latest").resolve() / "history.jsonl")
    cut = next(op.time for op in history if op.f == "start-partition" and op.type == "invoke")
    heal = next(op.time for op in history if op.f == "stop-partition" and op.type == "invoke")
    invoked = {op.process: op for op in history
               if op.type == "invoke" and op.f == "write" and cut < op.time < heal}
    return heal, [(invoked.pop(op.process), op) for op in history
                  if op.type != "invoke" and op.process in invoked
                  and op.index > invoked[op.process].index]


@pytest.mark.integration
def test_in_docker_a_write_across_a_short_cut_is_acknowledged_once_the_cut_heals(
        tmp_path: Path) -> None:
    heal, across = writes_across_the_cut(tmp_path, "docker")
    assert [done.type for _, done in across] == ["ok"] * len(across)
    assert any(done.time > heal for _, done in across)  # held across the cut, then delivered


def test_in_the_simulator_a_write_across_a_short_cut_times_out(tmp_path: Path) -> None:
    _, across = writes_across_the_cut(tmp_path, "sim")
    assert across
    for _, done in across:
        assert done.type in ("fail", "info") and done.error.startswith("write timed out")
