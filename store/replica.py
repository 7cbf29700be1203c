"""This node as a replica: the write path (stamp, merge, store), reads, and the one place where
storage errors are handled.

Every change node logic makes to its storage goes through :meth:`Replica.store`, so the
anti-entropy trees (:class:`~kvcheck.store.antientropy.SharedHashes`) follow each one. A stamp
creates a new version (:func:`~kvcheck.store.versions.stamp`); a merge takes in versions made
elsewhere (:func:`~kvcheck.store.versions.sync`); either, done as a stand-in, records a hint
for the replica it replaces.

Storage errors
--------------
The storage engine raises :class:`~kvcheck.store.storage.StorageError` when it cannot carry out
a call (a full disk, a damaged file); then nothing changed. Node logic reaches storage only
through the replica, and every call but one runs inside :meth:`Replica.attempt`, which catches
the error, counts it once in ``storage_errors`` and returns :class:`Unavailable` with the
reason. What follows depends on who asked:

- a peer's stamp, replicate or read request is answered ``Rejected`` with the reason, so its
  coordinator knows at once that this replica will not answer (:meth:`Replica.answer`);
- this node's own part in a request it coordinates (a stamp, a merge, a read) counts as a replica
  that did not answer: the coordinator asks the next candidate, or does without it;
- background work gives up for now: a handoff, an anti-entropy exchange, a sync wait for their
  next turn, the build of the trees starts again a little later, a pull's round fails (as
  refused) and starts again, and a source answers ``Rejected`` to the batch asked of it.

The exception is the tombstone purge: no engine fails it (the LSM engine only records the
cutoff for its compactions), so nothing is caught there.

The hint log is storage too: a stand-in records the hint *before* it stores the write, so that a
hint the log refuses fails the write with nothing stored (a write stored and then refused would
be answered "not applied" while present). A write the engine then refuses leaves a hint for a
key this node may not hold; its handoff sends what the node holds, which is harmless.

A sync that fails (fsync ``always``: the server's or the simulator's group commit) leaves the
actions held for it to :func:`unacknowledged`, which takes back their acknowledgements: the
node's :class:`~kvcheck.store.storage.FailStop` has tripped and it refuses writes from then on.

Stamps refused
--------------
A stamp that supersedes none of the key's siblings here, when there are ``siblings_max`` or
more, is refused (:class:`AtSiblingCap`; a peer's is answered ``StampRefused``) and changes
nothing: such a write — blind, or with a context older than every sibling — would only add
one. A stamp that supersedes one or more never adds to the count, so a client that writes with
the context of a read is always taken. A stamp is refused too (as a replica that cannot stamp)
when its counter would pass :data:`~kvcheck.store.versions.MAX_COUNTER`, which only a client's
context can bring near: the store never hands out a counter it would refuse.

Merges are never refused — replication, read repair, hinted handoff, anti-entropy and
streaming — for replicas that refused them could never converge; so a key may exceed the cap
where sets stamped apart meet, until a write resolves it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from kvcheck.store.antientropy import SharedHashes
from kvcheck.store.config import ClusterConfig
from kvcheck.store.events import Action, Failed, Now, Respond, Send, StartTimer, Tick, Written
from kvcheck.store.hints import Hints
from kvcheck.store.ids import REPAIR_REQUEST
from kvcheck.store.messages import (
    Message,
    ReadReply,
    ReadRequest,
    Rejected,
    Replicate,
    ReplicateAck,
    StampRefused,
    StampReply,
    StampRequest,
)
from kvcheck.store.storage import Storage, StorageError
from kvcheck.store.versions import (
    MAX_COUNTER,
    Clock,
    Dot,
    Version,
    canonical,
    discard,
    resolve,
    stamp,
    sync,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Unavailable:
    """A storage call failed; nothing changed. ``reason`` is the engine's message."""

    reason: str


@dataclass(frozen=True, slots=True)
class Stamped:
    """A new version's dot, and the key's sibling set stored with it."""

    dot: Dot
    versions: tuple[Version, ...]


@dataclass(frozen=True, slots=True)
class AtSiblingCap:
    """A stamp refused: it supersedes none of the key's ``siblings``, which are at the cap.
    Nothing changed."""

    siblings: int


class Replica:
    """The replica side of one node over its ``storage``.

    ``actor`` names the versions it stamps; ``hints`` receives the hints of writes it takes as a
    stand-in; ``shared`` is kept in step with every change (:meth:`store`).
    """

    def __init__(self, actor: str, cluster: ClusterConfig, storage: Storage, hints: Hints,
                 shared: SharedHashes, counters: Counter[str]) -> None:
        self.actor = actor
        self._cluster = cluster
        self._storage = storage
        self._hints = hints
        self._shared = shared
        self._counters = counters

    def attempt(self, work: Callable[[Storage], T]) -> T | Unavailable:
        """``work(storage)``, or :class:`Unavailable` if it raised StorageError (counted in
        ``storage_errors``). The one place node logic handles storage errors. ``work`` may
        read; it changes keys only through :meth:`store`."""
        try:
            return work(self._storage)
        except StorageError as exc:
            self._counters["storage_errors"] += 1
            return Unavailable(str(exc))

    # -- this node's part in requests it coordinates, and in background work --

    def read(self, key: bytes) -> list[Version] | Unavailable:
        """The key's sibling set as stored here."""
        return self.attempt(lambda storage: storage.get(key))

    def stamp(self, key: bytes, context: Clock, value: bytes | None, timestamp: int,
              hint_for: str | None = None) -> Stamped | AtSiblingCap | Unavailable:
        """Create a new version of ``key`` (``value`` None: a tombstone) that supersedes what
        ``context`` covers, and store the resulting sibling set; or refuse it at the sibling
        cap (module docstring)."""
        return self.attempt(lambda _: self._stamp(key, context, value, timestamp, hint_for))

    def merge(self, key: bytes, versions: Sequence[Version],
              hint_for: str | None = None) -> bool:
        """Merge ``versions`` into the key's sibling set; True once this replica holds them."""
        return not isinstance(self.attempt(lambda _: self._merge(key, versions, hint_for)),
                              Unavailable)

    def hint(self, owner: str, key: bytes) -> bool:
        """Record that ``owner`` must receive ``key``; False if the hint log refused it."""
        return not isinstance(self.attempt(lambda _: self._hints.add(owner, key)), Unavailable)

    def drop(self, key: bytes) -> None:
        """Forget ``key`` (a stand-in's copy, once handed off); a failure leaves it stored."""
        self.attempt(lambda _: self.store(key, ()))

    # -- a peer's requests --

    def answer(self, request: StampRequest | Replicate | ReadRequest) -> Message:
        """The reply to a coordinator's request: ``StampReply``, ``ReplicateAck`` or
        ``ReadReply``; ``Rejected`` with the reason when storage fails."""
        reply = self.attempt(lambda _: self._answer(request))
        return Rejected(request.request, reply.reason) if isinstance(reply, Unavailable) else reply

    def _answer(self, request: StampRequest | Replicate | ReadRequest) -> Message:
        match request:
            case StampRequest(number, key, context, value, timestamp, hint_for):
                stamped = self._stamp(key, context, value, timestamp, hint_for)
                if isinstance(stamped, Unavailable):
                    return Rejected(number, stamped.reason)
                if isinstance(stamped, AtSiblingCap):
                    return StampRefused(number, stamped.siblings)
                return StampReply(number, key, stamped.dot, stamped.versions)
            case Replicate(number, key, versions, hint_for) if (
                    number == REPAIR_REQUEST and "repair-replaces" in self._cluster.bugs):
                self.store(key, canonical(versions))
                return ReplicateAck(number)
            case Replicate(number, key, versions, hint_for):
                self._merge(key, versions, hint_for)
                return ReplicateAck(number)
            case ReadRequest(number, key):
                return ReadReply(number, tuple(self._storage.get(key)))

    # -- timers --

    def sync(self, out: list[Action]) -> None:
        """Make every write and hint so far durable, and again after the cluster's sync
        period. A failure trips the storage's fail-stop: writes are refused from then on."""
        self.attempt(lambda storage: storage.sync())
        self.attempt(lambda _: self._hints.sync())
        if self._cluster.sync_period_s is not None:
            out.append(StartTimer(Tick.SYNC, self._cluster.sync_period_s))

    def purge(self, now: Now, out: list[Action]) -> None:
        """Purge tombstones older than ``tombstone_grace_ms``, and again after a while."""
        purged = self._storage.purge_tombstones(now.wall_ms - self._cluster.tombstone_grace_ms)
        self._counters["tombstones_purged"] += purged
        out.append(StartTimer(Tick.PURGE, self.purge_period))

    @property
    def purge_period(self) -> float:
        return min(60.0, max(1.0, self._cluster.tombstone_grace_ms / 2000))

    # -- the write path (each raises StorageError; then nothing changed) --

    def _stamp(self, key: bytes, context: Clock, value: bytes | None, timestamp: int,
               hint_for: str | None) -> Stamped | AtSiblingCap | Unavailable:
        local = self._storage.get(key)
        if "dot-from-context" in self._cluster.bugs:  # the counter as if nothing were stored
            version, _ = stamp(self.actor, (), context, value, timestamp,
                               self._cluster.vclock_max_entries)
            versions = [*discard(local, context), version]
        else:
            version, versions = stamp(self.actor, local, context, value, timestamp,
                                      self._cluster.vclock_max_entries)
        if "context-not-kept" in self._cluster.bugs:  # what the client read stays its sibling
            version = replace(version, context={})
            versions = [*discard(local, context), version]
        if version.dot.counter > MAX_COUNTER:  # only after a context that claimed as much
            self._counters["counters_exhausted"] += 1
            return Unavailable(f"{self.actor} has stamped the last counter of the key: a causal "
                               f"context claimed {MAX_COUNTER} writes of it")
        kept = tuple(resolve(versions, self._cluster.versioning))
        if len(kept) > max(self._cluster.siblings_max, len(local)):
            return AtSiblingCap(len(local))
        if hint_for is not None:
            self._hints.add(hint_for, key)
        self.store(key, kept, local)
        return Stamped(version.dot, kept)

    def _merge(self, key: bytes, versions: Sequence[Version], hint_for: str | None) -> None:
        local = self._storage.get(key)
        versioning = "lww" if "merge-keeps-newest" in self._cluster.bugs else \
            self._cluster.versioning
        kept = [] if versioning == "lww" and "lww-last-arrival" in self._cluster.bugs else local
        merged = resolve(sync(kept, versions), versioning)
        if hint_for is not None:
            self._hints.add(hint_for, key)
        if merged != canonical(local):
            self.store(key, merged, local)

    def store(self, key: bytes, versions: Sequence[Version],
              old: Sequence[Version] | None = None) -> None:
        """Replace the key's sibling set: the only way node logic changes storage, so that the
        anti-entropy trees follow every change. ``old`` is the set it replaces (None: read it
        if the trees need it). Raises StorageError; then nothing changed."""
        if old is None and self._shared.peers_sharing(key):
            old = self._storage.get(key)
        self._storage.put(key, versions)
        self._shared.update(key, old or (), versions)


def unacknowledged(actions: Sequence[Action], reason: str) -> list[Action]:
    """``actions``, held for a sync that failed with ``reason``, less what they acknowledge:
    the writes they follow may be lost, or may survive. A client's ``Written`` becomes
    ``Failed`` with ``applied="unknown"``; a ``ReplicateAck`` becomes ``Rejected``, so its
    coordinator (or handoff) counts the replica out at once; a ``StampReply`` is dropped, so
    its coordinator, which cannot tell that the version may exist here, times the put out as
    indeterminate. Everything else goes out as it was."""
    kept: list[Action] = []
    for action in actions:
        match action:
            case Respond(request, Written()):
                kept.append(Respond(request, Failed(
                    f"the write may not be durable here: {reason}", "unknown")))
            case Send(peer, ReplicateAck(request)):
                kept.append(Send(peer, Rejected(request, reason)))
            case Send(_, StampReply()):
                pass
            case _:
                kept.append(action)
    return kept
