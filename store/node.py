"""The node: all protocol logic of one store node, free of I/O.

Theory of operation
-------------------
A :class:`Node` is a state machine. A driver (the trio server, or the simulator) feeds it
*events* — a client request, a message from a peer, a message that could not be sent, a timer —
together with the current time, and carries out the *actions* it returns: send a message, answer
a client, start or cancel a timer. The node never opens a socket, sleeps or reads a clock; its
only side effect is the synchronous :class:`~kvcheck.store.storage.Storage` it was given.

Any node coordinates any request. For key ``k`` the replicas are the ring's preference list of N
distinct nodes — with sloppy quorums, the first N nodes along the ring that gossip does not show
down, where a *stand-in* holds a write with a hint for the replica it replaces and hands it off
when that replica is back. While a member joins or leaves, a request needs its quorum in the
key's preference lists of both the current and the next ring (:mod:`kvcheck.store.placement`).

*Put* (a delete is a put of a tombstone) runs in two steps, as in Riak:

1. **Stamp.** One replica — this node if it is one, else the first replica it can reach — creates
   the new version: it reads its sibling set, stamps a new dot, drops what the client's context
   covers, stores the result and returns it.
2. **Replicate.** The coordinator sends that sibling set to the other N-1 replicas, which merge it
   into theirs. The put succeeds when W replicas (the stamper included) have stored it.

*Get* asks all N replicas, answers after R replies with their merged siblings and the causal
context that covers them. Replicas that answered with less than the merge are sent it: *read
repair* — after the answer, or (``read_repair = "blocking"``) before it.

Beside requests, timers drive the background: gossip (:mod:`kvcheck.store.membership`) spreads
heartbeats and members' records and detects failures, answering indirect probes for others;
hinted writes are handed off; a join or leave moves on, pulling the keys this node gains
(:mod:`kvcheck.store.streaming`); and anti-entropy (:mod:`kvcheck.store.antientropy`) compares
Merkle trees with one peer a round.

A request that cannot gather its quorum fails, after ``request_timeout_ms`` or as soon as too
many replicas are known to be unreachable. A failed put says whether it may have been applied:
``applied="no"`` only when no replica can have stored the version (every stamp request was
refused or never left this node), ``"unknown"`` otherwise — the write is *indeterminate*, and
may surface later.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from kvcheck.store.antientropy import (
    DEPTH,
    FANOUT,
    LEAVES,
    SharedHashes,
    leaf_of,
    live,
    versions_digest,
)
from kvcheck.store.config import ClusterConfig
from kvcheck.store.hints import Hints
from kvcheck.store.membership import Change, Membership
from kvcheck.store.messages import (
    Gossip,
    KeyRequest,
    LeafKeys,
    Message,
    Probe,
    ProbeAck,
    ProbeRequest,
    ProbeResult,
    ReadReply,
    ReadRequest,
    Rejected,
    Replicate,
    ReplicateAck,
    StampReply,
    StampRequest,
    StreamBatch,
    StreamRequest,
    TreeLevel,
)
from kvcheck.store.placement import Placement, Record
from kvcheck.store.ring import Ring
from kvcheck.store.storage import Storage, StorageError
from kvcheck.store.streaming import PullRound, SourceScan
from kvcheck.store.versions import (
    Clock,
    Dot,
    Version,
    canonical,
    join,
    resolve,
    stamp,
    sync,
)

# -- time --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Now:
    """The time an event happens: ``monotonic`` seconds for timeouts, ``wall_ms`` for stamps."""

    monotonic: float
    wall_ms: int


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientGet:
    request: int
    key: bytes
    r: int | None = None


@dataclass(frozen=True, slots=True)
class ClientPut:
    """A put, or a delete when ``value`` is None. ``context`` is the client's causal context."""

    request: int
    key: bytes
    value: bytes | None
    context: Clock = field(default_factory=dict)
    w: int | None = None


@dataclass(frozen=True, slots=True)
class Received:
    peer: str
    message: Message


@dataclass(frozen=True, slots=True)
class Undeliverable:
    """The driver could not hand ``message`` to ``peer``: it surely was not delivered."""

    peer: str
    message: Message


Timer = tuple[str, int]


@dataclass(frozen=True, slots=True)
class TimerFired:
    timer: Timer


Event = ClientGet | ClientPut | Received | Undeliverable | TimerFired


# -- actions -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Found:
    """A get's answer: the siblings (tombstones included; empty if the key is unknown)."""

    versions: tuple[Version, ...]
    context: Clock


@dataclass(frozen=True, slots=True)
class Written:
    """A put's answer: the causal context of the version it wrote."""

    context: Clock


@dataclass(frozen=True, slots=True)
class Failed:
    """A request that did not reach its quorum. ``applied`` is about puts; gets say "no"."""

    reason: str
    applied: Literal["no", "unknown"]


Response = Found | Written | Failed


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a node will not leave; ``later`` when it may once a change in progress is over."""

    reason: str
    later: bool


@dataclass(frozen=True, slots=True)
class Send:
    peer: str
    message: Message


@dataclass(frozen=True, slots=True)
class Respond:
    request: int
    response: Response


@dataclass(frozen=True, slots=True)
class StartTimer:
    """Fire ``TimerFired(timer)`` after ``delay`` seconds (replacing a pending one)."""

    timer: Timer
    delay: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    timer: Timer


Action = Send | Respond | StartTimer | CancelTimer

SYNC_TIMER: Timer = ("sync", 0)
GOSSIP_TIMER: Timer = ("gossip", 0)
ANTIENTROPY_TIMER: Timer = ("antientropy", 0)
CATCH_UP_TIMER: Timer = ("catch-up", 0)
BUILD_TIMER: Timer = ("antientropy-build", 0)
#: Seconds between the extra anti-entropy sessions: a catch-up with a peer that came back, and
#: follow-ups (confirming differing leaves, or exchanging the leaves one exchange left over).
CATCH_UP_S = 0.2
#: An anti-entropy session not finished after this many seconds is forgotten.
ANTIENTROPY_SESSION_S = 30.0
#: Keys the build of the anti-entropy hashes reads per slice, and the pause after a failed one.
BUILD_SLICE = 2000
BUILD_RETRY_S = 1.0
#: Differing leaves whose keys one anti-entropy exchange lists, at most (a sixteenth of the tree).
LEAVES_PER_EXCHANGE = LEAVES // FANOUT
#: The request id of read-repair writes: nobody waits for their acknowledgement.
REPAIR_REQUEST = 0
#: A source that has not sent the next batch of a pull after this many seconds has failed.
PULL_TIMEOUT_S = 10.0
#: Hinted keys handed off to one owner per gossip round, at most.
HANDOFF_BATCH = 100
PURGE_TIMER: Timer = ("purge", 0)


# -- requests in flight ------------------------------------------------------------------------


@dataclass(slots=True)
class _Put:
    client: int
    key: bytes
    value: bytes | None
    context: Clock
    timestamp: int
    w: int
    replicas: tuple[str, ...]
    groups: tuple[tuple[str, ...], ...]  # W acknowledgements are needed in each (see _targets)
    candidates: list[str]  # replicas not yet asked to stamp, in preference order
    stand_ins: dict[str, str]  # stand-in -> the replica it replaces (sloppy quorum)
    asking: str | None = None  # the replica asked to stamp, awaiting its reply
    dot: Dot | None = None
    versions: tuple[Version, ...] = ()
    acked: set[str] = field(default_factory=set)
    pending: set[str] = field(default_factory=set)
    answered: bool = False


@dataclass(slots=True)
class _Get:
    client: int
    key: bytes
    r: int
    groups: tuple[tuple[str, ...], ...]  # R replies are needed from each
    replies: dict[str, list[Version]] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)
    answered: bool = False
    merged: tuple[Version, ...] = ()
    repairing: set[str] = field(default_factory=set)  # blocking read repair awaits their acks


class Node:
    """One node's protocol logic. See the module docstring for how requests run.

    ``actor`` is the name this node stamps versions with: its id plus the incarnation of its
    data directory, so a node whose data was wiped never reuses a dot. ``generation`` counts
    the node's starts on that directory (its gossip heartbeats are ordered by it).
    ``placement`` holds every member's record, this node's included; the node changes only its
    own record, and the driver may persist :attr:`placement` whenever it changes.
    """

    def __init__(
        self, node_id: str, actor: str, placement: Placement, cluster: ClusterConfig,
        storage: Storage, generation: int = 1, hints: Hints | None = None,
    ) -> None:
        if node_id not in placement.records:
            raise ValueError(f"node {node_id!r} has no record in the placement")
        self.node_id = node_id
        self.actor = actor
        self.placement = placement
        self.cluster = cluster
        self.storage = storage
        self.hints = hints if hints is not None else Hints()
        #: handoffs in flight: id -> (owner, key, hint sequence number, monotonic time sent)
        self._handoffs: dict[int, tuple[str, bytes, int, float]] = {}
        self._ops: dict[int, _Put | _Get] = {}
        self._next_op = 0
        self.counters: dict[str, int] = {}
        self.membership = Membership(
            node_id, placement.members(), generation=generation,
            suspect_after=cluster.suspect_after_ms / 1000,
            probe_timeout=cluster.probe_timeout_ms / 1000, fanout=cluster.gossip_fanout,
            rng=random.Random(actor))
        #: Recent membership changes, newest last: (wall-clock ms, change).
        self.membership_changes: deque[tuple[int, Change]] = deque(maxlen=50)
        self._probes: dict[int, tuple[str, int, str]] = {}  # ours -> (asker, its id, target)
        #: the Merkle trees shared with each peer, kept up to date by :meth:`_store`
        self.shared = SharedHashes(node_id, placement.next, cluster.n)
        self._build_due = False  # the ring changed: the shared trees must be built again
        #: anti-entropy sessions this node opened: id -> (peer, monotonic start, follow-up?)
        self._sessions: dict[int, tuple[str, float, bool]] = {}
        self._next_ae_turn = 0
        #: sessions to open soon, in order: (peer, follow-up?)
        self._catch_up: deque[tuple[str, bool]] = deque()
        #: per peer, the leaves that differed in the last comparison and were not exchanged
        self._suspect: dict[str, set[int]] = {}
        self._pulls: PullRound | None = None  # keys this node is pulling in a transition
        self._pull_failures: set[str] = set()  # sources that failed in this transition
        #: scans this node serves as a source: (gainer, request) -> (scan, monotonic last use)
        self._source_scans: dict[tuple[str, int], tuple[SourceScan, float]] = {}

    # -- driver interface --

    @property
    def ring(self) -> Ring:
        """The ring keys are headed for: the next one (the current one outside transitions)."""
        return self.placement.next

    def start(self, now: Now) -> list[Action]:
        """Actions to run once when the node starts: its periodic timers."""
        self.membership.begin(now.monotonic)
        self._adopt(self.placement, now)
        actions: list[Action] = [
            StartTimer(PURGE_TIMER, self._purge_period),
            StartTimer(GOSSIP_TIMER, self._gossip_period),
            StartTimer(ANTIENTROPY_TIMER, self.cluster.antientropy_interval_ms / 1000),
            StartTimer(BUILD_TIMER, 0.0),
        ]
        if self.cluster.fsync == "interval":
            actions.append(StartTimer(SYNC_TIMER, self.cluster.fsync_interval_ms / 1000))
        return actions

    def handle(self, event: Event, now: Now) -> list[Action]:
        """Process one event; return what the driver must do. Never raises for peer input."""
        out: list[Action] = []
        match event:
            case ClientPut():
                self._start_put(event, now, out)
            case ClientGet():
                self._start_get(event, out)
            case Received(peer, message):
                self._received(peer, message, now, out)
            case Undeliverable(peer, message):
                self._undeliverable(peer, message, out)
            case TimerFired(timer):
                self._timer(timer, now, out)
        if self._build_due:
            self._build_due = False
            out.append(StartTimer(BUILD_TIMER, 0.0))
        return out

    def status(self) -> dict[str, Any]:
        """Figures for ``/status``."""
        return {
            "requests_in_flight": len(self._ops),
            "hints_pending": self.hints.counts(),
            "placement": self.placement.status(),
            "pulling": None if self._pulls is None else {
                "sources": sorted(self._pulls.sources.values()),
                "unreachable": sorted(self._pulls.unreachable),
                "keys_received": self._pulls.keys_received},
            "counters": dict(sorted(self.counters.items())),
            "membership_changes": [
                {"wall_clock_ms": at, "node_id": c.node_id, "state": c.state, "reason": c.reason}
                for at, c in self.membership_changes],
        }

    # -- coordinating puts --

    def _targets(
        self, key: bytes,
    ) -> tuple[tuple[str, ...], dict[str, str], tuple[tuple[str, ...], ...]]:
        """The nodes a request for ``key`` goes to, which of them stand in for whom, and the
        groups it needs a quorum in.

        Strict quorums: the key's preference list — in a transition, its current and its next
        one (:meth:`Placement.groups`), each a group. Sloppy: those members that are not down,
        then, for each one that is, the next node along the ring that is up (a stand-in), which
        takes its place in the groups.
        """
        groups = self.placement.groups(key)
        preferred = tuple(dict.fromkeys(node for group in groups for node in group))
        if not self.cluster.sloppy_quorum:
            return preferred, {}, groups
        up = self.membership.up()
        down = [node for node in preferred if node not in up]
        if not down:
            return preferred, {}, groups
        spare = [node for node in self.ring.walk(key) if node not in preferred and node in up]
        stand_ins = dict(zip(spare, down, strict=False))
        standing_in = {replaced: stand_in for stand_in, replaced in stand_ins.items()}
        targets = [node for node in preferred if node not in standing_in]
        groups = tuple(tuple(standing_in.get(node, node) for node in group) for group in groups)
        return (*targets, *stand_ins), stand_ins, groups

    def _start_put(self, event: ClientPut, now: Now, out: list[Action]) -> None:
        w = self.cluster.w if event.w is None else event.w
        replicas, stand_ins, groups = self._targets(event.key)
        candidates = sorted(replicas, key=lambda node: node != self.node_id)  # self first
        op = _Put(event.request, event.key, event.value, event.context, now.wall_ms, w,
                  replicas, groups, candidates, stand_ins)
        op_id = self._open(op, out)
        self._count("put")
        self._ask_next_stamper(op_id, op, out)

    def _ask_next_stamper(self, op_id: int, op: _Put, out: list[Action]) -> None:
        while op.candidates:
            stamper = op.candidates.pop(0)
            if stamper != self.node_id:
                op.asking = stamper
                out.append(Send(stamper, StampRequest(op_id, op.key, op.context, op.value,
                                                      op.timestamp, op.stand_ins.get(stamper))))
                return
            try:
                dot, versions = self._stamp(op.key, op.context, op.value, op.timestamp,
                                            op.stand_ins.get(stamper))
            except StorageError:
                self._count("storage_errors")
                continue
            self._stamped(op_id, op, stamper, dot, versions, out)
            return
        self._fail_put(op_id, op, "no replica could stamp the write", out)

    def _stamped(
        self, op_id: int, op: _Put, stamper: str, dot: Dot, versions: tuple[Version, ...],
        out: list[Action],
    ) -> None:
        op.asking = None
        op.dot, op.versions = dot, versions
        op.acked.add(stamper)
        op.pending = {node for node in op.replicas if node != stamper}
        for node in op.replicas:  # in preference order: a set's order varies between processes
            if node == stamper:
                continue
            if node == self.node_id:
                try:
                    self._merge(op.key, versions, op.stand_ins.get(node))
                except StorageError:
                    self._count("storage_errors")
                    continue
                op.acked.add(node)
            else:
                out.append(Send(node, Replicate(op_id, op.key, versions,
                                                op.stand_ins.get(node))))
        op.pending -= op.acked
        self._progress_put(op_id, op, out)

    def _spread_late_stamp(self, stamper: str, key: bytes, versions: tuple[Version, ...],
                           out: list[Action]) -> None:
        """A stamp that came back after its put was given up on — the request sat behind a
        partition, in a connection that delivered it after the heal. Nobody else would ever
        replicate it: send it to the key's other replicas now, as a read repair would."""
        self._count("late_stamps_spread")
        replicas, stand_ins, _ = self._targets(key)
        for node in replicas:
            if node != stamper:
                self._write_back(node, key, versions, stand_ins.get(node), out)

    def _progress_put(self, op_id: int, op: _Put, out: list[Action]) -> None:
        if not op.answered:
            if _fewest(op.groups, op.acked) >= op.w:
                op.answered = True
                self._count("put_ok")
                # In lww mode a newer version may already have beaten the one written.
                written = [v for v in op.versions if v.dot == op.dot] or op.versions
                out.append(Respond(op.client, Written(join(written))))
            elif _fewest(op.groups, op.acked | op.pending) < op.w:
                self._fail_put(op_id, op, "write quorum unreachable", out)
                return
        if not op.pending:
            self._close(op_id, out)

    def _fail_put(self, op_id: int, op: _Put, why: str, out: list[Action]) -> None:
        applied: Literal["no", "unknown"] = (
            "unknown" if op.dot is not None or op.asking is not None else "no"
        )
        op.answered = True
        self._count("put_failed")
        out.append(Respond(op.client, Failed(
            f"{why}: {_fewest(op.groups, op.acked)} of {op.w} acknowledgements", applied)))
        self._close(op_id, out)

    def _hint_missed(self, op: _Put) -> None:
        """A put is over: replicas that never acknowledged it (cut off, timed out) get a hint
        from this node, if it holds the key, so the write reaches them when they are back."""
        if op.dot is None or self.node_id not in op.acked:
            return
        for node in op.replicas:
            if node not in op.acked:
                self.hints.add(op.stand_ins.get(node, node), op.key)
                self._count("hints_for_missed_writes")

    # -- coordinating gets --

    def _start_get(self, event: ClientGet, out: list[Action]) -> None:
        r = self.cluster.r if event.r is None else event.r
        targets, _, groups = self._targets(event.key)
        op = _Get(event.request, event.key, r, groups)
        op_id = self._open(op, out)
        self._count("get")
        for node in targets:
            if node == self.node_id:
                try:
                    op.replies[node] = self.storage.get(event.key)
                except StorageError:
                    self._count("storage_errors")  # this replica does not answer
            else:
                op.pending.add(node)
                out.append(Send(node, ReadRequest(op_id, event.key)))
        self._progress_get(op_id, op, out)

    def _progress_get(self, op_id: int, op: _Get, out: list[Action]) -> None:
        if not op.answered and not op.repairing:
            if _fewest(op.groups, op.replies.keys()) >= op.r:
                op.merged = tuple(resolve(sync(*op.replies.values()), self.cluster.versioning))
                if self.cluster.read_repair == "blocking":
                    self._repair_before_answering(op_id, op, out)
                if not op.repairing:
                    self._answer_get(op, out)
            elif _fewest(op.groups, op.replies.keys() | op.pending) < op.r:
                op.answered = True
                self._count("get_failed")
                out.append(Respond(op.client, Failed(
                    f"read quorum unreachable: {_fewest(op.groups, op.replies.keys())} of "
                    f"{op.r} replies", "no")))
        if not op.pending and not op.repairing:
            self._close(op_id, out)

    def _answer_get(self, op: _Get, out: list[Action]) -> None:
        op.answered = True
        self._count("get_ok")
        out.append(Respond(op.client, Found(op.merged, join(op.merged))))

    def _repair_before_answering(self, op_id: int, op: _Get, out: list[Action]) -> None:
        """Blocking read repair: write the merge back to every replica that answered with less,
        and answer only when they all have it (so a later quorum read cannot see older)."""
        for node in self._stale(op):
            self._count("read_repairs")
            if node != self.node_id:
                op.repairing.add(node)
                out.append(Send(node, Replicate(op_id, op.key, op.merged)))
                continue
            try:
                self._merge(op.key, op.merged)
                op.replies[node] = list(op.merged)
            except StorageError:
                self._count("storage_errors")

    def _stale(self, op: _Get) -> list[str]:
        """The replicas whose reply was not the whole merge."""
        return [node for node, versions in op.replies.items()
                if canonical(versions) != list(op.merged)]

    def _repaired(self, op_id: int, op: _Get, peer: str, ok: bool, out: list[Action]) -> None:
        op.repairing.discard(peer)
        if ok:
            op.replies[peer] = list(op.merged)
        elif not op.answered:
            op.answered = True
            op.repairing.clear()
            self._count("get_failed")
            out.append(Respond(op.client, Failed(
                f"blocking read repair could not reach {peer}", "no")))
        self._progress_get(op_id, op, out)

    def _repair(self, op: _Get, out: list[Action]) -> None:
        """Read repair: send the merge of every reply to each replica that answered with less.

        Runs when a get has heard from every replica (or timed out), after the client has its
        answer, so it never delays one.
        """
        if len(op.replies) < 2:
            return
        op.merged = tuple(resolve(sync(*op.replies.values()), self.cluster.versioning))
        for node in self._stale(op):
            self._count("read_repairs")
            self._write_back(node, op.key, op.merged, None, out)

    def _write_back(self, node: str, key: bytes, versions: tuple[Version, ...],
                    hint_for: str | None, out: list[Action]) -> None:
        """Make ``node`` merge ``versions`` of ``key``, without waiting for it: this node
        merges them itself, another is sent them (a repair: nobody awaits the ack)."""
        if node != self.node_id:
            out.append(Send(node, Replicate(REPAIR_REQUEST, key, versions, hint_for)))
            return
        try:
            self._merge(key, versions, hint_for)
        except StorageError:
            self._count("storage_errors")

    # -- messages --

    def _received(self, peer: str, message: Message, now: Now, out: list[Action]) -> None:
        match message:
            case StampRequest(request, key, context, value, timestamp, hint_for):
                try:
                    dot, versions = self._stamp(key, context, value, timestamp, hint_for)
                except StorageError as exc:
                    self._count("storage_errors")
                    out.append(Send(peer, Rejected(request, str(exc))))
                else:
                    out.append(Send(peer, StampReply(request, key, dot, versions)))
            case Replicate(request, key, versions, hint_for):
                try:
                    self._merge(key, versions, hint_for)
                except StorageError as exc:
                    self._count("storage_errors")
                    out.append(Send(peer, Rejected(request, str(exc))))
                else:
                    out.append(Send(peer, ReplicateAck(request)))
            case ReadRequest(request, key):
                try:
                    out.append(Send(peer, ReadReply(request, tuple(self.storage.get(key)))))
                except StorageError as exc:
                    self._count("storage_errors")
                    out.append(Send(peer, Rejected(request, str(exc))))
            case StampReply(request, key, dot, versions):
                op = self._ops.get(request)
                if isinstance(op, _Put) and op.asking == peer and op.key == key:
                    self._stamped(request, op, peer, dot, versions, out)
                else:
                    self._count("late_replies")
                    self._spread_late_stamp(peer, key, versions, out)
            case ReplicateAck(request) if request == REPAIR_REQUEST:
                self._count("repairs_acked")
            case ReplicateAck(request) if request in self._handoffs:
                self._handed_off(request)
            case ReplicateAck(request) if isinstance(op := self._ops.get(request), _Get):
                if peer in op.repairing:
                    self._repaired(request, op, peer, True, out)
            case ReplicateAck(request):
                op = self._ops.get(request)
                if isinstance(op, _Put) and peer in op.pending:
                    op.pending.discard(peer)
                    op.acked.add(peer)
                    self._progress_put(request, op, out)
                else:
                    self._count("late_replies")
            case ReadReply(request, versions):
                op = self._ops.get(request)
                if isinstance(op, _Get) and peer in op.pending:
                    op.pending.discard(peer)
                    op.replies[peer] = list(versions)
                    self._progress_get(request, op, out)
                else:
                    self._count("late_replies")
            case Rejected(request) if self._pulls and request in self._pulls.sources:
                self._pull_failed(request, "refused", out)
            case Rejected(request):
                self._lost(peer, request, out)
            case Gossip(entries, records):
                self._changed(self.membership.merge(peer, entries, now.monotonic), now, out)
                self._merge_records(records, now)
            case ProbeRequest(request, target):
                self._next_op += 1
                self._probes[self._next_op] = (peer, request, target)
                out.append(Send(target, Probe(self._next_op)))
                out.append(StartTimer(("probe", self._next_op),
                                      self.cluster.probe_timeout_ms / 1000))
            case Probe(request):
                out.append(Send(peer, ProbeAck(request)))
            case ProbeAck(request):
                self._probe_answered(request, True, out)
            case ProbeResult(_, target, reachable):
                self._changed(self.membership.probe_result(target, reachable, peer), now, out)
            case TreeLevel(origin, session, level, hashes) if origin in (peer, self.node_id):
                self._compare_level(peer, (origin, session), level, hashes, now, out)
            case LeafKeys(origin, session, leaves, keys) if origin == peer:
                self._compare_keys(peer, session, leaves, dict(keys), out)
            case KeyRequest(_, keys):
                for key in keys:
                    self._send_versions(peer, key, out)
            case StreamRequest(request, digest, unreachable, after):
                self._send_batch(peer, request, digest, frozenset(unreachable), after, now,
                                 out)
            case StreamBatch(request, items, cursor):
                self._pulled(peer, request, items, cursor, now, out)
            case _:
                self._count("unexpected_messages")

    def _undeliverable(self, peer: str, message: Message, out: list[Action]) -> None:
        match message:
            case StreamRequest(request):
                self._pull_failed(request, "unreachable", out)
            case StampRequest(request) | Replicate(request) | ReadRequest(request):
                self._count("undeliverable")
                self._lost(peer, request, out)
            case Probe(request):
                self._probe_answered(request, False, out)

    def _lost(self, peer: str, request: int, out: list[Action]) -> None:
        """``peer`` will never answer ``request``: it refused it, or it never got it."""
        if self._handoffs.pop(request, None) is not None:
            return  # the hint stays; the next gossip round tries again
        op = self._ops.get(request)
        if isinstance(op, _Put):
            if op.asking == peer:
                op.asking = None
                self._ask_next_stamper(request, op, out)
            elif peer in op.pending:
                op.pending.discard(peer)
                self._progress_put(request, op, out)
        elif isinstance(op, _Get) and peer in op.repairing:
            self._repaired(request, op, peer, False, out)
        elif isinstance(op, _Get) and peer in op.pending:
            op.pending.discard(peer)
            self._progress_get(request, op, out)

    # -- joining and leaving --

    def leave(self, now: Now) -> Refused | None:
        """Start decommissioning this node: its keys move to the members that take them over,
        then its status turns ``left``. Returns why it cannot start, or None."""
        me = self.placement.records[self.node_id]
        if me.status == "leaving":
            return None
        if me.status == "left":
            return Refused(f"{self.node_id} has left already", later=False)
        if me.status == "joining" or self.placement.in_transition:
            changing = ", ".join(self.placement.changing())
            return Refused(f"another change is in progress ({changing}); try again when it "
                           f"completes", later=True)
        if len(self.placement.current) - 1 < self.cluster.n:
            return Refused(f"leaving would leave {len(self.placement.current) - 1} members, "
                           f"fewer than n={self.cluster.n}", later=False)
        self._set_mine(now, status="leaving")
        return None

    def _merge_records(self, records: tuple[Record, ...], now: Now) -> None:
        """Take in gossiped records; what others say of this node only raises its version."""
        mine = self.placement.records[self.node_id]
        others = [r for r in records if r.node_id != self.node_id]
        said = max((r.version for r in records if r.node_id == self.node_id), default=-1)
        merged = self.placement.merged(others)
        if said >= mine.version:  # e.g. a record from before this node's data was wiped
            merged = merged.with_record(replace(mine, version=said + 1))
        if merged is not self.placement:
            self._adopt(merged, now)

    def _adopt(self, placement: Placement, now: Now) -> None:
        """Use ``placement`` from now on; say so in this node's record (its ``view``)."""
        mine = placement.records[self.node_id]
        if mine.view != placement.digest:
            placement = placement.with_record(
                replace(mine, view=placement.digest, version=mine.version + 1))
        if placement.next != self.placement.next:
            self.shared.rebuild(placement.next)
            self._build_due = True
        if placement.digest != self.placement.digest:
            self._count("placement_changes")
            self._pull_failures.clear()
            if self._pulls is not None and self._pulls.digest != placement.digest:
                self._pulls = None  # replies to its requests are now late; timers find no round
        self.placement = placement
        self.membership.track(placement.members(), now.monotonic)

    def _set_mine(self, now: Now, **changes: Any) -> None:
        mine = self.placement.records[self.node_id]
        self._adopt(self.placement.with_record(
            replace(mine, version=mine.version + 1, **changes)), now)

    def _advance(self, now: Now, out: list[Action]) -> None:
        """Move a transition on (see :mod:`kvcheck.store.placement`): once every member not down
        uses it, pull the keys this node gains; once every gainer has them, switch this node's
        status if it is the one joining or leaving."""
        placement = self.placement
        if not placement.in_transition:
            return
        behind = [m for m in placement.members() if self.membership.state(m) != "down"
                  and placement.records[m].view != placement.digest]
        if behind:
            return
        gainers = placement.gainers
        mine = placement.records[self.node_id]
        if self.node_id in gainers and mine.streamed != placement.digest and self._pulls is None:
            self._start_pulls(out)
        if mine.status in ("joining", "leaving") and all(
                placement.records[g].streamed == placement.digest for g in gainers):
            self._count("joined" if mine.status == "joining" else "left")
            self._set_mine(now, status="normal" if mine.status == "joining" else "left")

    def _start_pulls(self, out: list[Action]) -> None:
        """Ask every reachable current member for the keys it should send this node."""
        current = [m for m in self.placement.current.members if m != self.node_id]
        unreachable = frozenset(m for m in current if self.membership.state(m) != "alive"
                                or m in self._pull_failures)
        sources = [m for m in current if m not in unreachable]
        if not sources:
            return
        pulls = self._pulls = PullRound(self.placement.digest, unreachable)
        for source in sources:
            self._next_op += 1
            pulls.sources[self._next_op] = source
            self._ask_for_batch(self._next_op, source, None, out)

    def _ask_for_batch(self, request: int, source: str, after: bytes | None,
                       out: list[Action]) -> None:
        assert self._pulls is not None
        out.append(Send(source, StreamRequest(request, self._pulls.digest,
                                              tuple(sorted(self._pulls.unreachable)), after)))
        out.append(StartTimer(("pull", request), PULL_TIMEOUT_S))

    def _send_batch(self, peer: str, request: int, digest: bytes,
                    unreachable: frozenset[str], after: bytes | None, now: Now,
                    out: list[Action]) -> None:
        """Be a source for ``peer``'s pull: the next keys it should get from this node, from
        the scan left open at ``after`` (or a new one)."""
        expired = now.monotonic - PULL_TIMEOUT_S
        self._source_scans = {k: v for k, v in self._source_scans.items() if v[1] >= expired}
        placement = self.placement
        if digest != placement.digest:
            self._source_scans.pop((peer, request), None)
            out.append(Send(peer, Rejected(request, "this node uses another placement")))
            return

        def wanted(key: bytes) -> bool:
            return placement.should_send(self.node_id, peer, key, unreachable)

        try:
            scan = self._source_scans.get((peer, request), (None, 0.0))[0]
            if scan is None or scan.cursor != after:
                scan = SourceScan(self.storage, after, wanted)
            items, cursor = scan.next_batch()
        except StorageError as exc:
            self._count("storage_errors")
            self._source_scans.pop((peer, request), None)
            out.append(Send(peer, Rejected(request, str(exc))))
            return
        if cursor is None:
            self._source_scans.pop((peer, request), None)
        else:
            self._source_scans[(peer, request)] = (scan, now.monotonic)
        self._count("stream_keys_sent", len(items))
        out.append(Send(peer, StreamBatch(request, items, cursor)))

    def _pulled(self, peer: str, request: int,
                items: tuple[tuple[bytes, tuple[Version, ...]], ...], cursor: bytes | None,
                now: Now, out: list[Action]) -> None:
        """A batch of a pull arrived: store it, then ask for the next one or finish."""
        pulls = self._pulls
        if pulls is None or pulls.sources.get(request) != peer:
            self._count("late_replies")
            return
        out.append(CancelTimer(("pull", request)))
        try:
            for key, versions in items:
                self._merge(key, versions)
        except StorageError:
            self._count("storage_errors")
            self._pull_failed(request, "refused", out)  # by this node's own storage
            return
        pulls.keys_received += len(items)
        self._count("stream_keys_received", len(items))
        if cursor is not None:
            self._ask_for_batch(request, peer, cursor, out)
            return
        del pulls.sources[request]
        if not pulls.sources:
            self._pulls = None
            self._set_mine(now, streamed=pulls.digest)

    def _pull_failed(self, request: int, why: Literal["refused", "unreachable", "silent"],
                     out: list[Action]) -> None:
        """A source refused, was unreachable or went silent: abandon the round; the next one
        counts that source unreachable, so others send what it alone would have."""
        pulls = self._pulls
        if pulls is None or request not in pulls.sources:
            return
        self._count("stream_sources_failed")
        self._count(f"stream_sources_{why}")
        self._pull_failures.add(pulls.sources[request])
        for other in pulls.sources:
            out.append(CancelTimer(("pull", other)))
        self._pulls = None

    # -- anti-entropy --

    def _start_antientropy(self, now: Now, out: list[Action]) -> None:
        """Compare the whole tree shared with one live peer; rounds rotate through peers."""
        out.append(StartTimer(ANTIENTROPY_TIMER, self.cluster.antientropy_interval_ms / 1000))
        expired = now.monotonic - ANTIENTROPY_SESSION_S
        self._sessions = {k: v for k, v in self._sessions.items() if v[1] >= expired}
        peers = [m for m in self.placement.members()
                 if m != self.node_id and self.membership.state(m) == "alive"]
        if not peers:
            return
        turn, self._next_ae_turn = self._next_ae_turn, self._next_ae_turn + 1
        self._open_session(peers[turn % len(peers)], False, now, out)

    def _schedule_session(self, peer: str, follow_up: bool, out: list[Action]) -> None:
        """Compare with ``peer`` soon (within ``CATCH_UP_S`` per session queued before it):
        a catch-up with a peer back from suspicion or down, or a follow-up."""
        if any(queued == peer for queued, _ in self._catch_up):
            return
        if not self._catch_up:
            out.append(StartTimer(CATCH_UP_TIMER, CATCH_UP_S))
        self._catch_up.append((peer, follow_up))

    def _catch_up_next(self, now: Now, out: list[Action]) -> None:
        """Open the next session :meth:`_schedule_session` queued."""
        peer, follow_up = self._catch_up.popleft()
        if self.membership.state(peer) == "alive":
            self._open_session(peer, follow_up, now, out)
        if self._catch_up:
            out.append(StartTimer(CATCH_UP_TIMER, CATCH_UP_S))

    def _open_session(self, peer: str, follow_up: bool, now: Now, out: list[Action]) -> None:
        """Send ``peer`` the root of the tree we share (when :meth:`_can_compare`)."""
        if not self._can_compare(peer):
            return
        self._next_op += 1
        self._sessions[self._next_op] = (peer, now.monotonic, follow_up)
        self._count("antientropy_rounds")
        self._count("antientropy_hashes_sent")
        out.append(Send(peer, TreeLevel(self.node_id, self._next_op, 0,
                                        ((0, self.shared.hash(peer, 0, 0)),))))

    def _can_compare(self, peer: str) -> bool:
        """Whether a session with ``peer`` can go on: not while the tree is being built, or when
        ``peer`` is not in the ring it is built for (a member leaving or joining), and not during
        a join or leave — the keys a gainer has yet to pull would all show as differences, and
        streaming them is the transition's own work."""
        if self.placement.in_transition:
            self._count("antientropy_paused")
            return False
        if not self.shared.ready_for(peer):
            self._count("antientropy_not_ready")
            return False
        return True

    def _build_step(self, out: list[Action]) -> None:
        """Build the shared trees a slice at a time (see :class:`SharedHashes`)."""
        try:
            done = self.shared.build_step(lambda where: self.storage.scan(where=where),
                                          BUILD_SLICE)
        except StorageError:
            self._count("storage_errors")
            self.shared.rebuild()
            out.append(StartTimer(BUILD_TIMER, BUILD_RETRY_S))
            return
        if done:
            self._count("antientropy_builds")
        else:
            out.append(StartTimer(BUILD_TIMER, 0.0))

    def _compare_level(self, peer: str, session: tuple[str, int], level: int,
                       hashes: tuple[tuple[int, bytes], ...], now: Now,
                       out: list[Action]) -> None:
        """The peer's hashes at ``level``: answer with ours below the nodes that differ; at the
        leaves (always reached by the session's opener), exchange the keys of those that
        differ (:meth:`_exchange_leaves`)."""
        origin, number = session
        ours = origin == self.node_id
        if ours and self._sessions.get(number, ("",))[0] != peer:
            self._count("late_replies")  # a session we forgot
            return
        if not 0 <= level <= DEPTH or level % 2 != ours:  # the opener gets the odd levels
            self._count("unexpected_messages")
            return
        if not self._can_compare(peer):
            return
        differing = sorted({i for i, h in hashes if 0 <= i < FANOUT ** level
                            and self.shared.hash(peer, level, i) != h})
        if not differing:
            if ours:
                del self._sessions[number]
                self._suspect.pop(peer, None)
            self._count("antientropy_in_sync")
        elif level < DEPTH:
            children = [(c, self.shared.hash(peer, level + 1, c))
                        for i in differing for c in range(i * FANOUT, (i + 1) * FANOUT)]
            self._count("antientropy_hashes_sent", len(children))
            out.append(Send(peer, TreeLevel(origin, number, level + 1, tuple(children))))
        else:
            self._exchange_leaves(peer, number, differing, out)

    def _exchange_leaves(self, peer: str, session: int, differing: list[int],
                         out: list[Action]) -> None:
        """End a session we opened: send ``peer`` our keys of the leaves that differ now and
        differed in the previous comparison too (a difference that lasts, not a write still
        on its way), at most ``LEAVES_PER_EXCHANGE``. Whatever is left — leaves to confirm,
        leaves over the limit — gets a follow-up session soon."""
        _, _, follow_up = self._sessions.pop(session)
        confirmed = [leaf for leaf in differing if leaf in self._suspect.get(peer, ())]
        exchanged = confirmed[:LEAVES_PER_EXCHANGE]
        self._suspect[peer] = set(differing) - set(exchanged)
        if len(confirmed) > len(exchanged) or (len(differing) > len(confirmed) and not follow_up):
            self._schedule_session(peer, True, out)
        if not exchanged:
            return
        try:
            keys = self._leaf_keys(peer, exchanged)
        except StorageError:
            self._count("storage_errors")
            return
        self._count("antientropy_keys_sent", len(keys))
        out.append(Send(peer, LeafKeys(self.node_id, session, tuple(exchanged),
                                       tuple(keys.items()))))

    def _compare_keys(self, peer: str, session: int, leaves: tuple[int, ...],
                      theirs: dict[bytes, bytes], out: list[Action]) -> None:
        """The peer's keys in leaves that differ: for every key on which we disagree, send our
        versions (tombstones included) and ask for theirs."""
        leaves = tuple(leaf for leaf in leaves if 0 <= leaf < LEAVES)[:LEAVES_PER_EXCHANGE]
        try:
            mine = self._leaf_keys(peer, leaves)
        except StorageError:
            self._count("storage_errors")
            return
        wanted = tuple(key for key in sorted(mine.keys() | theirs.keys())
                       if mine.get(key) != theirs.get(key))
        for key in wanted:
            self._send_versions(peer, key, out)
        if wanted:
            self._count("antientropy_keys_requested", len(wanted))
            out.append(Send(peer, KeyRequest(session, wanted)))

    def _leaf_keys(self, peer: str, leaves: Sequence[int]) -> dict[bytes, bytes]:
        """``key -> digest of its versions`` for the live keys in ``leaves`` that this node
        shares with ``peer``: one filtered scan of storage. Raises StorageError."""
        wanted = set(leaves)

        def shared(key: bytes) -> bool:
            return leaf_of(key) in wanted and peer in self.shared.peers_sharing(key)

        return {key: versions_digest(versions)
                for key, versions in self.storage.scan(where=shared) if live(versions)}

    def _send_versions(self, peer: str, key: bytes, out: list[Action]) -> None:
        try:
            versions = tuple(self.storage.get(key))
        except StorageError:
            self._count("storage_errors")
            return
        if versions:
            self._count("antientropy_repairs_sent")
            out.append(Send(peer, Replicate(REPAIR_REQUEST, key, versions)))

    # -- hinted handoff --

    def _hand_off(self, now: Now, out: list[Action]) -> None:
        """Send hinted writes to their owners that gossip shows alive, a batch at a time."""
        expired = now.monotonic - self.cluster.request_timeout_ms / 1000
        for handoff, (_, _, _, sent) in list(self._handoffs.items()):
            if sent < expired:
                del self._handoffs[handoff]
        in_flight = {(owner, key) for owner, key, _, _ in self._handoffs.values()}
        self._rehome_hints()
        for owner in self.hints.owners():
            if self.membership.state(owner) != "alive":
                continue
            for key, seq in self.hints.pending(owner)[:HANDOFF_BATCH]:
                if (owner, key) in in_flight:
                    continue
                try:
                    versions = tuple(self.storage.get(key))
                except StorageError:
                    self._count("storage_errors")
                    continue
                self._next_op += 1
                self._handoffs[self._next_op] = (owner, key, seq, now.monotonic)
                out.append(Send(owner, Replicate(self._next_op, key, versions)))

    def _rehome_hints(self) -> None:
        """Hints for a member that has left go to the key's replicas now, instead."""
        records = self.placement.records
        for owner in self.hints.owners():
            if owner in records and records[owner].status != "left":
                continue
            for key, seq in self.hints.pending(owner):
                for replica in self.placement.groups(key)[-1]:
                    if replica != self.node_id:
                        self.hints.add(replica, key)
                self.hints.done(owner, key, seq)
                self._count("hints_rehomed")

    def _handed_off(self, handoff: int) -> None:
        """The owner stored a hinted key: drop the hint, and the key if it is not ours."""
        owner, key, seq, _ = self._handoffs.pop(handoff)
        if not self.hints.done(owner, key, seq):
            return  # written again meanwhile: the newer hint goes next round
        self._count("hints_delivered")
        mine = self.placement.replicates(self.node_id, key)
        if not mine and not self.hints.holds(key):
            try:
                self._store(key, ())
            except StorageError:
                self._count("storage_errors")

    # -- gossip --

    def _gossip(self, now: Now, out: list[Action]) -> None:
        self._hand_off(now, out)
        self._advance(now, out)
        targets, entries = self.membership.gossip()
        records = tuple(self.placement.records.values())
        for peer in targets:
            out.append(Send(peer, Gossip(tuple(entries), records)))
        changes, probes = self.membership.check(now.monotonic)
        self._changed(changes, now, out)
        for helper, suspect in probes:
            self._next_op += 1
            out.append(Send(helper, ProbeRequest(self._next_op, suspect)))
        out.append(StartTimer(GOSSIP_TIMER, self._gossip_period))

    def _probe_answered(self, probe: int, reachable: bool, out: list[Action]) -> None:
        """Our probe on someone else's behalf got an answer (or surely never will)."""
        asked = self._probes.pop(probe, None)
        if asked is not None:
            asker, request, target = asked
            out.append(CancelTimer(("probe", probe)))
            out.append(Send(asker, ProbeResult(request, target, reachable)))

    def _changed(self, changes: list[Change], now: Now, out: list[Action]) -> None:
        """Record membership changes. A peer back from suspicion or down may have missed
        writes: compare trees with it soon (:meth:`_schedule_session`)."""
        for change in changes:
            self.membership_changes.append((now.wall_ms, change))
            self._count(f"members_marked_{change.state}")
            if change.state == "alive" and change.node_id != self.node_id:
                self._schedule_session(change.node_id, False, out)

    # -- timers --

    def _timer(self, timer: Timer, now: Now, out: list[Action]) -> None:
        kind, op_id = timer
        if kind == "request":
            op = self._ops.get(op_id)
            if op is None:
                return
            if not op.answered:
                if isinstance(op, _Put):
                    self._fail_put(op_id, op, "write timed out", out)
                    return
                op.answered = True
                self._count("get_failed")
                out.append(Respond(op.client, Failed(
                    f"read timed out: {_fewest(op.groups, op.replies.keys())} of {op.r} "
                    f"replies", "no")))
            self._close(op_id, out)
        elif kind == "probe":
            self._probe_answered(op_id, False, out)
        elif kind == "pull":
            self._pull_failed(op_id, "silent", out)
        elif timer == GOSSIP_TIMER:
            self._gossip(now, out)
        elif timer == ANTIENTROPY_TIMER:
            self._start_antientropy(now, out)
        elif timer == CATCH_UP_TIMER:
            self._catch_up_next(now, out)
        elif timer == BUILD_TIMER:
            self._build_step(out)
        elif timer == SYNC_TIMER:
            try:
                self.storage.sync()
            except StorageError:
                self._count("storage_errors")
            out.append(StartTimer(SYNC_TIMER, self.cluster.fsync_interval_ms / 1000))
        elif timer == PURGE_TIMER:
            purged = self.storage.purge_tombstones(now.wall_ms - self.cluster.tombstone_grace_ms)
            self._count("tombstones_purged", purged)
            out.append(StartTimer(PURGE_TIMER, self._purge_period))

    # -- replica side --

    def _stamp(
        self, key: bytes, context: Clock, value: bytes | None, timestamp: int,
        hint_for: str | None = None,
    ) -> tuple[Dot, tuple[Version, ...]]:
        local = self.storage.get(key)
        version, versions = stamp(self.actor, local, context, value, timestamp,
                                  self.cluster.vclock_max_entries)
        kept = tuple(resolve(versions, self.cluster.versioning))
        self._store(key, kept, local)
        if hint_for is not None:
            self.hints.add(hint_for, key)
        return version.dot, kept

    def _merge(self, key: bytes, versions: tuple[Version, ...],
               hint_for: str | None = None) -> None:
        local = self.storage.get(key)
        merged = resolve(sync(local, versions), self.cluster.versioning)
        if merged != canonical(local):
            self._store(key, merged, local)
        if hint_for is not None:
            self.hints.add(hint_for, key)

    def _store(self, key: bytes, versions: Sequence[Version],
               old: Sequence[Version] | None = None) -> None:
        """Replace the key's sibling set: the only way node logic changes storage, so that the
        anti-entropy trees follow every change. ``old`` is the set it replaces (None: read it
        if the trees need it). Raises StorageError; then nothing changed."""
        if old is None and self.shared.peers_sharing(key):
            old = self.storage.get(key)
        self.storage.put(key, versions)
        self.shared.update(key, old or (), versions)

    # -- bookkeeping --

    @property
    def _gossip_period(self) -> float:
        return self.cluster.gossip_interval_ms / 1000

    @property
    def _purge_period(self) -> float:
        return min(60.0, max(1.0, self.cluster.tombstone_grace_ms / 2000))

    def _open(self, op: _Put | _Get, out: list[Action]) -> int:
        self._next_op += 1
        self._ops[self._next_op] = op
        out.append(StartTimer(("request", self._next_op), self.cluster.request_timeout_ms / 1000))
        return self._next_op

    def _close(self, op_id: int, out: list[Action]) -> None:
        op = self._ops.pop(op_id, None)
        if op is not None:
            out.append(CancelTimer(("request", op_id)))
            if isinstance(op, _Get):
                self._repair(op, out)
            else:
                self._hint_missed(op)

    def _count(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount


def _fewest(groups: tuple[tuple[str, ...], ...], nodes: Iterable[str]) -> int:
    """How many of ``nodes`` the group with fewest of them holds (quorums count per group)."""
    chosen = set(nodes)
    return min(sum(node in chosen for node in group) for group in groups)
