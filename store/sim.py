"""The simulator: many nodes' logic over an in-memory network, in virtual time.

The second driver of :class:`~kvcheck.store.node.Node` (the trio server is the first). One seeded
random generator decides every message delay and loss, so the same seed gives the same history, byte
for byte, and a test needs neither sockets nor sleeps.

What it models, and how the real cluster behaves in the same case:

- links: a message takes a random delay in ``latency``; ``loss`` drops a share of them; a cut
  link (:meth:`Simulation.cut`) drops everything, silently — as iptables DROP does;
- crash: the node's volatile state (requests in flight, timers, its membership view) is gone,
  its storage and hints (the disk) stay; messages sent to it fail at once as *undeliverable* —
  as a refused TCP connect does;
- pause: the node handles nothing until resumed, then everything that arrived meanwhile — as
  SIGSTOP does;
- clocks: each node's wall clock is virtual time plus its own offset; monotonic time is not
  skewed — as with libfaketime in the containers.
"""

from __future__ import annotations

import functools
import heapq
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from kvcheck.store.config import ClusterConfig
from kvcheck.store.hints import Hints
from kvcheck.store.node import (
    Action,
    CancelTimer,
    ClientGet,
    ClientPut,
    Event,
    Node,
    Now,
    Received,
    Refused,
    Respond,
    Response,
    Send,
    StartTimer,
    Timer,
    TimerFired,
    Undeliverable,
)
from kvcheck.store.placement import Placement, initial_records
from kvcheck.store.ring import Member, Ring
from kvcheck.store.storage import MemoryStorage
from kvcheck.store.versions import Clock

#: Wall-clock time (ms) at virtual time zero.
EPOCH_MS = 1_700_000_000_000

State = Literal["up", "crashed", "paused"]


@dataclass(slots=True)
class SimNode:
    node_id: str
    disk: MemoryStorage
    hints: Hints
    logic: Node
    state: State = "up"
    clock_offset: float = 0.0
    generation: int = 1
    timers: dict[Timer, int] = field(default_factory=dict)
    deferred: list[Event] = field(default_factory=list)


class Simulation:
    """A cluster of nodes in one process, in virtual time.

    Client requests return a request id; :attr:`responses` maps it to ``(time, response)`` once
    answered. Every event handled is appended to :attr:`trace` as a line of text.
    """

    def __init__(
        self,
        node_ids: Iterable[str],
        cluster: ClusterConfig | None = None,
        *,
        seed: int = 0,
        latency: tuple[float, float] = (0.0005, 0.002),
        loss: float = 0.0,
        zones: dict[str, str] | None = None,
    ) -> None:
        self.cluster = cluster or ClusterConfig()
        self.random = random.Random(seed)
        self.latency = latency
        self.loss = loss
        self.now = 0.0
        self.ring = _ring(
            tuple(Member(n, (zones or {}).get(n, "default")) for n in node_ids),
            self.cluster.vnodes_per_weight,
        )
        #: The placement of the cluster as configured (a node's address is its id).
        self.configured = Placement(
            initial_records(self.ring.members.values(), {n: n for n in self.ring.members},
                            self.cluster.vnodes_per_weight),
            self.cluster.vnodes_per_weight, self.cluster.n)
        self.cut_links: set[tuple[str, str]] = set()
        self.responses: dict[int, tuple[float, Response]] = {}
        self.trace: list[str] = []
        self._queue: list[tuple[float, int, str, Event]] = []
        self._seq = 0
        self._next_request = 0
        self.nodes = {n: self._boot(n, MemoryStorage(), Hints(), 1, self.configured)
                      for n in self.ring.members}
        for node in self.nodes.values():
            self._apply(node, node.logic.start(self._now(node)))

    # -- clients --

    def put(self, via: str, key: bytes, value: bytes | None, context: Clock | None = None,
            w: int | None = None) -> int:
        """Submit a put (a delete if ``value`` is None) to node ``via``; returns its request id."""
        request = self._request()
        self._schedule(0.0, via, ClientPut(request, key, value, context or {}, w))
        return request

    def get(self, via: str, key: bytes, r: int | None = None) -> int:
        """Submit a get to node ``via``; returns its request id."""
        request = self._request()
        self._schedule(0.0, via, ClientGet(request, key, r))
        return request

    def wait_for(self, request: int, limit: float = 60.0) -> Response:
        """Run until ``request`` is answered; raises TimeoutError after ``limit`` virtual s."""
        deadline = self.now + limit
        while request not in self.responses:
            if not self._queue or self._queue[0][0] > deadline:
                raise TimeoutError(f"request {request} unanswered at t={self.now:.3f}")
            self.step()
        return self.responses[request][1]

    # -- faults --

    def cut(self, a: str, b: str, *, both_ways: bool = True) -> None:
        """Drop every message from ``a`` to ``b`` (and back, unless not ``both_ways``), silently."""
        self.cut_links |= {(a, b), (b, a)} if both_ways else {(a, b)}

    def heal(self) -> None:
        self.cut_links.clear()

    def crash(self, node_id: str) -> None:
        """Stop the node; it loses everything but its disk."""
        node = self.nodes[node_id]
        node.state, node.timers, node.deferred = "crashed", {}, []
        self.trace.append(f"{self.now:.6f} {node_id} crash")

    def restart(self, node_id: str) -> None:
        """Start a crashed node again on the same disk."""
        old = self.nodes[node_id]
        if old.state != "crashed":
            raise ValueError(f"{node_id} is {old.state}, not crashed")
        node = self._boot(node_id, old.disk, old.hints, old.generation + 1,
                          old.logic.placement)
        node.clock_offset = old.clock_offset
        self.nodes[node_id] = node
        self.trace.append(f"{self.now:.6f} {node_id} restart")
        self._apply(node, node.logic.start(self._now(node)))

    def wipe(self, node_id: str) -> None:
        """Crash the node and start it again on an empty disk, as a new actor (a replaced
        server: what it held must come back from its peers)."""
        self.crash(node_id)
        old = self.nodes[node_id]
        node = self._boot(node_id, MemoryStorage(), Hints(), old.generation + 1,
                          self.configured, actor=f"{node_id}.wiped{old.generation + 1}")
        node.clock_offset = old.clock_offset
        self.nodes[node_id] = node
        self.trace.append(f"{self.now:.6f} {node_id} wipe")
        self._apply(node, node.logic.start(self._now(node)))

    # -- membership --

    def join(self, node_id: str, via: str, zone: str = "default") -> None:
        """Start a new node that joins through ``via`` (it takes ``via``'s records, as a real
        node fetches them from its seed). Raises ValueError for an id already a member."""
        placement = self.nodes[via].logic.placement.joined(node_id, node_id, zone, 1)
        node = self._boot(node_id, MemoryStorage(), Hints(), 1, placement)
        self.nodes[node_id] = node
        self.trace.append(f"{self.now:.6f} {node_id} join via {via}")
        self._apply(node, node.logic.start(self._now(node)))

    def leave(self, node_id: str) -> Refused | None:
        """Ask a node to decommission itself; returns why it refuses, or None."""
        node = self.nodes[node_id]
        self.trace.append(f"{self.now:.6f} {node_id} leave")
        return node.logic.leave(self._now(node))

    def fire(self, node_id: str, timer: Timer) -> None:
        """Deliver a timer event to a node now, whatever its schedule (for tests)."""
        self._deliver(self.nodes[node_id], TimerFired(timer))

    def pause(self, node_id: str) -> None:
        self.nodes[node_id].state = "paused"

    def resume(self, node_id: str) -> None:
        node = self.nodes[node_id]
        node.state = "up"
        deferred, node.deferred = node.deferred, []
        for event in deferred:
            self._deliver(node, event)

    def skew(self, node_id: str, seconds: float) -> None:
        """Set the node's wall-clock offset (monotonic time stays true)."""
        self.nodes[node_id].clock_offset = seconds

    # -- running --

    def step(self) -> bool:
        """Handle the next event; False when nothing is left to do."""
        if not self._queue:
            return False
        at, seq, node_id, event = heapq.heappop(self._queue)
        self.now = max(self.now, at)
        node = self.nodes[node_id]
        if isinstance(event, TimerFired):
            if node.timers.get(event.timer) != seq:
                return True  # cancelled, restarted, or from before a crash
            del node.timers[event.timer]
        self._deliver(node, event)
        return True

    def run_for(self, seconds: float) -> None:
        """Handle every event due in the next ``seconds`` of virtual time."""
        until = self.now + seconds
        while self._queue and self._queue[0][0] <= until:
            self.step()
        self.now = until

    # -- internals --

    def _boot(self, node_id: str, disk: MemoryStorage, hints: Hints, generation: int,
              placement: Placement, actor: str | None = None) -> SimNode:
        logic = Node(node_id, actor or f"{node_id}.1", placement, self.cluster, disk,
                     generation, hints)
        return SimNode(node_id, disk, hints, logic, generation=generation)

    def _now(self, node: SimNode) -> Now:
        return Now(self.now, EPOCH_MS + round((self.now + node.clock_offset) * 1000))

    def _request(self) -> int:
        self._next_request += 1
        return self._next_request

    def _schedule(self, delay: float, node_id: str, event: Event) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (self.now + delay, self._seq, node_id, event))

    def _deliver(self, node: SimNode, event: Event) -> None:
        if node.state == "crashed":
            return
        if node.state == "paused":
            node.deferred.append(event)
            return
        self.trace.append(f"{self.now:.6f} {node.node_id} {event!r}")
        self._apply(node, node.logic.handle(event, self._now(node)))

    def _apply(self, node: SimNode, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case Send(peer, message):
                    target = self.nodes[peer]
                    if target.state == "crashed":
                        self._schedule(0.0, node.node_id, Undeliverable(peer, message))
                    elif (node.node_id, peer) in self.cut_links or (
                        self.loss and self.random.random() < self.loss
                    ):
                        continue
                    else:
                        delay = self.random.uniform(*self.latency)
                        self._schedule(delay, peer, Received(node.node_id, message))
                case Respond(request, response):
                    self.responses[request] = (self.now, response)
                case StartTimer(timer, delay):
                    self._schedule(delay, node.node_id, TimerFired(timer))
                    node.timers[timer] = self._seq
                case CancelTimer(timer):
                    node.timers.pop(timer, None)



@functools.lru_cache(maxsize=16)
def _ring(members: tuple[Member, ...], vnodes_per_weight: int) -> Ring:
    """Rings are immutable and deterministic, so simulations of one membership share one."""
    return Ring.build(members, vnodes_per_weight)
