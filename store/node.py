"""The node: all protocol logic of one store node, free of I/O, composed of one part per concern.

Theory of operation
-------------------
A :class:`Node` is a state machine. A driver (the trio server, or the simulator) feeds it
*events* — a client request, a message from a peer, a message that could not be sent, a timer —
together with the current time, and carries out the *actions* it returns: send a message, answer
a client, start or cancel a timer (:mod:`kvcheck.store.events`; this module re-exports them).
The node never opens a socket, sleeps or reads a clock; its only side effect is the synchronous
:class:`~kvcheck.store.storage.Storage` it was given.

Any node coordinates any request (:mod:`kvcheck.store.coordinator`). For key ``k`` the replicas
are the ring's preference list of N distinct nodes — with sloppy quorums, the first N nodes along
the ring that gossip does not show down, where a *stand-in* holds a write with a hint for the
replica it replaces and hands it off when that replica is back. While a member joins or leaves,
a request needs its quorum in the key's preference lists of both the current and the next ring
(:mod:`kvcheck.store.placement`).

*Put* (a delete is a put of a tombstone) runs in two steps, as in Riak:

1. **Stamp.** One replica — this node if it is one, else the first replica it can reach — creates
   the new version: it reads its sibling set, stamps a new dot, drops what the client's context
   covers, stores the result and returns it (:mod:`kvcheck.store.replica`).
2. **Replicate.** The coordinator sends that sibling set to the other N-1 replicas, which merge it
   into theirs. The put succeeds when W replicas (the stamper included) have stored it.

A put that supersedes none of a key's ``siblings_max`` siblings is refused by its stamper and
fails at once, unapplied (:class:`TooManySiblings`); merges are never refused.

*Get* asks all N replicas, answers after R replies with their merged siblings and the causal
context that covers them. Replicas that answered with less than the merge are sent it: *read
repair* — after the answer, or (``read_repair = "blocking"``) before it.

Beside requests, timers drive the background: gossip (:mod:`kvcheck.store.membership`) spreads
heartbeats and members' records and detects failures, with indirect probes that other nodes
relay (:mod:`kvcheck.store.probes`); hinted writes are handed off
(:mod:`kvcheck.store.handoff`); a join or leave moves on, pulling the keys this node gains
(:mod:`kvcheck.store.streaming`); and anti-entropy (:mod:`kvcheck.store.antientropy_sessions`)
compares Merkle trees (:mod:`kvcheck.store.antientropy`) with one peer a round.

A request that cannot gather its quorum fails, after ``request_timeout_ms`` or as soon as too
many replicas are known to be unreachable. A failed put says whether it may have been applied:
``applied="no"`` only when no replica can have stored the version (every stamp request was
refused or never left this node), ``"unknown"`` otherwise — the write is *indeterminate*, and
may surface later.

The parts
---------
Each concern is a part of its own, owning its state; the node composes them, routes every event
to the part it concerns, and keeps the layout itself:

====================  ==========================  ==============================================
part                  module                      owns
====================  ==========================  ==============================================
coordinator           ``coordinator``             the requests it coordinates, by request id
replica               ``replica``                 the storage: stamps, merges, reads, and the one
                                                  place storage errors are handled
hinted handoff        ``handoff``                 the handoffs in flight, by handoff id
anti-entropy          ``antientropy_sessions``    the sessions it opened, by session id; the
                                                  build of the trees
range streaming       ``streaming``               its pull round, by pull id; the scans it serves
probe relay           ``probes``                  the probes it sends for others, by probe id
gossip, failures      ``membership``              each member's heartbeat and state
layout, joins/leaves  ``placement``, this module  the members' records; moving a transition on
====================  ==========================  ==============================================

What they share — the node's id, the cluster's settings, the placement in use, the membership
view, the counters and the id minter — is a :class:`~kvcheck.store.context.Context`.

A peer's request is routed by its type. A reply carries only the id it answers: the id's kind
(:mod:`kvcheck.store.ids`) names the part that minted it, which looks it up in its own table; an
id no table holds is late (``late_replies``). A timer names its owner by its type
(:class:`RequestTimeout`, :class:`ProbeTimeout`, :class:`PullTimeout`; :class:`Tick` for the
recurring ones).
"""

from __future__ import annotations

import random
from collections import Counter, deque
from dataclasses import replace
from typing import Any

from kvcheck.store.antientropy import SharedHashes
from kvcheck.store.antientropy_sessions import AntiEntropy
from kvcheck.store.config import ClusterConfig
from kvcheck.store.context import Context
from kvcheck.store.coordinator import Coordinator
from kvcheck.store.events import (
    Action,
    CancelTimer,
    ClientGet,
    ClientPut,
    Event,
    Failed,
    Found,
    Now,
    ProbeTimeout,
    PullTimeout,
    Received,
    Refused,
    RequestTimeout,
    Respond,
    Response,
    Send,
    StartTimer,
    Tick,
    Timer,
    TimerFired,
    TooManySiblings,
    Undeliverable,
    Written,
)
from kvcheck.store.handoff import Handoff
from kvcheck.store.hints import Hints
from kvcheck.store.ids import REPAIR_REQUEST, HandoffId, Kind, ProbeId, PullId, RequestId, kind_of
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
    StampRefused,
    StampReply,
    StampRequest,
    StreamBatch,
    StreamRequest,
    TreeLevel,
)
from kvcheck.store.placement import Placement, Record
from kvcheck.store.probes import ProbeRelay
from kvcheck.store.replica import Replica
from kvcheck.store.ring import Ring
from kvcheck.store.storage import Storage
from kvcheck.store.streaming import Streaming

__all__ = [
    "Action", "CancelTimer", "ClientGet", "ClientPut", "Event", "Failed", "Found", "Node", "Now",
    "ProbeTimeout", "PullTimeout", "Received", "Refused", "RequestTimeout", "Respond",
    "Response", "Send", "StartTimer", "Tick", "Timer", "TimerFired", "TooManySiblings",
    "Undeliverable", "Written",
]


class Node:
    """One node's protocol logic. See the module docstring for how it runs.

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
        self.cluster = cluster
        self.hints = hints if hints is not None and "hints-in-memory" not in cluster.bugs \
            else Hints()
        self.context = Context(node_id, cluster, placement, Membership(
            node_id, placement.members(), generation=generation,
            suspect_after=cluster.suspect_after_ms / 1000,
            probe_timeout=cluster.probe_timeout_ms / 1000, fanout=cluster.gossip_fanout,
            rng=random.Random(actor)))
        #: Recent membership changes, newest last: (wall-clock ms, change).
        self.membership_changes: deque[tuple[int, Change]] = deque(maxlen=50)
        #: the Merkle trees shared with each peer, kept up to date by the replica
        self.shared = SharedHashes(node_id, placement.next, cluster.n)
        self.replica = Replica(actor, cluster, storage, self.hints, self.shared, self.counters)
        self.coordinator = Coordinator(self.context, self.replica, self.hints)
        self.handoff = Handoff(self.context, self.replica, self.hints)
        self.antientropy = AntiEntropy(self.context, self.replica, self.shared)
        self.streaming = Streaming(self.context, self.replica)
        self.probes = ProbeRelay(self.context)

    @property
    def placement(self) -> Placement:
        """The layout this node uses: every member's record."""
        return self.context.placement

    @property
    def membership(self) -> Membership:
        return self.context.membership

    @property
    def counters(self) -> Counter[str]:
        """Figures for ``/status``, by name."""
        return self.context.counters

    @property
    def ring(self) -> Ring:
        """The ring keys are headed for: the next one (the current one outside transitions)."""
        return self.placement.next

    # -- driver interface --

    def start(self, now: Now) -> list[Action]:
        """Actions to run once when the node starts: its periodic timers."""
        self.membership.begin(now.monotonic)
        self._adopt(self.placement, now)
        actions: list[Action] = [
            StartTimer(Tick.PURGE, self.replica.purge_period),
            StartTimer(Tick.GOSSIP, self._gossip_period),
            StartTimer(Tick.ANTIENTROPY, self.cluster.antientropy_interval_ms / 1000),
            StartTimer(Tick.BUILD, 0.0),
        ]
        if self.cluster.sync_period_s is not None:
            actions.append(StartTimer(Tick.SYNC, self.cluster.sync_period_s))
        return actions

    def handle(self, event: Event, now: Now) -> list[Action]:
        """Process one event; return what the driver must do. Never raises for peer input."""
        out: list[Action] = []
        match event:
            case ClientPut():
                self.coordinator.put(event, now, out)
            case ClientGet():
                self.coordinator.get(event, out)
            case Received(peer, message):
                self._received(peer, message, now, out)
            case Undeliverable(peer, message):
                self._undeliverable(peer, message, out)
            case TimerFired(timer):
                self._timer(timer, now, out)
        self.antientropy.resume_build(out)
        return out

    def status(self) -> dict[str, Any]:
        """Figures for ``/status``."""
        return {
            "requests_in_flight": self.coordinator.in_flight,
            "hints_pending": self.hints.counts(),
            "hint_log_errors": self.hints.log_errors,
            "placement": self.placement.status(),
            "pulling": self.streaming.status(),
            "counters": dict(sorted(self.counters.items())),
            "membership_changes": [
                {"wall_clock_ms": at, "node_id": c.node_id, "state": c.state, "reason": c.reason}
                for at, c in self.membership_changes],
        }

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

    # -- routing --

    def _received(self, peer: str, message: Message, now: Now, out: list[Action]) -> None:
        match message:
            case StampRequest() | Replicate() | ReadRequest():
                out.append(Send(peer, self.replica.answer(message)))
            case StampReply():
                self.coordinator.stamp_reply(peer, message, out)
            case StampRefused():
                self.coordinator.stamp_refused(peer, message, out)
            case ReadReply():
                self.coordinator.read_reply(peer, message, out)
            case ReplicateAck(request):
                self._acked(peer, request, out)
            case Rejected(request) if kind_of(request) is Kind.PULL:
                self.streaming.failed(PullId(request), "refused", out)
            case Rejected(request):
                self._lost(peer, request, out)
            case Gossip(entries, records):
                self._changed(self.membership.merge(peer, entries, now.monotonic), now, out)
                self._merge_records(records, now)
            case ProbeRequest():
                self.probes.relay(peer, message, out)
            case Probe():
                self.probes.answer(peer, message, out)
            case ProbeAck(request):
                self.probes.answered(ProbeId(request), True, out)
            case ProbeResult(_, target, reachable):
                self._changed(self.membership.probe_result(target, reachable, peer), now, out)
            case TreeLevel():
                self.antientropy.tree_level(peer, message, out)
            case LeafKeys():
                self.antientropy.leaf_keys(peer, message, out)
            case KeyRequest():
                self.antientropy.key_request(peer, message, out)
            case StreamRequest():
                self.streaming.serve(peer, message, now, out)
            case StreamBatch():
                streamed = self.streaming.pulled(peer, message, out)
                if streamed is not None:
                    self._set_mine(now, streamed=streamed)
            case _:
                self.counters["unexpected_messages"] += 1

    def _undeliverable(self, peer: str, message: Message, out: list[Action]) -> None:
        match message:
            case StreamRequest(request):
                self.streaming.failed(PullId(request), "unreachable", out)
            case StampRequest(request) | Replicate(request) | ReadRequest(request):
                self.counters["undeliverable"] += 1
                self._lost(peer, request, out)
            case Probe(request):
                self.probes.answered(ProbeId(request), False, out)

    def _acked(self, peer: str, request: int, out: list[Action]) -> None:
        """``peer`` stored the versions ``request`` sent it: tell the part that sent them."""
        match kind_of(request):
            case Kind.REQUEST:
                self.coordinator.acked(peer, RequestId(request), out)
            case Kind.HANDOFF:
                self.handoff.acked(HandoffId(request))
            case _ if request == REPAIR_REQUEST:
                self.counters["repairs_acked"] += 1
            case _:
                self.counters["late_replies"] += 1

    def _lost(self, peer: str, request: int, out: list[Action]) -> None:
        """``peer`` will never answer ``request``: it refused it, or it never got it."""
        match kind_of(request):
            case Kind.REQUEST:
                self.coordinator.lost(peer, RequestId(request), out)
            case Kind.HANDOFF:
                self.handoff.lost(HandoffId(request))

    def _timer(self, timer: Timer, now: Now, out: list[Action]) -> None:
        match timer:
            case RequestTimeout(request):
                self.coordinator.timed_out(request, out)
            case ProbeTimeout(probe):
                self.probes.answered(probe, False, out)
            case PullTimeout(pull):
                self.streaming.failed(pull, "silent", out)
            case Tick.GOSSIP:
                self._gossip(now, out)
            case Tick.ANTIENTROPY:
                self.antientropy.round(now, out)
            case Tick.CATCH_UP:
                self.antientropy.open_planned(now, out)
            case Tick.BUILD:
                self.antientropy.build_step(out)
            case Tick.SYNC:
                self.replica.sync(out)
            case Tick.PURGE:
                self.replica.purge(now, out)

    # -- gossip --

    def _gossip(self, now: Now, out: list[Action]) -> None:
        self.handoff.hand_off(now, out)
        self._advance(now, out)
        targets, entries = self.membership.gossip()
        records = tuple(self.placement.records.values())
        for peer in targets:
            out.append(Send(peer, Gossip(tuple(entries), records)))
        changes, probes = self.membership.check(now.monotonic)
        self._changed(changes, now, out)
        for helper, suspect in probes:
            self.probes.ask(helper, suspect, out)
        out.append(StartTimer(Tick.GOSSIP, self._gossip_period))

    def _changed(self, changes: list[Change], now: Now, out: list[Action]) -> None:
        """Record membership changes. A peer back from suspicion or down may have missed
        writes: compare trees with it soon."""
        for change in changes:
            self.membership_changes.append((now.wall_ms, change))
            self.counters[f"members_marked_{change.state}"] += 1
            if change.state == "alive" and change.node_id != self.node_id:
                self.antientropy.plan(change.node_id, False, out)

    @property
    def _gossip_period(self) -> float:
        return self.cluster.gossip_interval_ms / 1000

    # -- the layout: joining and leaving --

    def _merge_records(self, records: tuple[Record, ...], now: Now) -> None:
        """Take in gossiped records. What others say of this node only raises its version, and
        only when it is not this node's record as it stands: one from before this node's data
        was wiped, at the version this node has reached again or past it."""
        mine = self.placement.records[self.node_id]
        others = [r for r in records if r.node_id != self.node_id]
        said = max((r.version for r in records if r.node_id == self.node_id
                    and r != mine and r.version >= mine.version), default=None)
        merged = self.placement.merged(others)
        if said is not None:
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
            self.antientropy.ring_changed(placement.next)
        if placement.digest != self.placement.digest:
            self.counters["placement_changes"] += 1
            self.streaming.adopted(placement.digest)
        self.context.placement = placement
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
        if self.node_id in gainers and mine.streamed != placement.digest:
            self.streaming.pull(out)
        if mine.status in ("joining", "leaving") and all(
                placement.records[g].streamed == placement.digest for g in gainers):
            self.counters["joined" if mine.status == "joining" else "left"] += 1
            self._set_mine(now, status="normal" if mine.status == "joining" else "left")
