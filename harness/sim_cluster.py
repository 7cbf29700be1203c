"""The simulation backend: the reference store's nodes in this process, in virtual time.

A :class:`SimCluster` holds a :class:`~kvcheck.store.sim.Simulation` of the test's nodes — the
same node logic the server runs, over a simulated network — and is to the runner what the
Docker backend is: it starts and stops nodes, makes every fault, and is the database's view of
the cluster. The run itself goes through the same :class:`~kvcheck.harness.runner.Runner`, in
trio's virtual time (:mod:`kvcheck.harness.virtual_time`): one system task moves the simulation
on to trio's clock, waking at the simulation's next event or when a client or a fault adds one.

Clients speak to a node as they would over HTTP, without the socket: :class:`SimStoreClient`
is the store's own HTTP client with its transport replaced by the node's request handling
(``kv_event`` turns the request into the node's event, as the server's routes do; the node's
answer becomes the reply the server would send). So the harness's client code, its error
words and its timeout rule are those of a Docker run. A killed node refuses connections (its
requests in flight end as a broken connection); a paused one accepts them and does not answer.

How each fault is made: a partition cuts the simulated links (dropped silently); kill and
restart crash the node's logic and boot it again on its disk (a zone's outage: its nodes' links
to the other zones cut, or its nodes killed); pause defers everything it receives until it is
resumed; clock faults set its wall-clock offset; packet faults degrade its outgoing links as TCP
shows them (:class:`~kvcheck.store.sim.Degradation`); links between zones always carry
``--zone-latency-ms`` more; a node joins on an empty disk and leaves as the store decommissions,
then stops. ``docs/sim.md`` says where this differs from the cluster in containers.
"""

from __future__ import annotations

import errno
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import trio
import trio.testing

from kvcheck.harness.backend import BackendError
from kvcheck.harness.databases import Cluster, Database, DatabaseError
from kvcheck.harness.databases.kvstore import LEAVE_LIMIT, KvStore, KvStoreClient
from kvcheck.harness.pbs import write_latencies
from kvcheck.harness.spec import TestSpec
from kvcheck.harness.virtual_time import jump_to
from kvcheck.nemesis import PacketFault, PacketSupport
from kvcheck.nemesis.topology import Link
from kvcheck.store.client import Applied, ConnectionFailed, StoreClient
from kvcheck.store.config import ClusterConfig
from kvcheck.store.node import Failed, Response
from kvcheck.store.ring import Ring
from kvcheck.store.server import views
from kvcheck.store.server.http_connection import Reply
from kvcheck.store.server.routes import kv_event
from kvcheck.store.sim import Degradation, Simulation

#: Virtual seconds nodes may take to become ready before the run stops.
READY_LIMIT = 60.0


class _Waiter:
    """A client request waiting for its node's answer (None: the connection broke)."""

    __slots__ = ("done", "node", "response")

    def __init__(self, node: str) -> None:
        self.node = node
        self.done = trio.Event()
        self.response: Response | None = None


class SimCluster:
    """The nodes of one simulated run of ``spec`` (module docstring)."""

    def __init__(self, spec: TestSpec, run_id: str, run_dir: Path) -> None:
        if spec.db != "kvstore":
            raise BackendError("the simulator runs the reference store only (--db kvstore)")
        self.spec = spec
        self.run_id = run_id
        self.secret = ""  # simulated nodes exchange messages, not connections: nothing to prove
        self.run_dir = run_dir
        self.database: Database = SimKvStore()
        self.options: Mapping[str, str] = dict(spec.db_options)
        self.nodes = list(spec.node_ids)
        #: Nodes that joined after setup and have not left.
        self.joined: list[str] = []
        self.config = ClusterConfig(**spec.store_settings())
        self.sim = Simulation(self.nodes, self.config, seed=spec.seed, trace=False,
                              answered=self._answered, zones=spec.node_zones,
                              weights={n: spec.weight(n) for n in self.nodes},
                              zone_delay=spec.zone_latency_ms / 1000)
        self._down: set[str] = set()
        self._waiting: dict[int, _Waiter] = {}
        self._reported = 0  # failures of the node logic already reported as crashes
        self._noted = 0  # failures of the node logic already noted in the node's log
        self._halts_noted = 0  # nodes stopped by a failed sync, already noted
        self._answers: deque[tuple[float, int, Response]] = deque()  # in time order
        self._wake: trio.CancelScope | None = None
        self._driver = trio.CancelScope()
        self._log: dict[str, list[str]] = {}
        self.notes: list[str] = []  # the simulator does all it is asked

    # -- the cluster, as the database sees it --

    @property
    def members(self) -> list[str]:
        return [*self.nodes, *self.joined]

    @property
    def down(self) -> frozenset[str]:
        return frozenset(self._down)

    def host(self, node: str) -> str:
        return node

    # -- lifecycle --

    async def setup(self) -> None:
        trio.lowlevel.spawn_system_task(self._drive)
        for node in self.nodes:
            self._note(node, "started")
        await self.wait_ready(self.nodes)

    async def teardown(self) -> None:
        """Stop moving the simulation on; write each node's log and the replicas' latencies
        (``replica-latency.json``). Nothing else outlives it."""
        self._driver.cancel()
        for node, lines in sorted(self._log.items()):
            node_dir = self.run_dir / "nodes" / node
            node_dir.mkdir(parents=True, exist_ok=True)
            (node_dir / "kvstore.log").write_text("".join(f"{line}\n" for line in lines))
        self._log.clear()
        write_latencies(self.run_dir, self.sim.latencies)

    async def _drive(self) -> None:
        """Move the simulation on with trio's clock.

        Once every other task waits (for an event or a deadline), nothing but the simulation
        can happen before the next deadline: the simulation runs ahead to it in one go, up to
        the first answer to a client, whose waiter is woken at that answer's virtual time. The
        driver moves the clock there itself, since no deadline comes sooner; else it sleeps
        until the simulation's next event, which a request or a fault brings forward
        (:meth:`_poke`).
        """
        clock = trio.lowlevel.current_clock()
        if not isinstance(clock, trio.testing.MockClock):
            raise RuntimeError("a simulated cluster runs in virtual time (run_virtual)")
        with self._driver:
            while True:
                await trio.testing.wait_all_tasks_blocked()
                if self._catch_up():
                    continue  # the clients woken act now, before the simulation moves on
                now = trio.current_time()
                horizon = now + trio.lowlevel.current_statistics().seconds_to_next_deadline
                stops = self._stops
                while not self._answers and self._stops == stops \
                        and (due := self.sim.next_time()) is not None and due <= horizon:
                    self.sim.step()
                if self._stops > stops:
                    wake: float | None = self.sim.now  # its clients learn of it then
                else:
                    wake = self._answers[0][0] if self._answers else self.sim.next_time()
                if wake is not None and wake <= horizon:  # nothing else can happen before
                    jump_to(clock, wake)
                    continue
                with trio.CancelScope(deadline=math.inf if wake is None else wake) as scope:
                    self._wake = scope
                    await trio.sleep_forever()

    @property
    def _stops(self) -> int:
        """How many times a node has stopped by itself: the node logic crashed, or a sync
        failed."""
        return len(self.sim.failures) + len(self.sim.halts)

    def _catch_up(self) -> bool:
        """Handle every event due by now, and wake the clients answered by then (or whose node
        stopped by itself); return whether any was woken."""
        now = trio.current_time()
        if self.sim.now > now:
            raise RuntimeError(f"the simulation ran ahead of its clients ({self.sim.now} s at "
                               f"{now} s): a bug in kvcheck")
        self.sim.run_until(now)
        woken = False
        while self._answers and self._answers[0][0] <= now:
            _, request, response = self._answers.popleft()
            waiter = self._waiting.get(request)
            if waiter is not None and not waiter.done.is_set():  # not broken meanwhile
                waiter.response = response
                waiter.done.set()
                woken = True
        return self._note_stops() or woken

    def _note_stops(self) -> bool:
        """A node that stopped by itself breaks its clients' connections, as a server that
        stops does; return whether any client was waiting on it."""
        stops = [(node, "crashed: the node logic raised\n" + trace.rstrip())
                 for node, trace in self.sim.failures[self._noted:]]
        stops += self.sim.halts[self._halts_noted:]
        self._noted, self._halts_noted = len(self.sim.failures), len(self.sim.halts)
        woken = False
        for node, why in stops:
            self._note(node, why)
            woken = self._break_connections(node) or woken
        return woken

    def _poke(self) -> None:
        """Something was added to the simulation now: wake the driver for it."""
        due = self.sim.next_time()
        if self._wake is not None and due is not None and due < self._wake.deadline:
            self._wake.deadline = due

    def _note(self, node: str, what: str) -> None:
        self._log.setdefault(node, []).append(f"{trio.current_time():.6f} {what}")

    # -- clients --

    def _answered(self, request: int, response: Response) -> None:
        """The simulation answered ``request``: its client hears it at this virtual time."""
        self._answers.append((self.sim.now, request, response))

    def _break_connections(self, node: str) -> bool:
        """End the requests waiting on ``node`` with no response; return whether any was."""
        broken = [w for w in self._waiting.values() if w.node == node and not w.done.is_set()]
        for waiter in broken:
            waiter.done.set()  # with no response: the connection broke
        return bool(broken)

    async def http(self, node: str, method: str, target: str, headers: Mapping[str, str],
                   body: bytes) -> Reply | None:
        """What ``node`` answers a ``/kv/`` request, as the server would; None if the connection
        broke with the request sent. Raises ConnectionFailed when the node refuses it."""
        self._catch_up()
        state = self.sim.nodes[node].state if node in self.sim.nodes else "crashed"
        if node in self._down or state == "crashed":
            raise ConnectionFailed(f"connection to {node} failed: connection refused",
                                   "no") from ConnectionRefusedError(errno.ECONNREFUSED,
                                                                     "Connection refused")
        path, _, query = target.partition("?")
        if not path.startswith("/kv/"):
            raise ValueError(f"the simulator serves clients only /kv/, not {target!r}")
        raw_headers = {k.lower().encode(): v.encode() for k, v in headers.items()}
        event = kv_event(method, unquote_to_bytes(path[len("/kv/"):]), query.encode(),
                         raw_headers, body, self.config.n)
        if isinstance(event, Reply):
            return event
        request = self.sim.new_request()
        waiter = self._waiting[request] = _Waiter(node)
        self.sim.submit(node, event(request))
        self._poke()
        # As the server: no answer in this time is a failure whose outcome is unknown.
        with trio.move_on_after(2 * self.config.request_timeout_ms / 1000 + 1):
            await waiter.done.wait()
        del self._waiting[request]
        if waiter.done.is_set() and waiter.response is None:
            return None
        response = waiter.response or Failed("the node did not answer in time", "unknown")
        return views.read_reply(response) if method == "GET" else views.write_reply(response)

    # -- faults --

    async def kill(self, node: str) -> None:
        self._take_down(node, self.sim.crash, "killed")

    async def cut_power(self, node: str) -> None:
        self._take_down(node, self.sim.power_off, "lost power")

    def _take_down(self, node: str, stop: Callable[[str], None], what: str) -> None:
        """Stop ``node`` the way ``stop`` does; its clients' connections break."""
        self._catch_up()
        stop(node)
        self._down.add(node)
        self._break_connections(node)
        self._note(node, what)

    async def fail_disks(self, nodes: Sequence[str], error: str) -> None:
        self._catch_up()
        for node in nodes:
            self.sim.fail_disk(node, error)  # type: ignore[arg-type]
            self._note(node, f"disk fails every {error}")

    async def heal_disks(self) -> None:
        self._catch_up()
        halted = {node for node, _ in self.sim.halts}
        for node, state in sorted(self.sim.nodes.items()):
            if state.disk.error is not None:
                self.sim.fail_disk(node, None)
            if node in halted and state.state == "crashed" and node not in self._down:
                self.sim.restart(node)
                self._note(node, "restarted after its disk was healed")
        self._poke()

    async def restart(self, node: str) -> None:
        self._catch_up()
        self.sim.restart(node)
        self._down.discard(node)
        self._note(node, "restarted")
        self._poke()

    async def wait_ready(self, nodes: Sequence[str], limit: float = READY_LIMIT) -> None:
        """Until each node is up and every peer's link to it is back. Raises BackendError
        after ``limit`` virtual seconds."""
        with trio.move_on_after(limit):
            for node in nodes:
                while not await self.database.ready(node, self):
                    await trio.sleep(0.05)
            return
        raise BackendError(f"nodes {', '.join(nodes)} did not become ready in {limit:.0f} "
                           "simulated seconds")

    async def pause(self, node: str) -> None:
        self._catch_up()
        self.sim.pause(node)
        self._note(node, "paused")

    async def resume(self, node: str) -> None:
        self._catch_up()
        self.sim.resume(node)
        self._note(node, "resumed")
        self._poke()

    async def cut(self, links: frozenset[Link]) -> None:
        self._catch_up()
        for source, target in sorted(links):
            self.sim.cut(source, target, both_ways=False)

    async def heal(self, links: frozenset[Link] | None = None) -> None:
        self._catch_up()
        if links is None:
            self.sim.heal()
        for source, target in sorted(links or ()):
            self.sim.uncut(source, target, both_ways=False)

    async def set_clock(self, offsets: Mapping[str, float]) -> None:
        self._catch_up()
        for node, seconds in sorted(offsets.items()):
            if node in self.sim.nodes:
                self.sim.skew(node, seconds)

    def packet_support(self) -> PacketSupport:
        return PacketSupport(frozenset({"delay", "loss", "duplicate", "reorder", "rate"}))

    async def packet_fault(self, fault: PacketFault) -> None:
        self._catch_up()
        for node in fault.nodes:
            self.sim.degrade(node, Degradation(fault.delay_ms / 1000, fault.jitter_ms / 1000,
                                               fault.loss, fault.rate_kbit))

    async def clear_packets(self) -> None:
        self._catch_up()
        self.sim.restore()

    async def join(self, node: str, via: str) -> None:
        """Start ``node`` on an empty disk, joining through ``via``; return once it is ready."""
        self._catch_up()
        try:
            self.sim.join(node, via, self.spec.zone_of(node), self.spec.weight(node))
        except ValueError as exc:
            raise BackendError(f"{node} cannot join through {via}: {exc}") from None
        self._down.discard(node)
        if node not in self.nodes and node not in self.joined:
            self.joined.append(node)
        self._note(node, f"joining through {via}")
        self._poke()
        await self.wait_ready([node])

    async def leave(self, node: str) -> None:
        """Decommission ``node`` as the store does, then stop it."""
        try:
            await self.database.leave(node, self)
        except DatabaseError as exc:
            raise BackendError(str(exc)) from None
        await self.kill(node)
        self._note(node, "left the cluster and stopped")
        if node in self.joined:
            self.joined.remove(node)

    async def crashed(self) -> list[str]:
        """The nodes the node logic crashed on since the last call (a bug in the store)."""
        self._catch_up()
        failures, self._reported = self.sim.failures[self._reported:], len(self.sim.failures)
        return sorted({node for node, _ in failures if node not in self._down})


class SimKvStore(KvStore):
    """The reference store as the simulator runs it: what the adapter asks a node over HTTP,
    asked of the simulated node directly. ``cluster`` is always a :class:`SimCluster`."""

    async def ready(self, node: str, cluster: Cluster) -> bool:
        sim = _sim(cluster).sim
        return node in sim.nodes and sim.connected(node)

    def client(self, node: str, cluster: Cluster) -> KvStoreClient:
        spec = cluster.spec
        return KvStoreClient(SimStoreClient(_sim(cluster), node, 2 * spec.op_timeout),
                             workload=spec.workload, vector_clocks=spec.versioning == "vclock")

    async def replica_state(self, node: str, keys: Sequence[str],
                            cluster: Cluster) -> dict[str, Any] | None:
        sim = _sim(cluster).sim
        if node not in sim.nodes or sim.nodes[node].state != "up":
            return None  # a stopped or frozen node does not answer
        disk = sim.nodes[node].disk
        return {key: {"versions": views.replica(node, key.encode(),
                                                disk.get(key.encode()))["versions"]}
                for key in keys}

    async def _final_ring(self, cluster: Cluster) -> Ring:
        sim = _sim(cluster).sim
        for node in cluster.members:
            if sim.nodes[node].state == "up":
                return sim.nodes[node].logic.placement.current
        return await super()._final_ring(cluster)

    async def leave(self, node: str, cluster: Cluster) -> None:
        """Ask ``node`` to leave until it accepts, then wait until it and every other running
        member know it has left (as the store's own adapter does over HTTP)."""
        backend = _sim(cluster)
        sim = backend.sim
        with trio.move_on_after(LEAVE_LIMIT):
            while True:
                backend._catch_up()
                if sim.nodes[node].state == "up":
                    refused = sim.leave(node)
                    if refused is None:
                        break
                    if not refused.later:
                        raise DatabaseError(f"{node} cannot leave: {refused.reason}")
                await trio.sleep(0.5)
            backend._poke()
            while not all(_seen_left(sim, member, node) for member in cluster.members
                          if member == node or member not in cluster.down):
                await trio.sleep(0.5)
            return
        raise DatabaseError(f"{node} did not leave the cluster within {LEAVE_LIMIT:.0f} s")


class SimStoreClient(StoreClient):
    """The store's HTTP client, its transport the simulated node's request handling."""

    def __init__(self, cluster: SimCluster, node: str, timeout: float) -> None:
        super().__init__(node, 0, timeout)
        self._cluster = cluster

    async def aclose(self) -> None:
        pass

    async def _request(self, method: str, target: str,
                       headers: list[tuple[str, str]] | None = None,
                       body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        applied: Applied = "no" if method == "GET" else "unknown"
        with trio.move_on_after(self.timeout):
            reply = await self._cluster.http(self.host, method, target, dict(headers or []),
                                             body)
            if reply is None:
                raise ConnectionFailed(f"connection to {self.host} failed: closed by the node",
                                       applied) from trio.BrokenResourceError(
                                           "connection closed by the node")
            return reply.status, {k.lower(): v for k, v in reply.headers}, reply.body
        raise ConnectionFailed(f"no answer from {self.host} within {self.timeout} s",
                               applied) from trio.TooSlowError()


def _seen_left(sim: Simulation, member: str, node: str) -> bool:
    """Whether ``member`` is up and its records show ``node`` as left."""
    record = sim.nodes[member].logic.placement.records.get(node)
    return sim.nodes[member].state == "up" and record is not None and record.status == "left"


def _sim(cluster: Cluster) -> SimCluster:
    assert isinstance(cluster, SimCluster), "SimKvStore runs only in a SimCluster"
    return cluster

