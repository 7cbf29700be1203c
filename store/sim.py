"""The simulator: many nodes' logic over an in-memory network, in virtual time.

The second driver of :class:`~kvcheck.store.node.Node` (the trio server is the first). One seeded
random generator decides every message delay and loss, so the same seed gives the same history, byte
for byte, and a test needs neither sockets nor sleeps. ``docs/sim.md`` lists what it models and
how the real cluster differs:

- links: each node sends to each peer over one link of its own, as the server does over one TCP
  connection: a message takes a random delay in ``latency`` and never overtakes an earlier one on
  the same link; a cut link (:meth:`Simulation.cut`) drops everything, silently — as iptables
  DROP does; a node has no link to itself (a message to itself is undeliverable, as the
  server has none); a message between nodes of two zones takes ``zone_delay`` longer (the
  distance between data centers); ``loss`` drops a share of all messages outright (for unit
  tests of timeouts: TCP would retransmit them — :meth:`Simulation.degrade` models packet
  faults as TCP sees them);
- crash: the node's volatile state (requests in flight, timers, its membership view) is gone,
  its storage and hints (the disk) stay; messages sent to it fail at once as *undeliverable* —
  as a refused TCP connect does — and after its restart, until each peer's link to it has
  reconnected (at the peer's next retry, at most a second away, as the server backs off);
- the disk (:mod:`kvcheck.store.sim_disk`): with fsync ``always``, what follows a write waits
  for the next sync (group commit, as the server does), which takes a random time in ``fsync``;
  a power loss keeps only what a device would; a disk can fail writes, reads or syncs. A failed
  sync stops the node's writes until it restarts, and takes back the acknowledgements held for
  it, as the server does (:attr:`Simulation.halts`); healing the disk stops such a node, as an
  operator does to replace a disk, for a restart;
- pause: the node handles nothing until resumed, then everything that arrived meanwhile — as
  SIGSTOP does;
- clocks: each node's wall clock is virtual time plus its own offset; monotonic time is not
  skewed — as with libfaketime in the containers;
- a bug: an exception the node logic raises crashes that node (as it would stop the server),
  and is kept in :attr:`Simulation.failures`.

It also measures the replicas' latencies in the quorum exchanges (:attr:`Simulation.latencies`),
the inputs of a staleness model, without changing a thing it does.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import random
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from kvcheck.store.config import ClusterConfig
from kvcheck.store.ids import Kind, kind_of
from kvcheck.store.messages import (
    Message,
    ReadReply,
    ReadRequest,
    Replicate,
    ReplicateAck,
    encode_frame,
)
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
from kvcheck.store.replica import unacknowledged
from kvcheck.store.ring import Member, Ring
from kvcheck.store.sim_disk import DiskError, SimDisk, SimHints
from kvcheck.store.storage import StorageError
from kvcheck.store.versions import Clock

#: Wall-clock time (ms) at virtual time zero.
EPOCH_MS = 1_700_000_000_000
#: The most a peer's link waits between two attempts to reconnect (the server's backoff).
MAX_RECONNECT_S = 1.0
#: TCP's first retransmission timeout: what a lost packet costs a message.
RETRANSMIT_S = 0.2
#: The kinds of :attr:`Simulation.latencies`.
LATENCY_KINDS = ("write", "ack", "read", "reply")
#: The most samples :attr:`Simulation.latencies` keeps of each kind.
MAX_LATENCY_SAMPLES = 20_000
#: The most replications awaiting their acknowledgement that the latency samples track.
MAX_AWAITED_ACKS = 10_000

State = Literal["up", "crashed", "paused"]


@dataclass(frozen=True, slots=True)
class Degradation:
    """Packet faults on the links leaving a node, as TCP shows them to the node: ``delay`` and
    ``jitter`` (seconds) add to every message; a ``loss`` share of packets costs a message a
    retransmission (:data:`RETRANSMIT_S`, doubling while it is lost again); ``rate_kbit``
    queues messages behind each other at that bandwidth. Duplicated and reordered packets TCP
    hides entirely."""

    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    rate_kbit: int = 0


@dataclass(frozen=True, slots=True)
class _Commit:
    """The simulator's own event: a node's group commit starts (``group`` None: the sync), or
    its sync has returned and ``group``, the actions it held, go out."""

    generation: int
    group: tuple[Action, ...] | None = None


@dataclass(slots=True)
class SimNode:
    node_id: str
    disk: SimDisk
    hints: SimHints
    logic: Node
    state: State = "up"
    clock_offset: float = 0.0
    generation: int = 1
    timers: dict[Timer, int] = field(default_factory=dict)
    deferred: list[Event | _Commit] = field(default_factory=list)
    held: list[Action] = field(default_factory=list)  # waiting for the next group commit
    committing: bool = False  # a group commit is due or under way


class Simulation:
    """A cluster of nodes in one process, in virtual time.

    Client requests return a request id; their answers go to ``answered(request, response)``
    if given, else to :attr:`responses` (request id → ``(time, response)``). With ``trace``,
    every event handled is appended to :attr:`trace` as a line of text.
    """

    def __init__(
        self,
        node_ids: Iterable[str],
        cluster: ClusterConfig | None = None,
        *,
        seed: int = 0,
        latency: tuple[float, float] = (0.0005, 0.002),
        fsync: tuple[float, float] = (0.001, 0.004),
        loss: float = 0.0,
        zones: dict[str, str] | None = None,
        weights: dict[str, int] | None = None,
        zone_delay: float = 0.0,
        trace: bool = True,
        answered: Callable[[int, Response], None] | None = None,
    ) -> None:
        self.cluster = cluster or ClusterConfig()
        self.random = random.Random(seed)
        self.latency = latency
        self.fsync = fsync
        self.loss = loss
        self.now = 0.0
        self.ring = _ring(
            tuple(Member(n, (zones or {}).get(n, "default"), (weights or {}).get(n, 1))
                  for n in node_ids),
            self.cluster.vnodes_per_weight,
        )
        #: The placement of the cluster as configured (a node's address is its id).
        self.configured = Placement(
            initial_records(self.ring.members.values(), {n: n for n in self.ring.members},
                            self.cluster.vnodes_per_weight),
            self.cluster.vnodes_per_weight, self.cluster.n)
        #: The links cut, each with how many cuts hold it.
        #: Each node's zone, and the delay a message between two zones takes on top of
        #: ``latency``, each way (none within a zone).
        self.zones = {m.node_id: m.zone for m in self.ring.members.values()}
        self.zone_delay = zone_delay
        self.cut_links: Counter[tuple[str, str]] = Counter()
        self.responses: dict[int, tuple[float, Response]] = {}
        self.trace: list[str] = []
        #: (node, traceback) for each exception the node logic raised (it crashed the node).
        self.failures: list[tuple[str, str]] = []
        #: (node, why) each time a failed sync stopped a node's writes (it serves reads on until
        #: it restarts), as the server's do.
        self.halts: list[tuple[str, str]] = []
        #: Latencies (seconds) of the quorum exchanges, by kind: ``write``, a ``Replicate`` of
        #: a client request (a put's replication, or a blocking read repair; not a hint, a
        #: repair write, a handoff or anti-entropy) from sending to arrival; ``ack``, from that
        #: ``Replicate``'s arrival to its ``ReplicateAck``'s (the replica's merge, its group
        #: commit's sync, the way back); ``read`` and ``reply``, a ``ReadRequest``'s and a
        #: ``ReadReply``'s from sending to arrival. A message is sampled when it is sent, at
        #: the arrival then scheduled (:meth:`restore` may bring that forward); one dropped or
        #: undeliverable is not. At most :data:`MAX_LATENCY_SAMPLES` of each kind, evenly spread
        #: over the run: once that many are kept, every other one is dropped and from then on
        #: only every other one is kept (then every fourth, ...). Nothing random decides it.
        self.latencies: dict[str, list[float]] = {kind: [] for kind in LATENCY_KINDS}
        self._sampled = dict.fromkeys(LATENCY_KINDS, 0)  # samples offered, of each kind
        self._sample_every = dict.fromkeys(LATENCY_KINDS, 1)
        #: (coordinator, replica, request) -> when that replica got the Replicate sampled.
        self._awaiting_ack: dict[tuple[str, str, int], float] = {}
        self._tracing = trace
        self._answered = answered
        self._queue: list[tuple[float, int, str, Event | _Commit]] = []
        self._seq = 0
        self._next_request = 0
        self._arrival: dict[tuple[str, str], float] = {}  # the last arrival on each link
        self._reconnect: dict[tuple[str, str], float] = {}  # link down until then
        self._crashed_at: dict[str, float] = {}
        self._degraded: dict[str, Degradation] = {}
        self._busy_until: dict[str, float] = {}  # a rate-limited node's link is busy until
        self.nodes = {n: self._boot(n, *self._new_disk(), 1, self.configured)
                      for n in self.ring.members}
        for node in list(self.nodes.values()):
            self._start(node)

    # -- clients --

    def put(self, via: str, key: bytes, value: bytes | None, context: Clock | None = None,
            w: int | None = None) -> int:
        """Submit a put (a delete if ``value`` is None) to node ``via``; returns its request id."""
        request = self.new_request()
        self.submit(via, ClientPut(request, key, value, context or {}, w))
        return request

    def get(self, via: str, key: bytes, r: int | None = None) -> int:
        """Submit a get to node ``via``; returns its request id."""
        request = self.new_request()
        self.submit(via, ClientGet(request, key, r))
        return request

    def new_request(self) -> int:
        """A request id no other request of this simulation has."""
        self._next_request += 1
        return self._next_request

    def submit(self, via: str, event: ClientGet | ClientPut) -> None:
        """Hand a client's request to node ``via`` now (a crashed node never answers it)."""
        self._schedule(0.0, via, event)

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
        for link in {(a, b), (b, a)} if both_ways else {(a, b)}:
            self.cut_links[link] += 1

    def uncut(self, a: str, b: str, *, both_ways: bool = True) -> None:
        """Undo one :meth:`cut` of the link (a link cut twice stays cut until both are undone)."""
        for link in {(a, b), (b, a)} if both_ways else {(a, b)}:
            self.cut_links[link] -= 1
            if self.cut_links[link] <= 0:
                del self.cut_links[link]

    def heal(self) -> None:
        """Undo every cut."""
        self.cut_links.clear()

    def degrade(self, node_id: str, degradation: Degradation) -> None:
        """Degrade the links leaving ``node_id`` (see :class:`Degradation`)."""
        self._degraded[node_id] = degradation

    def restore(self) -> None:
        """Remove every degradation. Messages the degraded links still hold go at once, as
        when a queueing discipline is removed: what it held is dropped and TCP sends it again,
        in order."""
        soon = self.now + self.latency[1]
        held = {seq for at, seq, _, event in self._queue
                if at > soon and isinstance(event, Received) and event.peer in self._degraded}
        if held:  # same time, in sending order (seq): each link stays in order
            self._queue = [(soon if seq in held else at, seq, node, event)
                           for at, seq, node, event in self._queue]
            heapq.heapify(self._queue)
        for link, at in self._arrival.items():
            if link[0] in self._degraded:
                self._arrival[link] = min(at, soon)
        self._degraded.clear()
        self._busy_until.clear()

    def crash(self, node_id: str) -> None:
        """Stop the node; it loses everything but its disk."""
        node = self.nodes[node_id]
        node.state, node.timers, node.deferred, node.held = "crashed", {}, [], []
        self._crashed_at[node_id] = self.now
        self._note(f"{node_id} crash")

    def power_off(self, node_id: str) -> None:
        """Crash the node, and its disk keeps only what a device keeps through a power loss."""
        self.crash(node_id)
        node = self.nodes[node_id]
        node.disk.lose_power(self.random)
        node.hints.lose_power(self.random)
        self._note(f"{node_id} power loss")

    def fail_disk(self, node_id: str, error: DiskError | None) -> None:
        """Make the node's disk fail ``error`` from now on (None: heal it). Healing stops a
        node whose writes a failed sync stopped, as an operator does to replace its disk:
        :meth:`restart` it to recover."""
        node = self.nodes[node_id]
        node.disk.error = error
        self._note(f"{node_id} disk {error or 'healed'}")
        if error is None and node.disk.fail_stop.reason is not None and node.state != "crashed":
            self.crash(node_id)

    def restart(self, node_id: str) -> None:
        """Start a crashed node again on the same disk."""
        old = self.nodes[node_id]
        if old.state != "crashed":
            raise ValueError(f"{node_id} is {old.state}, not crashed")
        old.disk.restart()
        node = self._boot(node_id, old.disk, old.hints, old.generation + 1,
                          old.logic.placement)
        self._replace(old, node, "restart")

    def wipe(self, node_id: str) -> None:
        """Crash the node and start it again on an empty disk, as a new actor (a replaced
        server: what it held must come back from its peers)."""
        self.crash(node_id)
        old = self.nodes[node_id]
        node = self._boot(node_id, *self._new_disk(), old.generation + 1,
                          self.configured, actor=f"{node_id}.wiped{old.generation + 1}")
        self._replace(old, node, "wipe")

    # -- membership --

    def join(self, node_id: str, via: str, zone: str = "default", weight: int = 1) -> None:
        """Start a new node that joins through ``via`` (it takes ``via``'s records, as a real
        node fetches them from its seed). Raises ValueError for an id already a member."""
        placement = self.nodes[via].logic.placement.joined(node_id, node_id, zone, weight)
        self.zones[node_id] = zone
        node = self._boot(node_id, *self._new_disk(), 1, placement)
        self.nodes[node_id] = node
        self._note(f"{node_id} join via {via}")
        self._start(node)

    def leave(self, node_id: str) -> Refused | None:
        """Ask a node to decommission itself; returns why it refuses, or None."""
        node = self.nodes[node_id]
        self._note(f"{node_id} leave")
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

    def connected(self, node_id: str) -> bool:
        """Whether the node is up and every peer's link to it is back (after a restart, each
        peer reconnects at its next attempt): what a readiness check waits for."""
        return self.nodes[node_id].state == "up" and all(
            self._reconnect.get((peer, node_id), 0.0) <= self.now for peer in self.nodes)

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

    def next_time(self) -> float | None:
        """When the next event is due, if any is."""
        return self._queue[0][0] if self._queue else None

    def run_until(self, until: float) -> None:
        """Handle every event due by virtual time ``until``; then it is ``until``."""
        while self._queue and self._queue[0][0] <= until:
            self.step()
        self.now = max(self.now, until)

    def run_for(self, seconds: float) -> None:
        """Handle every event due in the next ``seconds`` of virtual time."""
        self.run_until(self.now + seconds)

    # -- internals --

    def _new_disk(self) -> tuple[SimDisk, SimHints]:
        disk = SimDisk(self._clock)
        return disk, SimHints(disk)

    def _clock(self) -> float:
        return self.now

    def _boot(self, node_id: str, disk: SimDisk, hints: SimHints, generation: int,
              placement: Placement, actor: str | None = None) -> SimNode:
        logic = Node(node_id, actor or f"{node_id}.1", placement, self.cluster, disk,
                     generation, hints)
        return SimNode(node_id, disk, hints, logic, generation=generation)

    def _replace(self, old: SimNode, node: SimNode, what: str) -> None:
        """``node`` takes the place of crashed ``old``; each peer's link to it comes back at
        that peer's next attempt to reconnect (its backoff grows while the node is down)."""
        node.clock_offset = old.clock_offset
        self.nodes[node.node_id] = node
        down_for = self.now - self._crashed_at.get(node.node_id, self.now)
        for peer in self.nodes:
            if peer != node.node_id:
                self._reconnect[(peer, node.node_id)] = self.now + self.random.uniform(
                    0.0, min(MAX_RECONNECT_S, down_for))
        self._note(f"{node.node_id} {what}")
        self._start(node)

    def _start(self, node: SimNode) -> None:
        try:
            actions = node.logic.start(self._now(node))
        except Exception:  # a bug in the node logic stops the node, as it would the server
            self._fail(node)
            return
        self._carry_out(node, actions)

    def _now(self, node: SimNode) -> Now:
        return Now(self.now, EPOCH_MS + round((self.now + node.clock_offset) * 1000))

    def _note(self, what: str) -> None:
        if self._tracing:
            self.trace.append(f"{self.now:.6f} {what}")

    def _schedule(self, delay: float, node_id: str, event: Event | _Commit) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (self.now + delay, self._seq, node_id, event))

    def _deliver(self, node: SimNode, event: Event | _Commit) -> None:
        if node.state == "crashed":
            return
        if node.state == "paused":
            node.deferred.append(event)
            return
        if isinstance(event, _Commit):
            self._commit(node, event)
            return
        if self._tracing:
            self.trace.append(f"{self.now:.6f} {node.node_id} {event!r}")
        stopped = node.disk.fail_stop.reason is not None
        try:
            actions = node.logic.handle(event, self._now(node))
        except Exception:
            self._fail(node)
            return
        self._check_writes_stopped(node, stopped)
        self._carry_out(node, actions)

    def _check_writes_stopped(self, node: SimNode, stopped_before: bool) -> None:
        """Note in :attr:`halts` a failed sync that has just stopped the node's writes (in a
        group commit, or on the node's sync timer)."""
        reason = node.disk.fail_stop.reason
        if reason is not None and not stopped_before:
            self.halts.append((node.node_id, f"writes stopped: {reason}"))

    def _fail(self, node: SimNode) -> None:
        self.failures.append((node.node_id, traceback.format_exc()))
        self.crash(node.node_id)

    def _carry_out(self, node: SimNode, actions: list[Action]) -> None:
        """Apply ``actions``, or hold them for the next group commit while a write is not yet
        synced (fsync ``always``), as the server does."""
        if not self.cluster.syncs_before_ack or not (
                node.held or node.disk.unsynced or node.hints.unsynced):
            self._apply(node, actions)
            return
        node.held.extend(actions)
        if not node.committing:
            node.committing = True
            self._schedule(0.0, node.node_id, _Commit(node.generation))

    def _commit(self, node: SimNode, commit: _Commit) -> None:
        """Sync for the actions held so far, and send them out once the sync returns, less
        their acknowledgements if it failed. One group at a time, in order."""
        if commit.generation != node.generation:
            return
        if commit.group is not None:
            node.committing = False
            self._apply(node, list(commit.group))
            self._carry_out(node, [])  # the next group, if one formed meanwhile
            return
        group, node.held = tuple(node.held), []
        stopped = node.disk.fail_stop.reason is not None
        try:
            node.disk.sync()
            node.hints.sync()
        except StorageError as exc:
            group = tuple(unacknowledged(group, str(exc)))
        self._check_writes_stopped(node, stopped)
        self._schedule(self.random.uniform(*self.fsync), node.node_id,
                       _Commit(node.generation, group))

    def _apply(self, node: SimNode, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case Send(peer, message):
                    self._send(node.node_id, peer, message)
                case Respond(request, response):
                    if self._answered is not None:
                        self._answered(request, response)
                    else:
                        self.responses[request] = (self.now, response)
                case StartTimer(timer, delay):
                    self._schedule(delay, node.node_id, TimerFired(timer))
                    node.timers[timer] = self._seq
                case CancelTimer(timer):
                    node.timers.pop(timer, None)

    def _send(self, source: str, peer: str, message: Message) -> None:
        link = (source, peer)
        if peer == source or self.nodes[peer].state == "crashed" \
                or self._reconnect.get(link, 0.0) > self.now:  # the server has no link to itself
            self._schedule(0.0, source, Undeliverable(peer, message))
            return
        if link in self.cut_links or (self.loss and self.random.random() < self.loss):
            return
        at = self.now + self.random.uniform(*self.latency)
        if self.zone_delay and self.zones.get(source) != self.zones.get(peer):
            at += self.zone_delay
        if (degraded := self._degraded.get(source)) is not None:
            at = self._degrade(source, degraded, message, at)
        at = max(at, self._arrival.get(link, 0.0))  # one connection: in order
        self._arrival[link] = at
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, peer, Received(source, message)))
        self._measure(source, peer, message, at)

    def _measure(self, source: str, peer: str, message: Message, at: float) -> None:
        """Sample ``message``'s latency, sent now and due at ``at`` (see :attr:`latencies`)."""
        match message:
            case Replicate(request, hint_for=None) if kind_of(request) is Kind.REQUEST:
                self._sample("write", at - self.now)
                if len(self._awaiting_ack) >= MAX_AWAITED_ACKS:  # the oldest half never came
                    for key in list(itertools.islice(self._awaiting_ack,
                                                     MAX_AWAITED_ACKS // 2)):
                        del self._awaiting_ack[key]
                self._awaiting_ack[(source, peer, request)] = at
            case ReplicateAck(request):
                # The replica sends it now, so what it answers arrived by now: a Replicate not
                # yet there is a later one of the same id (the coordinator restarted since).
                replicated = self._awaiting_ack.get((peer, source, request))
                if replicated is not None and replicated <= self.now:
                    del self._awaiting_ack[(peer, source, request)]
                    self._sample("ack", at - replicated)
            case ReadRequest():
                self._sample("read", at - self.now)
            case ReadReply():
                self._sample("reply", at - self.now)

    def _sample(self, kind: str, seconds: float) -> None:
        """Keep every ``_sample_every[kind]``-th sample of ``kind``, thinning the kept ones to
        every other one (and the rate by half) when they exceed :data:`MAX_LATENCY_SAMPLES`."""
        offered = self._sampled[kind]
        self._sampled[kind] = offered + 1
        if offered % self._sample_every[kind]:
            return
        kept = self.latencies[kind]
        kept.append(seconds)
        if len(kept) > MAX_LATENCY_SAMPLES:
            del kept[1::2]
            self._sample_every[kind] *= 2

    def _degrade(self, source: str, degraded: Degradation, message: Message, at: float) -> float:
        at += degraded.delay + self.random.uniform(0.0, degraded.jitter)
        timeout = RETRANSMIT_S
        while degraded.loss and self.random.random() < degraded.loss:
            at, timeout = at + timeout, timeout * 2
        if degraded.rate_kbit:
            start = max(self.now, self._busy_until.get(source, 0.0))
            done = start + len(encode_frame(message)) * 8 / (degraded.rate_kbit * 1000)
            self._busy_until[source] = done
            at += done - self.now
        return at


@functools.lru_cache(maxsize=16)
def _ring(members: tuple[Member, ...], vnodes_per_weight: int) -> Ring:
    """Rings are immutable and deterministic, so simulations of one membership share one."""
    return Ring.build(members, vnodes_per_weight)
