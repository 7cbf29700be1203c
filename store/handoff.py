"""Hinted handoff: sending the writes this node holds for others (:mod:`kvcheck.store.hints`) to
their owners once gossip shows them alive.

Every gossip round, for each owner that is alive, the oldest :data:`HANDOFF_BATCH` of its hints
are sent to it (a ``Replicate`` of the key's versions as stored here), unless one for that key is
still in flight. When the owner acknowledges, the hint is dropped — unless the key was written
again meanwhile: the newer hint goes next round — and so is the key, if this node held it only
as a stand-in. A handoff refused, undeliverable or unacknowledged within ``request_timeout_ms``
leaves its hint for the next round. Hints for a member that has left go to the key's replicas
instead (a hint the log refuses leaves the old one for the next round).
"""

from __future__ import annotations

from dataclasses import dataclass

from kvcheck.store.context import Context
from kvcheck.store.events import Action, Now, Send
from kvcheck.store.hints import Hints
from kvcheck.store.ids import HandoffId
from kvcheck.store.messages import Replicate
from kvcheck.store.replica import Replica, Unavailable

#: Hinted keys handed off to one owner per gossip round, at most.
HANDOFF_BATCH = 100


@dataclass(frozen=True, slots=True)
class _Handoff:
    owner: str
    key: bytes
    seq: int  # the hint's sequence number (see :class:`~kvcheck.store.hints.Hints`)
    sent: float  # monotonic time


class Handoff:
    """The handoffs in flight, by id."""

    def __init__(self, context: Context, replica: Replica, hints: Hints) -> None:
        self._context = context
        self._replica = replica
        self._hints = hints
        self._in_flight: dict[HandoffId, _Handoff] = {}

    def hand_off(self, now: Now, out: list[Action]) -> None:
        """Send hinted writes to their owners that gossip shows alive, a batch at a time."""
        expired = now.monotonic - self._context.cluster.request_timeout_ms / 1000
        self._in_flight = {id: h for id, h in self._in_flight.items() if h.sent >= expired}
        in_flight = {(h.owner, h.key) for h in self._in_flight.values()}
        self._rehome()
        for owner in self._hints.owners():
            if self._context.membership.state(owner) != "alive":
                continue
            for key, seq in self._hints.pending(owner)[:HANDOFF_BATCH]:
                if (owner, key) in in_flight:
                    continue
                versions = self._replica.read(key)
                if isinstance(versions, Unavailable):
                    continue
                handoff = self._context.ids.handoff()
                self._in_flight[handoff] = _Handoff(owner, key, seq, now.monotonic)
                out.append(Send(owner, Replicate(handoff, key, tuple(versions))))

    def acked(self, handoff: HandoffId) -> None:
        """The owner stored a hinted key: drop the hint, and the key if it is not ours."""
        done = self._in_flight.pop(handoff, None)
        if done is None:
            self._context.counters["late_replies"] += 1
            return
        if not self._hints.done(done.owner, done.key, done.seq):
            return  # written again meanwhile: the newer hint goes next round
        self._context.counters["hints_delivered"] += 1
        mine = self._context.placement.replicates(self._context.node_id, done.key)
        if not mine and not self._hints.holds(done.key):
            self._replica.drop(done.key)

    def lost(self, handoff: HandoffId) -> None:
        """The owner refused the handoff or never got it: the hint stays for the next round."""
        self._in_flight.pop(handoff, None)

    def _rehome(self) -> None:
        """Hints for a member that has left go to the key's replicas now, instead."""
        placement = self._context.placement
        for owner in self._hints.owners():
            if owner in placement.records and placement.records[owner].status != "left":
                continue
            for key, seq in self._hints.pending(owner):
                if all(self._replica.hint(replica, key) for replica in placement.groups(key)[-1]
                       if replica != self._context.node_id):
                    self._hints.done(owner, key, seq)
                    self._context.counters["hints_rehomed"] += 1
