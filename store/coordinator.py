"""Coordinating puts and gets: how a request runs (the overview is in :mod:`kvcheck.store.node`).

**Targets.** A request for a key goes to its preference list — in a transition, to its lists in
both the current and the next ring, each a *group* that must reach the quorum on its own
(:meth:`Coordinator.targets`). With sloppy quorums each replica that gossip shows down is
replaced, in the request and in its groups, by the next node along the ring that is up: a
*stand-in*, which keeps a hint for the replica it replaces.

**Put.** The replicas are asked to stamp one at a time, this node first if it is one, then those
the failure detector believes alive, until one does (a replica that refuses or cannot be reached
passes the turn on); the sibling set it returns
is replicated to the others, and the put answers once W replicas of every group hold it. A
stamper that refuses the write at the sibling cap (:mod:`kvcheck.store.replica`) ends the put at
once: it fails, surely not applied, and no other replica is asked. When
the put is over, every replica that never acknowledged it gets a hint from this node, if this
node holds the key. A stamp that comes back after its put was given up on is spread to the key's
other replicas, as a read repair would.

**Get.** Every replica is asked (this node reads its own storage at once); the get answers with
the merge once R replicas of every group have replied. Read repair runs when every replica has
replied or the request timed out, without waiting for acknowledgements; a blocking one writes
the merge back to the stale replicas of the read quorum before answering, and fails the get if
one of them cannot take it.

A request fails after ``request_timeout_ms``, or as soon as the replicas it may still hear from
cannot make its quorum any more. If starting a request raises (a bug), the request is forgotten
before the exception goes on: its timer went with the actions the exception dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from kvcheck.store.context import Context
from kvcheck.store.events import (
    Action,
    CancelTimer,
    ClientGet,
    ClientPut,
    Failed,
    Found,
    Now,
    RequestTimeout,
    Respond,
    Send,
    StartTimer,
    TooManySiblings,
    Written,
)
from kvcheck.store.hints import Hints
from kvcheck.store.ids import REPAIR_REQUEST, RequestId
from kvcheck.store.messages import (
    ReadReply,
    ReadRequest,
    Replicate,
    StampRefused,
    StampReply,
    StampRequest,
)
from kvcheck.store.replica import AtSiblingCap, Replica, Stamped, Unavailable
from kvcheck.store.versions import Clock, Dot, Version, canonical, join, resolve, sync

Groups = tuple[tuple[str, ...], ...]


def _swapped(groups: Groups, lost: str, stand_in: str) -> Groups:
    """``groups`` with ``stand_in`` in ``lost``'s place."""
    return tuple(tuple(stand_in if node == lost else node for node in group)
                 for group in groups)


@dataclass(frozen=True, slots=True)
class Targets:
    """Where a request for a key goes: ``nodes`` in preference order, ``stand_ins`` (stand-in
    -> the replica it replaces) and the ``groups`` it needs a quorum in."""

    nodes: tuple[str, ...]
    stand_ins: dict[str, str]
    groups: Groups


@dataclass(slots=True)
class _Put:
    id: RequestId
    client: int
    key: bytes
    value: bytes | None
    context: Clock
    timestamp: int
    w: int
    targets: Targets
    candidates: list[str]  # replicas not yet asked to stamp, in preference order
    asking: str | None = None  # the replica asked to stamp, awaiting its reply
    dot: Dot | None = None
    versions: tuple[Version, ...] = ()
    acked: set[str] = field(default_factory=set)
    pending: set[str] = field(default_factory=set)
    answered: bool = False
    refused_here: str | None = None  # why this node's own storage refused to stamp it


@dataclass(slots=True)
class _Get:
    id: RequestId
    client: int
    key: bytes
    r: int
    groups: Groups  # R replies are needed from each
    asked: set[str]  # every node asked for its copy, stand-ins after a refusal included
    replies: dict[str, list[Version]] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)
    answered: bool = False
    merged: tuple[Version, ...] = ()
    repairing: set[str] = field(default_factory=set)  # blocking read repair awaits their acks


class Coordinator:
    """The requests this node coordinates, by id, from the client's request to the last
    acknowledgement."""

    def __init__(self, context: Context, replica: Replica, hints: Hints) -> None:
        self._context = context
        self._replica = replica
        self._hints = hints
        self._requests: dict[RequestId, _Put | _Get] = {}

    @property
    def in_flight(self) -> int:
        return len(self._requests)

    def targets(self, key: bytes) -> Targets:
        """The nodes a request for ``key`` goes to (see the module docstring). Sloppy: the
        preferred members that are not down, then for each one that is, the next node along
        the ring that is up, which takes its place in the groups."""
        placement = self._context.placement
        groups = placement.groups(key)
        preferred = tuple(dict.fromkeys(node for group in groups for node in group))
        if not self._context.cluster.sloppy_quorum:
            return Targets(preferred, {}, groups)
        up = self._context.membership.up()
        down = [node for node in preferred if node not in up]
        if not down:
            return Targets(preferred, {}, groups)
        spare = [node for node in placement.next.walk(key) if node not in preferred and node in up]
        stand_ins = dict(zip(spare, down, strict=False))
        standing_in = {replaced: stand_in for stand_in, replaced in stand_ins.items()}
        nodes = [node for node in preferred if node not in standing_in]
        groups = tuple(tuple(standing_in.get(node, node) for node in group) for group in groups)
        return Targets((*nodes, *stand_ins), stand_ins, groups)

    # -- events --

    def put(self, event: ClientPut, now: Now, out: list[Action]) -> None:
        """Start a client's put (or delete)."""
        cluster = self._context.cluster
        targets = self.targets(event.key)
        op = _Put(self._context.ids.request(), event.request, event.key, event.value,
                  event.context, now.wall_ms, cluster.w if event.w is None else event.w,
                  targets, sorted(targets.nodes, key=self._stamper_rank))
        with self._opened(op, out):
            self._context.counters["put"] += 1
            self._ask_next_stamper(op, out)

    def _stamper_rank(self, node: str) -> int:
        """Who is asked to stamp a put first: this node, then the replicas the failure detector
        believes alive, then those it suspects, then those it believes down (a stamper that
        cannot be reached holds the put up until it times out)."""
        if node == self._context.node_id:
            return 0
        return _STAMPER_ORDER[self._context.membership.state(node)]

    def get(self, event: ClientGet, out: list[Action]) -> None:
        """Start a client's get: ask every replica, this node's own storage at once."""
        r = self._context.cluster.r if event.r is None else event.r
        targets = self.targets(event.key)
        op = _Get(self._context.ids.request(), event.request, event.key, r, targets.groups,
                  set(targets.nodes))
        with self._opened(op, out):
            self._context.counters["get"] += 1
            for node in targets.nodes:
                self._ask(op, node, out)
            self._progress_get(op, out)

    def _ask(self, op: _Get, node: str, out: list[Action]) -> None:
        """Ask ``node`` for its copy of the get's key; this node reads its own at once."""
        if node == self._context.node_id:
            versions = self._replica.read(op.key)
            if not isinstance(versions, Unavailable):
                op.replies[node] = versions  # else this replica does not answer
        else:
            op.pending.add(node)
            out.append(Send(node, ReadRequest(op.id, op.key)))

    def stamp_reply(self, peer: str, reply: StampReply, out: list[Action]) -> None:
        op = self._requests.get(RequestId(reply.request))
        if isinstance(op, _Put) and op.asking == peer and op.key == reply.key:
            self._stamped(op, peer, Stamped(reply.dot, reply.versions), out)
        else:
            self._context.counters["late_replies"] += 1
            self._spread_late_stamp(peer, reply.key, reply.versions, out)

    def stamp_refused(self, peer: str, reply: StampRefused, out: list[Action]) -> None:
        """``peer`` refused to stamp a put at the sibling cap: the put fails."""
        op = self._requests.get(RequestId(reply.request))
        if isinstance(op, _Put) and op.asking == peer:
            self._refuse_put(op, reply.siblings, out)
        else:
            self._context.counters["late_replies"] += 1

    def read_reply(self, peer: str, reply: ReadReply, out: list[Action]) -> None:
        op = self._requests.get(RequestId(reply.request))
        if isinstance(op, _Get) and peer in op.pending:
            op.pending.discard(peer)
            op.replies[peer] = list(reply.versions)
            self._progress_get(op, out)
        else:
            self._context.counters["late_replies"] += 1

    def acked(self, peer: str, request: RequestId, out: list[Action]) -> None:
        """``peer`` stored what request ``request`` sent it (a put's replication, or a
        blocking read repair)."""
        op = self._requests.get(request)
        if isinstance(op, _Get):
            if peer in op.repairing:
                self._repaired(op, peer, True, out)
        elif isinstance(op, _Put) and peer in op.pending:
            op.pending.discard(peer)
            op.acked.add(peer)
            self._progress_put(op, out)
        else:
            self._context.counters["late_replies"] += 1

    def lost(self, peer: str, request: RequestId, out: list[Action]) -> None:
        """``peer`` will never answer ``request``: it refused it, or it never got it."""
        op = self._requests.get(request)
        if isinstance(op, _Put):
            if op.asking == peer:
                op.asking = None
                self._ask_next_stamper(op, out)
            elif peer in op.pending:
                op.pending.discard(peer)
                if self._context.cluster.sloppy_quorum:
                    self._stand_in_for(op, peer, out)
                self._progress_put(op, out)
        elif isinstance(op, _Get) and peer in op.repairing:
            self._repaired(op, peer, False, out)
        elif isinstance(op, _Get) and peer in op.pending:
            op.pending.discard(peer)
            if self._context.cluster.sloppy_quorum:
                self._read_stand_in_for(op, peer, out)
            self._progress_get(op, out)

    def timed_out(self, request: RequestId, out: list[Action]) -> None:
        """The request's timeout fired: it fails unless answered; either way it is over."""
        op = self._requests.get(request)
        if op is None:
            return
        if not op.answered:
            if isinstance(op, _Put):
                self._fail_put(op, "write timed out", out)
                return
            op.answered = True
            self._context.counters["get_failed"] += 1
            out.append(Respond(op.client, Failed(
                f"read timed out: {_fewest(op.groups, op.replies.keys())} of {op.r} replies",
                "no")))
        self._close(op, out)

    # -- puts --

    def _ask_next_stamper(self, op: _Put, out: list[Action]) -> None:
        while op.candidates:
            stamper = op.candidates.pop(0)
            hint_for = op.targets.stand_ins.get(stamper)
            if stamper != self._context.node_id:
                op.asking = stamper
                out.append(Send(stamper, StampRequest(op.id, op.key, op.context, op.value,
                                                      op.timestamp, hint_for)))
                return
            stamped = self._replica.stamp(op.key, op.context, op.value, op.timestamp, hint_for)
            if isinstance(stamped, AtSiblingCap):
                self._refuse_put(op, stamped.siblings, out)
                return
            if not isinstance(stamped, Unavailable):
                self._stamped(op, stamper, stamped, out)
                return
            op.refused_here = stamped.reason
        self._fail_put(op, "no replica could stamp the write", out)

    def _stand_in_for(self, op: _Put, lost: str, out: list[Action]) -> None:
        """Sloppy: ``lost`` refused the put's replication (it is down, though the failure
        detector may not know yet), so the next node along the ring that is up and not yet
        asked takes its place (:meth:`_next_stand_in`), with a hint for the replica ``lost``
        held (or stood in for), as Dynamo's coordinator does. Nothing changes if there is no
        such node.

        ``lost`` keeps its entry in ``stand_ins`` if it was a stand-in, so that when the put
        ends its missed write is hinted for the replica it stood in for, never for itself."""
        stand_in = self._next_stand_in(op.key, set(op.targets.nodes))
        if stand_in is None:
            return
        replaced = op.targets.stand_ins.get(lost, lost)
        op.targets = Targets((*op.targets.nodes, stand_in),
                             {**op.targets.stand_ins, stand_in: replaced},
                             _swapped(op.targets.groups, lost, stand_in))
        if stand_in != self._context.node_id:
            op.pending.add(stand_in)
            out.append(Send(stand_in, Replicate(op.id, op.key, op.versions, replaced)))
        elif self._replica.merge(op.key, op.versions, replaced):
            op.acked.add(stand_in)

    def _read_stand_in_for(self, op: _Get, lost: str, out: list[Action]) -> None:
        """Sloppy: ``lost`` refused the get, so the next node along the ring that is up and
        not yet asked is asked in its place, as a put's replication would have gone there."""
        stand_in = self._next_stand_in(op.key, op.asked)
        if stand_in is None:
            return
        op.asked.add(stand_in)
        op.groups = _swapped(op.groups, lost, stand_in)
        self._ask(op, stand_in, out)

    def _next_stand_in(self, key: bytes, asked: set[str]) -> str | None:
        """The first node along ``key``'s ring walk that is up and not in ``asked``."""
        up = self._context.membership.up()
        stand_in = next((node for node in self._context.placement.next.walk(key)
                         if node not in asked and node in up), None)
        if stand_in is not None:
            self._context.counters["stand_ins_after_refusal"] += 1
        return stand_in

    def _refuse_put(self, op: _Put, siblings: int, out: list[Action]) -> None:
        """The stamper refused the put at the sibling cap: it fails at once, surely not applied
        (no replica stamped it: those asked before refused it or never had it)."""
        op.asking = None
        op.answered = True
        self._context.counters["siblings_refused"] += 1
        out.append(Respond(op.client, TooManySiblings(siblings,
                                                      self._context.cluster.siblings_max)))
        self._close(op, out)

    def _stamped(self, op: _Put, stamper: str, stamped: Stamped, out: list[Action]) -> None:
        op.asking = None
        op.dot, op.versions = stamped.dot, stamped.versions
        op.acked.add(stamper)
        others = [node for node in op.targets.nodes if node != stamper]  # in preference order
        op.pending = set(others)
        for node in others:
            hint_for = op.targets.stand_ins.get(node)
            if node != self._context.node_id:
                out.append(Send(node, Replicate(op.id, op.key, op.versions, hint_for)))
                if "ack-when-sent" in self._context.cluster.bugs:
                    op.acked.add(node)
            elif self._replica.merge(op.key, op.versions, hint_for):
                op.acked.add(node)
        op.pending -= op.acked
        self._progress_put(op, out)

    def _progress_put(self, op: _Put, out: list[Action]) -> None:
        if not op.answered:
            if _fewest(op.targets.groups, op.acked) >= op.w:
                op.answered = True
                self._context.counters["put_ok"] += 1
                if len(op.versions) > self._context.cluster.siblings_warning:
                    self._context.counters["siblings_warnings"] += 1
                # In lww mode a newer version may already have beaten the one written.
                written = [v for v in op.versions if v.dot == op.dot] or op.versions
                out.append(Respond(op.client, Written(join(written), len(op.versions))))
            elif _fewest(op.targets.groups, op.acked | op.pending) < op.w:
                self._fail_put(op, "write quorum unreachable", out)
                return
        if not op.pending:
            self._close(op, out)

    def _fail_put(self, op: _Put, why: str, out: list[Action]) -> None:
        applied: Literal["no", "unknown"] = (
            "unknown" if op.dot is not None or op.asking is not None else "no"
        )
        op.answered = True
        self._context.counters["put_failed"] += 1
        here = f" ({self._context.node_id}: {op.refused_here})" if op.refused_here else ""
        out.append(Respond(op.client, Failed(
            f"{why}: {_fewest(op.targets.groups, op.acked)} of {op.w} acknowledgements{here}",
            applied)))
        self._close(op, out)

    def _hint_missed(self, op: _Put) -> None:
        """A put is over: replicas that never acknowledged it (cut off, timed out) get a hint
        from this node, if it holds the key, so the write reaches them when they are back."""
        if op.dot is None or self._context.node_id not in op.acked:
            return
        for node in op.targets.nodes:
            if node not in op.acked and self._replica.hint(op.targets.stand_ins.get(node, node),
                                                           op.key):
                self._context.counters["hints_for_missed_writes"] += 1

    def _spread_late_stamp(self, stamper: str, key: bytes, versions: tuple[Version, ...],
                           out: list[Action]) -> None:
        """A stamp that came back after its put was given up on — the request sat behind a
        partition, in a connection that delivered it after the heal. Nobody else would ever
        replicate it: send it to the key's other replicas now, as a read repair would."""
        self._context.counters["late_stamps_spread"] += 1
        targets = self.targets(key)
        for node in targets.nodes:
            if node != stamper:
                self._write_back(node, key, versions, targets.stand_ins.get(node), out)

    # -- gets --

    def _progress_get(self, op: _Get, out: list[Action]) -> None:
        if not op.answered and not op.repairing:
            if self._replies_counted(op) >= op.r:
                op.merged = self._merge(op)
                if self._context.cluster.read_repair == "blocking":
                    self._repair_before_answering(op, out)
                if not op.repairing and not op.answered:  # a failed repair answered it
                    op.answered = True
                    self._context.counters["get_ok"] += 1
                    out.append(Respond(op.client, Found(op.merged, join(op.merged))))
            elif _fewest(op.groups, op.replies.keys() | op.pending) < op.r:
                op.answered = True
                self._context.counters["get_failed"] += 1
                out.append(Respond(op.client, Failed(
                    f"read quorum unreachable: {_fewest(op.groups, op.replies.keys())} of "
                    f"{op.r} replies", "no")))
        if not op.pending and not op.repairing:
            self._close(op, out)

    def _replies_counted(self, op: _Get) -> int:
        replies = _fewest(op.groups, op.replies.keys())
        if "count-own-read-twice" in self._context.cluster.bugs and \
                self._context.node_id in op.replies:
            replies += 1
        return replies

    def _merge(self, op: _Get) -> tuple[Version, ...]:
        return tuple(resolve(sync(*op.replies.values()), self._context.cluster.versioning))

    def _repair_before_answering(self, op: _Get, out: list[Action]) -> None:
        """Blocking read repair: write the merge back to every replica that answered with less,
        and answer only when they all have it (so a later quorum read cannot see older); if
        this node cannot store it, the read fails at once."""
        me = self._context.node_id
        stale = self._stale(op)
        self._context.counters["read_repairs"] += len(stale)
        if me in stale:
            if not self._replica.merge(op.key, op.merged):
                self._repaired(op, me, False, out)
                return
            op.replies[me] = list(op.merged)
        for node in stale:
            if node != me:
                op.repairing.add(node)
                out.append(Send(node, Replicate(op.id, op.key, op.merged)))

    def _stale(self, op: _Get) -> list[str]:
        """The replicas whose reply was not the whole merge."""
        return [node for node, versions in op.replies.items()
                if canonical(versions) != list(op.merged)]

    def _repaired(self, op: _Get, peer: str, ok: bool, out: list[Action]) -> None:
        op.repairing.discard(peer)
        if ok:
            op.replies[peer] = list(op.merged)
        elif not op.answered:
            op.answered = True
            op.repairing.clear()
            self._context.counters["get_failed"] += 1
            out.append(Respond(op.client, Failed(
                f"blocking read repair could not store the merge on {peer}", "no")))
        self._progress_get(op, out)

    def _repair(self, op: _Get, out: list[Action]) -> None:
        """Read repair: send the merge of every reply to each replica that answered with less.

        Runs when a get has heard from every replica (or timed out), after the client has its
        answer, so it never delays one.
        """
        if len(op.replies) < 2:
            return
        op.merged = self._merge(op)
        for node in self._stale(op):
            self._context.counters["read_repairs"] += 1
            self._write_back(node, op.key, op.merged, None, out)

    def _write_back(self, node: str, key: bytes, versions: tuple[Version, ...],
                    hint_for: str | None, out: list[Action]) -> None:
        """Make ``node`` merge ``versions`` of ``key``, without waiting for it: this node
        merges them itself, another is sent them (a repair: nobody awaits the ack)."""
        if node != self._context.node_id:
            out.append(Send(node, Replicate(REPAIR_REQUEST, key, versions, hint_for)))
        else:
            self._replica.merge(key, versions, hint_for)

    # -- bookkeeping --

    @contextmanager
    def _opened(self, op: _Put | _Get, out: list[Action]) -> Iterator[None]:
        """Hold ``op`` in flight, with its timeout; if the block raises (a bug), forget it
        again, since its timer goes with the actions the exception drops."""
        self._requests[op.id] = op
        out.append(StartTimer(RequestTimeout(op.id),
                              self._context.cluster.request_timeout_ms / 1000))
        try:
            yield
        except BaseException:
            self._requests.pop(op.id, None)
            raise

    def _close(self, op: _Put | _Get, out: list[Action]) -> None:
        if self._requests.pop(op.id, None) is None:
            return
        out.append(CancelTimer(RequestTimeout(op.id)))
        if isinstance(op, _Get):
            self._repair(op, out)
        else:
            self._hint_missed(op)


#: The rank of a stamper by its state in this node's failure detector (after this node, 0).
_STAMPER_ORDER = {"alive": 1, "suspect": 2, "down": 3}


def _fewest(groups: Groups, nodes: Iterable[str]) -> int:
    """How many of ``nodes`` the group with fewest of them holds (quorums count per group)."""
    chosen = set(nodes)
    return min(sum(node in chosen for node in group) for group in groups)
