"""Faults that overlap, in real containers: hand-written schedules with one fault inside
another keep a strict-quorum store's guarantee, and leave nothing behind — also when SIGINT
comes while two faults are on."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from leftovers import leftovers
from polling import faults_on, wait_until

from kvcheck.checkers import read_history

pytestmark = pytest.mark.integration

STRICT = ["--nodes", "3", "--n", "3", "--w", "2", "--r", "2", "--no-sloppy-quorum",
          "--rate", "40", "--recovery-time", "3"]


def write_schedule(path: Path, *faults: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"format": "kvcheck-schedule", "version": 1,
                                "faults": list(faults)}))
    return path


def kvcheck(*args: str, histories: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kvcheck", "run", *STRICT, *args,
                           "--histories", str(histories)],
                          capture_output=True, text=True, timeout=300)


def nemesis_events(run_dir: Path) -> list[tuple[str, str]]:
    """The nemesis's completed events, in order: (f, fault)."""
    return [(op.f, op.value["fault"]) for op in read_history(run_dir / "history.jsonl")
            if op.process == "nemesis" and op.type == "info"]


def test_a_kill_inside_a_partition_keeps_the_guarantee(tmp_path: Path) -> None:
    schedule = write_schedule(
        tmp_path / "scenario.json",
        {"at": 2, "duration": 8, "kind": "partition", "targets": ["n1"],
         "components": [["n1"], ["n2", "n3"]]},
        {"at": 4, "duration": 3, "kind": "kill", "targets": ["n3"]})
    run = kvcheck("--time-limit", "12", "--schedule", str(schedule), "--seed", "5",
                  histories=tmp_path / "h")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    run_dir = (tmp_path / "h" / "latest").resolve()
    assert nemesis_events(run_dir) == [
        ("start-partition", "partition"), ("start-kill", "kill"), ("stop-kill", "kill"),
        ("stop-partition", "partition"), ("heal", "all")]
    recorded = json.loads((run_dir / "schedule.json").read_text())
    assert recorded["format"] == "kvcheck-schedule" and recorded["version"] == 1
    faults = {f["kind"]: f for f in recorded["faults"]}
    assert faults["partition"]["components"] == [["n1"], ["n2", "n3"]]
    assert faults["partition"]["at"] >= 2 and faults["kill"]["at"] >= 4  # never early
    assert faults["kill"]["at"] + faults["kill"]["duration"] \
        < faults["partition"]["at"] + faults["partition"]["duration"]
    test = json.loads((run_dir / "test.json").read_text())
    assert test["nemesis"] == ["partition", "kill"] and len(test["schedule"]) == 2
    assert leftovers(tmp_path / "h") == []


def test_a_clock_strobe_over_a_pause_keeps_the_guarantee(tmp_path: Path) -> None:
    schedule = write_schedule(
        tmp_path / "scenario.json",
        {"at": 1, "duration": 8, "kind": "clock", "targets": ["n2"],
         "strobe": {"delta_ms": 5000, "period_ms": 50}},
        {"at": 3, "duration": 3, "kind": "pause", "targets": ["n2"]})
    run = kvcheck("--time-limit", "11", "--schedule", str(schedule), "--seed", "6",
                  histories=tmp_path / "h")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    run_dir = (tmp_path / "h" / "latest").resolve()
    assert nemesis_events(run_dir) == [
        ("start-clock", "clock"), ("start-pause", "pause"), ("stop-pause", "pause"),
        ("stop-clock", "clock"), ("heal", "all")]
    assert leftovers(tmp_path / "h") == []


def test_sigint_during_two_overlapping_faults_leaves_nothing_behind(tmp_path: Path) -> None:
    schedule = write_schedule(
        tmp_path / "scenario.json",
        {"at": 1, "duration": 100, "kind": "partition", "targets": ["n1"],
         "components": [["n1"], ["n2", "n3"]]},
        {"at": 2, "duration": 100, "kind": "kill", "targets": ["n2"]})
    histories = tmp_path / "h"
    process = subprocess.Popen(
        [sys.executable, "-m", "kvcheck", "run", *STRICT, "--time-limit", "120", "--schedule",
         str(schedule), "--name", "interrupted", "--histories", str(histories)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        history = histories / "latest" / "history.jsonl"
        wait_until(lambda: {"partition", "kill"} <= faults_on(history), process, 120,
                   "the partition and the kill never were on together")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, out + err
    assert leftovers(histories) == []


def test_a_schedule_naming_a_node_the_test_lacks_is_refused(tmp_path: Path) -> None:
    schedule = write_schedule(tmp_path / "scenario.json",
                              {"at": 1, "duration": 2, "kind": "kill", "targets": ["n7"]})
    run = kvcheck("--time-limit", "5", "--schedule", str(schedule), histories=tmp_path / "h")
    assert run.returncode == 254
    assert "the kill fault at 1 s names n7, not a node of this test (its nodes are n1, n2, " \
           "n3)" in " ".join(run.stderr.split())
    assert not (tmp_path / "h").exists() or not any((tmp_path / "h").iterdir())
