"""Automatic scaling: the decisions from load series, then a real Docker cluster that grows under
load and shrinks when idle."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from polling import wait_until

from kvcheck.harness.autoscale import Autoscaler, Policy, PolicyError
from kvcheck.harness.docker_cluster import RUN_LABEL
from kvcheck.harness.engine import connect
from kvcheck.store.client import StoreClient, StoreError

POLICY = Policy(minimum=3, maximum=5, above=100, below=20, sustain=3)


def decisions(loads: list[tuple[float, int]]) -> list[str | None]:
    scaler = Autoscaler(POLICY)
    return [getattr(scaler.observe(load, members), "action", None) for load, members in loads]


def test_a_node_is_added_only_after_the_load_stays_high_for_the_sustain_windows() -> None:
    assert decisions([(150, 3), (150, 3), (90, 3), (150, 3), (150, 3), (150, 3)]) == [
        None, None, None, None, None, "add"]


def test_a_decision_resets_the_streak_and_the_bounds_are_kept() -> None:
    assert decisions([(150, 3)] * 6) == [None, None, "add", None, None, "add"]
    assert decisions([(150, 5)] * 4) == [None] * 4  # at the maximum
    assert decisions([(5, 3)] * 4) == [None] * 4  # at the minimum
    assert decisions([(5, 4)] * 3) == [None, None, "remove"]
    assert decisions([(50, 2), (50, 6)]) == ["add", "remove"]  # outside the bounds at once


def test_each_decision_states_the_load_that_caused_it() -> None:
    scaler = Autoscaler(POLICY)
    for _ in range(2):
        assert scaler.observe(10.5, 4) is None
    decision = scaler.observe(12.25, 4)
    assert decision is not None
    assert (decision.action, decision.members, decision.load_per_node, decision.windows) == (
        "remove", 4, 12.25, 3)
    assert "below 20/s per node for 3 windows" in decision.reason


@pytest.mark.parametrize(("text", "message"), [
    ("3-6", "MIN..MAX"), ("6..3", "1 <= MIN <= MAX"), ("x..4", "MIN..MAX")])
def test_bad_ranges_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        Policy(*Policy.parse_range(text))


@pytest.mark.integration
def test_cluster_up_grows_under_load_shrinks_when_idle_and_tears_down_on_sigint(
        tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "kvcheck", "cluster", "up", "--nodes", "3", "--autoscale",
         "3..4", "--scale-up-above", "8", "--scale-down-below", "2", "--window", "1",
         "--sustain", "2", "--histories", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        cluster_file = wait_for_file(tmp_path, "cluster.json", process)
        run_id = cluster_file.parent.name
        host, port = json.loads(cluster_file.read_text())["nodes"]["n1"].split(":")
        log = cluster_file.parent / "autoscale.jsonl"
        trio.run(load_until, host, int(port), lambda: "add" in actions(log))
        wait_until(lambda: members(cluster_file) == ["n1", "n2", "n3", "n4"], process)
        wait_until(lambda: members(cluster_file) == ["n1", "n2", "n3"], process)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, out + err
    added, removed = [json.loads(line) for line in log.read_text().splitlines()][:2]
    assert (added["action"], added["node"], added["members"]) == ("add", "n4", 3)
    assert added["load_per_node"] > 8
    assert (removed["action"], removed["node"], removed["members"]) == ("remove", "n4", 4)
    assert removed["load_per_node"] < 2
    assert "4 members now: n1, n2, n3, n4" in out
    assert "3 members now: n1, n2, n3" in out
    n4_log = (cluster_file.parent / "nodes" / "n4" / "kvstore.log").read_text()
    assert "serving on" in n4_log
    client = connect()
    assert client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_id}"}) == []


def members(cluster_file: Path) -> list[str]:
    return sorted(json.loads(cluster_file.read_text())["nodes"])


def actions(log: Path) -> list[str]:
    if not log.exists():
        return []
    return [json.loads(line)["action"] for line in log.read_text().splitlines() if line]


def wait_for_file(root: Path, name: str, process: subprocess.Popen[str]) -> Path:
    wait_until(lambda: any(root.glob(f"clusters/*/{name}")), process)
    return next(root.glob(f"clusters/*/{name}"))


async def load_until(host: str, port: int, done: object) -> None:
    """About 50 puts a second through one node until ``done()``."""
    async with StoreClient(host, port) as client:
        i = 0
        while not done():  # type: ignore[operator]
            with contextlib.suppress(StoreError):
                await client.put(f"key-{i % 100}", b"value")
            i += 1
            await trio.sleep(0.02)  # pacing the load, not waiting for an event
