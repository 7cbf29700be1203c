"""Which nodes hold which keys while members join and leave: gossiped records, two rings.

Theory of operation
-------------------
Every member owns a :class:`Record`: its address, zone, weight, tokens and *status*. Only the
member changes its own record, bumping ``version`` each time; gossip spreads records and the
highest version wins, so every node ends up with the same set. A :class:`Placement` is an
immutable view built from a set of records. It has two rings:

- the **current** ring, of members ``normal`` or ``leaving``: who holds the data now;
- the **next** ring, of members ``joining`` or ``normal``: who will hold it after the changes.

When they differ the cluster is *in transition*, and a key has two preference lists, old and
new. A request then needs its quorum in **both**: W acknowledgements among the old replicas and
W among the new, R replies from each. Readers and writers on either side of a change therefore
overlap: a write acknowledged by a quorum of either list is seen by a read of either list.

A change completes in three steps, each gated on what gossip shows:

1. **Barrier.** The changing member announces its status (``joining`` with the tokens it
   allocated, or ``leaving``). Every member puts the :attr:`Placement.digest` of the placement it
   uses in its record (``view``). Nothing moves until every member not marked down shows the
   transition's digest: from then on every coordinator requests quorums in both lists.
2. **Streaming.** Every member that *gains* keys (is in a key's new list but not its old one)
   pulls them from the members that *lose* them (:meth:`Placement.should_send`), or — for a
   loser it cannot reach — from every other old replica; then sets ``streamed`` to the digest.
   A write acknowledged before the barrier is on W old replicas; if a loser had it, every gainer
   now has it, so the new list holds at least W copies either way.
3. **Switch.** When every gainer shows ``streamed`` equal to the digest, the joining member turns
   ``normal`` (a leaving one turns ``left``), and the next ring becomes the current one.

A ``left`` record stays, as a tombstone, so stale gossip cannot bring the member back; a member
that joins again announces a higher version. Tokens of concurrent joiners may collide (each
allocates from the ring it saw); the lower node id keeps a contested token. Leaves never take
the next ring below N members: if they would (concurrent leaves), the leaving members with the
lowest ids stay in it, and their leave waits, moving nothing, until members join.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Literal

import msgpack

from kvcheck.store.ring import Member, Ring, natural_key

Status = Literal["joining", "normal", "leaving", "left"]
STATUSES: tuple[Status, ...] = ("joining", "normal", "leaving", "left")


@dataclass(frozen=True, slots=True)
class Record:
    """What one member says about itself. ``view`` is the digest of the placement it uses;
    ``streamed`` the digest of the last transition whose keys it finished pulling."""

    node_id: str
    address: str
    zone: str
    weight: int
    status: Status
    version: int
    tokens: tuple[int, ...]
    view: bytes = b""
    streamed: bytes = b""


def initial_records(members: Iterable[Member], addresses: Mapping[str, str],
                    vnodes_per_weight: int) -> dict[str, Record]:
    """The records of a cluster configured statically: every member ``normal`` at version 0,
    with the tokens :meth:`Ring.build` allocates (the same on every node)."""
    ring = Ring.build(members, vnodes_per_weight)
    records = {
        m.node_id: Record(m.node_id, addresses[m.node_id], m.zone, m.weight, "normal", 0,
                          tuple(ring.tokens[m.node_id]))
        for m in ring.members.values()
    }
    digest = layout_digest(records.values())
    return {node_id: replace(r, view=digest) for node_id, r in records.items()}


def layout_digest(records: Iterable[Record]) -> bytes:
    """Names a layout: ids, statuses and tokens of every member that has not left."""
    layout = sorted([r.node_id, r.status, list(r.tokens)] for r in records if r.status != "left")
    return hashlib.blake2b(msgpack.packb(layout), digest_size=8).digest()


class Placement:
    """An immutable view of the cluster's layout, built from records (see the module doc), for
    preference lists of ``replicas`` (N) members."""

    current: Ring
    next: Ring
    #: Whether the two rings differ: a join or leave is in progress.
    in_transition: bool

    def __init__(self, records: Mapping[str, Record], vnodes_per_weight: int,
                 replicas: int, rings_of: Placement | None = None) -> None:
        """``rings_of``: a placement whose records place the same members the same way
        (:func:`_same_place`), whose rings (and their caches of preference lists) this one
        shares."""
        self.records: Mapping[str, Record] = dict(records)
        self.vnodes_per_weight = vnodes_per_weight
        self.replicas = replicas
        if rings_of is not None:
            self.current, self.next = rings_of.current, rings_of.next
            self.in_transition = rings_of.in_transition
            return
        self.current = self._ring(("normal", "leaving"))
        staying = [r.node_id for r in self.records.values() if r.status in ("joining", "normal")]
        held_back = sorted((r.node_id for r in self.records.values() if r.status == "leaving"),
                           key=natural_key)[:max(0, replicas - len(staying))]
        self.next = self._ring(("joining", "normal"), also=held_back)
        self.in_transition = self.current != self.next
        if not self.in_transition:
            self.next = self.current  # one ring, one cache of preference lists

    def _ring(self, statuses: tuple[Status, ...], also: Iterable[str] = ()) -> Ring:
        extra = set(also)
        chosen = sorted((r for r in self.records.values()
                         if r.status in statuses or r.node_id in extra),
                        key=lambda r: natural_key(r.node_id))
        tokens: dict[str, tuple[int, ...]] = {}
        taken: set[int] = set()
        for record in chosen:
            tokens[record.node_id] = tuple(t for t in record.tokens if t not in taken)
            taken.update(record.tokens)
        members = [Member(r.node_id, r.zone, r.weight) for r in chosen if tokens[r.node_id]]
        return Ring.from_tokens(members, {m.node_id: tokens[m.node_id] for m in members},
                                self.vnodes_per_weight)

    # -- layout --

    @cached_property
    def digest(self) -> bytes:
        """Names the layout (:func:`layout_digest`)."""
        return layout_digest(self.records.values())

    def members(self) -> list[str]:
        """Every member that has not left, in natural order."""
        return sorted((i for i, r in self.records.items() if r.status != "left"),
                      key=natural_key)

    def changing(self) -> list[str]:
        """The members joining or leaving."""
        return [i for i in self.members() if self.records[i].status in ("joining", "leaving")]

    def _lists(self, key: bytes) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The key's preference lists in the current and the next ring."""
        return (self.current.preference_list(key, self.replicas),
                self.next.preference_list(key, self.replicas))

    def groups(self, key: bytes) -> tuple[tuple[str, ...], ...]:
        """The preference lists a request for ``key`` needs a quorum in: the current one, and
        in a transition also the next one when it differs."""
        if not self.in_transition:
            return (self.current.preference_list(key, self.replicas),)
        old, new = self._lists(key)
        return (old,) if new == old else (old, new)

    def replicates(self, node_id: str, key: bytes) -> bool:
        return any(node_id in group for group in self.groups(key))

    # -- moving data --

    @cached_property
    def gainers(self) -> list[str]:
        """Members in the next preference list of some key but not in its current one (one
        key position per arc of the two rings' tokens covers every key)."""
        n = self.replicas
        positions = {t for ring in (self.current, self.next) for ts in ring.tokens.values()
                     for t in ts}
        found: set[str] = set()
        for position in positions:
            old = self.current.preference_at(position, n)
            found.update(set(self.next.preference_at(position, n)) - set(old))
        return sorted(found, key=natural_key)

    def should_send(self, source: str, gainer: str, key: bytes,
                    unreachable: frozenset[str]) -> bool:
        """Whether ``source`` sends ``key`` to ``gainer``: it gains the key and ``source`` loses
        it — or every member that loses it is unreachable for the gainer and ``source`` is one of
        the key's current replicas."""
        old, new = self._lists(key)
        if gainer not in new or gainer in old:
            return False
        losers = set(old) - set(new)
        return source in losers or (losers <= unreachable and source in old)

    # -- changing records --

    def merged(self, records: Iterable[Record]) -> Placement:
        """This placement with ``records`` taken in where their version is higher (self when
        nothing changes)."""
        changed = {r.node_id: r for r in records
                   if r.node_id not in self.records or r.version > self.records[r.node_id].version}
        return self._with(changed) if changed else self

    def joined(self, node_id: str, address: str, zone: str, weight: int) -> Placement:
        """This placement with ``node_id`` announcing that it joins, with tokens allocated on
        the next ring. Raises ValueError if that id is a member that has not left."""
        old = self.records.get(node_id)
        if old is not None and old.status != "left":
            raise ValueError(f"{node_id} is already a member of the cluster ({old.status}); "
                             f"a new node needs a new id")
        ring = self.next.with_member(Member(node_id, zone, weight))
        version = 0 if old is None else old.version + 1
        return self.with_record(Record(node_id, address, zone, weight, "joining", version,
                                       tuple(ring.tokens[node_id])))

    def status(self) -> dict[str, object]:
        """The layout for ``/status``."""
        return {
            "digest": self.digest.hex(),
            "in_transition": self.in_transition,
            "changing": self.changing(),
            "gainers": self.gainers,
            "records": [
                {"node_id": r.node_id, "address": r.address, "zone": r.zone,
                 "weight": r.weight, "status": r.status, "version": r.version,
                 "tokens": len(r.tokens), "uses_this_placement": r.view == self.digest,
                 "streamed_this_transition": self.in_transition and r.streamed == self.digest}
                for r in sorted(self.records.values(), key=lambda r: natural_key(r.node_id))
            ],
        }

    def with_record(self, record: Record) -> Placement:
        return self._with({record.node_id: record})

    def _with(self, records: Mapping[str, Record]) -> Placement:
        same = all(_same_place(self.records.get(i), r) for i, r in records.items())
        return Placement({**self.records, **records}, self.vnodes_per_weight, self.replicas,
                         rings_of=self if same else None)


def _same_place(old: Record | None, new: Record) -> bool:
    """Whether ``new`` places its member on the rings as ``old`` does: what else a record holds
    (address, version, views) changes no ring."""
    return old is not None and (old.status, old.zone, old.weight, old.tokens) == (
        new.status, new.zone, new.weight, new.tokens)
