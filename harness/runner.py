"""Running one test: the single place that composes backend, clients, nemesis and checkers.

The run is one trio nursery: the client workers, the nemesis, the live view. At the time limit
the nemesis stops, everything is healed, and the harness waits until every node is ready and
the cluster has settled (as the database says); then it waits ``recovery_time`` while it samples
every replica's state, makes the final reads, writes the final state, and tears the cluster down
— also on error, Ctrl-C or SIGTERM (unless ``leave_running``). Then the checkers decide, from the
files on disk alone.

A run directory ``histories/<name>/<timestamp>/`` holds ``test.json``, ``history.jsonl``,
``final-state.json``, ``results.json``, ``report.html`` and each node's logs,
``nodes/<node>/<process>.log``; ``histories/latest`` points at the newest run. What is sampled
of each replica's state depends on the database (:attr:`Capability.REPLICA_STATE`).
"""

from __future__ import annotations

import json
import random
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypedDict

import trio

from kvcheck.harness.backend import Backend, execute
from kvcheck.harness.clients import OperationLimit, Worker, perform, run_worker
from kvcheck.harness.databases import Capability, Client, Operation, guard
from kvcheck.harness.directories import new_dir, point_latest
from kvcheck.harness.faults import FaultRunner
from kvcheck.harness.history import HistoryWriter
from kvcheck.harness.spec import TestSpec
from kvcheck.harness.workloads import make_workload
from kvcheck.nemesis import HEAL_ALL, Nemesis, parse_kinds, write_schedule

#: Process ids of the final readers start here (workers never get this far).
FINAL_PROCESS_BASE = 1_000_000
#: Seconds between two samples of every replica's state during the recovery wait: a sample
#: asks every node (in Docker, or over SSH); a simulated one reads the simulated disks, free.
SAMPLE_EVERY = {"docker": 2.0, "ssh": 2.0, "sim": 0.25}


#: What a node stores, as sampled: for each key ``{"versions": [...]}`` (or ``{"digest": ...}``).
_Stored = dict[str, Any]


class _Sample(TypedDict):
    """One sample of ``final-state.json`` (``docs/history-format.md``): ns since the history
    began, and what each node stores (None for a node that did not answer)."""

    time: int
    nodes: dict[str, _Stored | None]


class Interrupted(Exception):
    """The run was stopped by a signal; the cluster was torn down."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


@dataclass(slots=True)
class Progress:
    """What the live view shows."""

    phase: str = "starting"
    started: float = field(default_factory=time.monotonic)
    faults: list[str] = field(default_factory=list)
    history: HistoryWriter | None = None


def new_run_id() -> tuple[str, str]:
    """A UTC timestamp for a run's directory, and an id unique enough to name its containers
    (the timestamp, lower-cased, and a random suffix)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return stamp, f"{stamp.lower()}-{secrets.token_hex(2)}"


def new_run_dir(histories: Path, name: str) -> tuple[Path, str]:
    """Create ``histories/<name>/<timestamp>/`` and point ``histories/latest`` at it.

    Returns the directory and a run id unique enough to name containers.
    """
    stamp, run_id = new_run_id()
    run_dir = new_dir(histories / name / stamp)
    point_latest(histories, run_dir)
    return run_dir, run_id


class Runner:
    """Runs ``spec`` on ``backend``, writing into ``run_dir``."""

    def __init__(self, spec: TestSpec, backend: Backend, run_dir: Path,
                 progress: Progress | None = None) -> None:
        self.spec = spec
        self.backend = backend
        self.run_dir = run_dir
        self.progress = progress or Progress()
        self.database = backend.database
        self.rng = random.Random(spec.seed)
        self.workload = make_workload(spec.workload,
                                      cas=Capability.CAS in self.database.capabilities)
        self._signal: int | None = None
        #: Nodes whose store exited by itself during the run: a defect of the store.
        self.crashed: list[str] = []

    async def run(self, view: Callable[[Progress], Awaitable[None]] | None = None) -> None:
        """Set up, test, heal, recover, read, collect, tear down. Raises :class:`Interrupted`
        on SIGINT/SIGTERM and whatever the backend raises, after tearing down."""
        self._write_test({})
        history = HistoryWriter(self.run_dir / "history.jsonl", clock=trio.current_time)
        self.progress.history = history
        try:
            async with trio.open_nursery() as outer:
                outer.start_soon(self._watch_signals, outer.cancel_scope)
                if view is not None:
                    outer.start_soon(view, self.progress)
                await self._test(history)
                outer.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise _unwrap(group) from None
        finally:
            history.close()
            with trio.CancelScope(shield=True):
                if not self.spec.leave_running:
                    self.progress.phase = "tearing down"
                    await self.backend.teardown()
        if self._signal is not None:
            raise Interrupted(self._signal)

    def _write_test(self, extra: dict[str, Any]) -> None:
        """``test.json``: the spec, the run's id, and ``extra``."""
        test = {**self.spec.to_json(), "run_id": self.backend.run_id, **extra}
        (self.run_dir / "test.json").write_text(json.dumps(test, indent=2) + "\n")

    async def _watch_signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                self._signal = signum
                scope.cancel()
                return

    async def _test(self, history: HistoryWriter) -> None:
        spec = self.spec
        self.progress.phase = "starting the cluster"
        await self.backend.setup()
        if self.backend.notes:
            self._write_test({"notes": self.backend.notes})
        history.start_clock()
        self.progress.phase = "running"
        until = trio.current_time() + spec.time_limit
        faults = self._fault_runner(history)
        limit = OperationLimit(spec.operation_limit) if spec.operation_limit else None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(faults.run, until)
            nodes = self.backend.nodes
            for index in range(spec.workers):
                node = nodes[index % len(nodes)]
                nursery.start_soon(partial(
                    run_worker, Worker(index, node, spec.workers), self.workload,
                    partial(self._client, node), history, spec.rate / spec.workers, until,
                    random.Random(self.rng.randrange(2**32)), spec.op_timeout, limit))
        self.progress.phase = "healing"
        await self._heal(history, faults)
        write_schedule(self.run_dir / "schedule.json", faults.mode, faults.record)
        self.progress.phase = "recovering"
        samples = await self._recover(history)
        self.progress.phase = "final reads"
        await self._final_reads(history)
        if (sample := await self._sample(history)) is not None:
            samples.append(sample)
        await self._note_crashes()
        await self._write_final_state(samples)

    # -- the nemesis --

    def _fault_runner(self, history: HistoryWriter) -> FaultRunner:
        spec = self.spec
        rng = random.Random(self.rng.randrange(2**32))
        kinds = parse_kinds(",".join(spec.nemesis))
        nemesis = None if spec.schedule or not kinds else Nemesis(
            kinds, self.backend.nodes, random.Random(rng.randrange(2**32)),
            hold=spec.nemesis_interval, packets=self.backend.packet_support(),
            spare=spec.spare_node, replicas=spec.n, topologies=spec.partition_topologies,
            primaries=Capability.PRIMARY in self.database.capabilities,
            zones=spec.node_zones, outage=spec.zone_outage)
        mode = "schedule" if spec.schedule else spec.nemesis_mode
        return FaultRunner(self.backend, history, mode=mode,
                           interval=spec.nemesis_interval, rng=rng, nemesis=nemesis,
                           schedule=spec.schedule, shown=self.progress.faults)

    def _client(self, node: str) -> Client:
        with guard(f"client({node!r})"):
            return self.database.client(node, self.backend)

    async def _heal(self, history: HistoryWriter, faults: FaultRunner) -> None:
        """Stop the faults still on, then heal everything any fault could have done."""
        await faults.stop_all()
        history.record("nemesis", "invoke", "heal", value={"fault": "all"})
        for action in HEAL_ALL:
            await execute(self.backend, action)
        crashed = await self._note_crashes()
        for node in crashed:  # so that the recovery and the final reads can go on
            await self.backend.restart(node)
        # Every node ready, and the cluster settled again (a failover may still be going on).
        await self.backend.wait_ready([n for n in self.backend.members
                                       if n not in self.backend.down])
        history.record("nemesis", "info", "heal", value={"fault": "all"})

    # -- after the test --

    async def _note_crashes(self) -> list[str]:
        """Record stores that exited by themselves since the last look; return them."""
        crashed = await self.backend.crashed()
        self.crashed.extend(crashed)
        return crashed

    async def _recover(self, history: HistoryWriter) -> list[_Sample]:
        """Wait ``recovery_time``, sampling every replica's state as it converges."""
        samples = []
        end = trio.current_time() + self.spec.recovery_time
        every = SAMPLE_EVERY[self.spec.backend]
        while True:
            if (sample := await self._sample(history)) is not None:
                samples.append(sample)
            if trio.current_time() + every > end:
                await trio.sleep_until(end)
                return samples
            await trio.sleep(every)

    async def _sample(self, history: HistoryWriter) -> _Sample | None:
        """What every node stores of every key, if the database can say (else None)."""
        if Capability.REPLICA_STATE not in self.database.capabilities:
            return None
        keys = self.workload.used_keys()
        nodes: dict[str, _Stored | None] = {}

        async def one(node: str) -> None:
            with guard(f"replica_state({node!r})"):
                nodes[node] = await self.database.replica_state(node, keys, self.backend)

        at = int(history.elapsed() * 1e9)
        async with trio.open_nursery() as nursery:
            for node in self.backend.nodes:
                nursery.start_soon(one, node)
        return {"time": at, "nodes": dict(sorted(nodes.items()))}

    async def _final_reads(self, history: HistoryWriter) -> None:
        """Read every key through every node, recorded with ``"final": true``."""

        async def read_through(index: int, node: str) -> None:
            client = self._client(node)
            try:
                for key in self.workload.used_keys():
                    await perform(client, Operation("read", key), history,
                                  FINAL_PROCESS_BASE + index, node, self.spec.op_timeout,
                                  final=True)
            finally:
                with trio.CancelScope(shield=True):
                    await client.close()

        async with trio.open_nursery() as nursery:
            for index, node in enumerate(self.backend.nodes):
                nursery.start_soon(read_through, index, node)

    async def _write_final_state(self, samples: list[_Sample]) -> None:
        """``final-state.json``: the samples, each key's replicas as the database names them
        (where it can report replica states), and the nodes that crashed."""
        replicas: dict[str, list[str]] = {}
        if Capability.REPLICA_STATE in self.database.capabilities:
            with guard("replicas()"):
                replicas = await self.database.replicas(self.workload.used_keys(), self.backend)
        state = {"format": "kvcheck-final-state", "version": 1, "samples": samples,
                 "replicas": replicas, "crashed_nodes": self.crashed}
        (self.run_dir / "final-state.json").write_text(json.dumps(state) + "\n")


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """A nursery's group of errors of one type (one error, or the same failure in several
    tasks, e.g. every client worker) as its first, so callers can catch it by type."""
    leaves: list[BaseException] = []

    def collect(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                collect(inner)
        else:
            leaves.append(error)

    collect(group)
    return leaves[0] if len({type(leaf) for leaf in leaves}) == 1 else group
