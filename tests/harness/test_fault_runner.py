"""The fault runner's timelines and combination rules, in virtual time (trio's MockClock), on a
backend that only records what it is asked to do. (Real containers: test_overlap_run.py.)"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import trio
import trio.testing

from kvcheck.harness.databases.kvstore import KvStore
from kvcheck.harness.faults import READY_WATCH_S, FaultRunner
from kvcheck.harness.history import HistoryWriter
from kvcheck.harness.virtual_time import run_virtual
from kvcheck.nemesis import Nemesis, PacketFault, PacketSupport, Planned
from kvcheck.nemesis.topology import Link

NODES = ["n1", "n2", "n3", "n4", "n5"]


class ReadyWhenHealed(KvStore):
    """The reference store as the recorder has it: a node is ready while no link is cut."""

    async def ready(self, node: str, cluster: Any) -> bool:
        return not cluster.cut_on


class Recorder:
    """A backend that does nothing but note each call (and the virtual time of it)."""

    def __init__(self) -> None:
        self.nodes = list(NODES)
        self.database = ReadyWhenHealed()
        self.calls: list[tuple[float, str, Any]] = []
        self.cut_on = False

    def _note(self, name: str, arg: Any = None) -> None:
        self.calls.append((trio.current_time(), name, arg))

    async def kill(self, node: str) -> None:
        self._note("kill", node)

    async def restart(self, node: str) -> None:
        self._note("restart", node)

    async def wait_ready(self, nodes: Sequence[str]) -> None:
        self._note("wait_ready", tuple(nodes))

    async def pause(self, node: str) -> None:
        self._note("pause", node)

    async def resume(self, node: str) -> None:
        self._note("resume", node)

    async def cut(self, links: frozenset[Link]) -> None:
        self._note("cut", links)
        self.cut_on = True

    async def heal(self, links: frozenset[Link] | None = None) -> None:
        self._note("heal", links)
        self.cut_on = False

    async def set_clock(self, offsets: Mapping[str, float]) -> None:
        self._note("set_clock", dict(offsets))

    def packet_support(self) -> PacketSupport:
        return PacketSupport(frozenset({"loss"}))

    async def packet_fault(self, fault: PacketFault) -> None:
        self._note("packet_fault", fault)

    async def clear_packets(self) -> None:
        self._note("clear_packets")

    async def join(self, node: str, via: str) -> None:
        self._note("join", node)

    async def fail_disks(self, nodes: Sequence[str], error: str) -> None:
        self._note("fail_disks", (tuple(nodes), error))

    async def heal_disks(self) -> None:
        self._note("heal_disks")

    async def cut_power(self, node: str) -> None:
        self._note("cut_power", node)

    async def leave(self, node: str) -> None:
        self._note("leave", node)


def run(tmp_path: Path, *, until: float = 60, mode: str = "overlap",
        kinds: Sequence[str] = ("partition", "kill"), seed: int = 1,
        schedule: Sequence[Planned] = ()) -> tuple[FaultRunner, Recorder]:
    backend = Recorder()
    history = HistoryWriter(tmp_path / f"history-{seed}-{mode}.jsonl")
    rng = random.Random(seed)
    nemesis = Nemesis(kinds, NODES, random.Random(rng.randrange(2**32)), hold=5,
                      packets=backend.packet_support(), spare="n6", replicas=3)
    runner = FaultRunner(backend, history, mode=mode, interval=5, rng=rng,  # type: ignore[arg-type]
                         nemesis=None if schedule else nemesis, schedule=schedule)

    async def main() -> None:
        await runner.run(trio.current_time() + until)
        await runner.stop_all()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    history.close()
    return runner, backend


def overlapping(faults: Sequence[Planned]) -> bool:
    return any(a.at < b.at < a.end or b.at < a.at < b.end
               for i, a in enumerate(faults) for b in faults[i + 1:])


def test_in_overlap_mode_each_kind_keeps_its_own_timeline(tmp_path: Path) -> None:
    runs = [run(tmp_path, seed=seed)[0].record for seed in range(1, 6)]
    for record in runs:
        assert {f.kind for f in record} == {"partition", "kill"}
        for kind in ("partition", "kill"):
            assert not overlapping([f for f in record if f.kind == kind])
    assert sum(overlapping(record) for record in runs) >= 3  # kinds overlap, as a rule
    assert run(tmp_path, seed=3)[0].record == runs[2]  # the same seed, the same schedule


def test_in_turns_mode_faults_never_overlap(tmp_path: Path) -> None:
    for seed in range(1, 6):
        record = run(tmp_path, mode="turns", seed=seed)[0].record
        assert len(record) >= 4 and not overlapping(record)
        assert [f.kind for f in record][:2] == ["partition", "kill"]  # in turn


def test_a_paused_node_that_is_killed_is_not_resumed(tmp_path: Path) -> None:
    runner, backend = run(tmp_path, schedule=(
        Planned(1, 10, "pause", ("n1", "n2")), Planned(3, 4, "kill", ("n2",))))
    kill = next(f for f in runner.record if f.kind == "kill")
    assert kill.params == {"was_paused": ["n2"]}
    assert [(name, arg) for _, name, arg in backend.calls if name in ("resume", "restart")] \
        == [("restart", "n2"), ("resume", "n1")]


def test_a_pause_leaves_out_killed_nodes(tmp_path: Path) -> None:
    runner, backend = run(tmp_path, schedule=(
        Planned(1, 10, "kill", ("n1",)), Planned(3, 2, "pause", ("n1", "n2"))))
    pause = next(f for f in runner.record if f.kind == "pause")
    assert pause.targets == ("n2",) and pause.params == {"left_out_killed": ["n1"]}
    assert [arg for _, name, arg in backend.calls if name == "pause"] == ["n2"]


def test_a_power_cut_leaves_out_killed_nodes_and_each_fault_restarts_only_its_own(
        tmp_path: Path) -> None:
    runner, backend = run(tmp_path, schedule=(
        Planned(1, 10, "kill", ("n1",)), Planned(3, 2, "power", ("n1", "n2", "n3"))))
    power = next(f for f in runner.record if f.kind == "power")
    assert power.targets == ("n2", "n3") and power.params == {"left_out_killed": ["n1"]}
    assert [(at, name, arg) for at, name, arg in backend.calls
            if name in ("kill", "cut_power", "restart")] == [
        (1, "kill", "n1"), (3, "cut_power", "n2"), (3, "cut_power", "n3"),
        (5, "restart", "n2"), (5, "restart", "n3"), (11, "restart", "n1")]


def readiness(runner: FaultRunner) -> list[tuple[str, dict[str, Any]]]:
    return [(op["f"], op["value"]) for op in map(json.loads, runner.history.path.open())
            if op.get("f") in ("ready", "unready")]


def test_a_node_restarted_inside_a_partition_is_not_waited_for_but_watched(
        tmp_path: Path) -> None:
    runner, backend = run(tmp_path, schedule=(
        Planned(1, 10, "partition", ("n1",), {"components": [["n1"], NODES[1:]]}),
        Planned(2, 3, "kill", ("n1",)), Planned(13, 2, "kill", ("n2",))))
    waits = [(at, arg) for at, name, arg in backend.calls if name == "wait_ready"]
    assert waits == [(15, ("n2",))]  # the second kill, with nothing else on
    [(event, value)] = readiness(runner)  # restarted at 5, ready at the heal at 11
    assert event == "ready" and value["nodes"] == ["n1"] and 6.0 <= value["after_s"] <= 6.1


def test_a_node_still_unready_when_the_watch_ends_is_recorded_so(tmp_path: Path) -> None:
    runner, _ = run(tmp_path, until=80, schedule=(
        Planned(1, 60, "partition", ("n1",), {"components": [["n1"], NODES[1:]]}),
        Planned(2, 3, "kill", ("n1",))))
    assert readiness(runner) == [("unready", {"nodes": ["n1"], "waited_s": READY_WATCH_S})]


def test_the_watch_ends_with_the_run(tmp_path: Path) -> None:
    runner, _ = run(tmp_path, until=10, schedule=(
        Planned(1, 60, "partition", ("n1",), {"components": [["n1"], NODES[1:]]}),
        Planned(2, 3, "kill", ("n1",))))
    assert readiness(runner) == []  # the final heal waits for every node instead


def test_membership_changes_do_not_overlap_other_faults(tmp_path: Path) -> None:
    runner, backend = run(tmp_path, schedule=(
        Planned(1, 5, "kill", ("n1",)),
        Planned(2, 5, "membership", ("n6",), {"change": "join", "via": "n2"}),
        Planned(8, 5, "membership", ("n6",), {"change": "join", "via": "n2"}),
        Planned(9, 2, "pause", ("n3",))))
    skipped = [(f.kind, f.at, f.skipped) for f in runner.record if f.skipped]
    assert skipped == [
        ("membership", 2, "a membership change needs every member reachable, and kill is on"),
        ("pause", 9, "a membership change is going on")]
    assert [arg for _, name, arg in backend.calls if name in ("join", "leave")] == ["n6", "n6"]
    events = (runner.history.path.read_text())
    assert '"f":"skip-membership"' in events and '"f":"skip-pause"' in events


def test_scheduled_faults_start_when_they_say(tmp_path: Path) -> None:
    runner, backend = run(tmp_path, until=20, schedule=(
        Planned(5, 4, "partition", ("n1",), {"components": [["n1"], NODES[1:]]}),
        Planned(30, 2, "kill", ("n2",))))
    assert [(at, name) for at, name, _ in backend.calls] == [(5, "cut"), (9, "heal")]
    assert [(f.kind, f.at, f.duration, f.skipped) for f in runner.record] == [
        ("kill", 30, 2, "it starts after the clients stop"), ("partition", 5, 4, "")]


def test_a_fault_that_ends_as_the_next_of_its_kind_starts_stops_first_whatever_the_order(
        tmp_path: Path) -> None:
    """Back to back (one's end is the next one's start): whichever task trio runs first, the
    first fault stops before the second starts, and each stops once."""
    schedule = [Planned(1, 2, "partition", ("n1",), {"components": [["n1"], ["n2", "n3"]]}),
                Planned(3, 2, "partition", ("n2",), {"components": [["n2"], ["n1", "n3"]]}),
                Planned(3, 1, "kill", ("n3",))]
    for order in range(8):  # trio's order of tasks woken together, eight ways
        backend = Recorder()
        history = HistoryWriter(tmp_path / f"history-{order}.jsonl")
        runner = FaultRunner(backend, history, mode="schedule",  # type: ignore[arg-type]
                             interval=5, rng=random.Random(1), schedule=schedule)

        async def main(runner: FaultRunner = runner) -> None:
            await runner.run(trio.current_time() + 10)
            await runner.stop_all()

        run_virtual(main, seed=order)
        history.close()
        partitions = [(f.at, f.duration) for f in runner.record if f.kind == "partition"]
        assert partitions == [(1, 2), (3, 2)]
        events = [c[1] for c in backend.calls if c[1] in ("cut", "heal")]
        assert events == ["cut", "heal", "cut", "heal"]


def test_a_zone_network_outage_and_a_partition_that_overlap_each_heal_their_own_cuts(
        tmp_path: Path) -> None:
    zone = Planned(1, 10, "zone", ("n1", "n2"), {
        "zone": "a", "outage": "network", "components": [["n1", "n2"], ["n3", "n4", "n5"]]})
    partition = Planned(3, 4, "partition", ("n5",), {"components": [["n5"], NODES[:4]]})
    _, backend = run(tmp_path, schedule=(zone, partition))
    cuts = [(at, name, arg) for at, name, arg in backend.calls if name in ("cut", "heal")]
    zone_links = {(a, b) for a in ("n1", "n2") for b in ("n3", "n4", "n5")}
    zone_links |= {(b, a) for a, b in zone_links}
    partition_links = {(a, b) for a in ("n5",) for b in NODES[:4]}
    partition_links |= {(b, a) for a, b in partition_links}
    assert cuts == [(1, "cut", zone_links), (3, "cut", partition_links),
                    (7, "heal", partition_links), (11, "heal", zone_links)]


def test_a_zone_power_outage_kills_its_zone_leaves_out_killed_nodes_and_restarts_its_own(
        tmp_path: Path) -> None:
    runner, backend = run(tmp_path, schedule=(
        Planned(1, 10, "kill", ("n1",)),
        Planned(3, 2, "zone", ("n1", "n3"), {"zone": "a", "outage": "power"}),
        Planned(6, 2, "pause", ("n3",))))
    zone = next(f for f in runner.record if f.kind == "zone")
    assert zone.targets == ("n3",) and zone.params["left_out_killed"] == ["n1"]
    assert [(at, name, arg) for at, name, arg in backend.calls
            if name in ("kill", "restart", "pause")] == [
        (1, "kill", "n1"), (3, "kill", "n3"), (5, "restart", "n3"), (6, "pause", "n3"),
        (11, "restart", "n1")]
