"""Moving key ranges during a join or leave, free of I/O: the source's batches and the gainer's
pulls.

A member that gains keys in a transition (:mod:`kvcheck.store.placement`) *pulls* them: it asks
every current member it can reach for the keys that member should send it, a batch at a time
(:class:`~kvcheck.store.messages.StreamRequest` / :class:`~kvcheck.store.messages.StreamBatch`).
Each request names the last key examined; the source keeps its scan open between batches
(:class:`SourceScan`), so a whole stream reads the store once, and when it has no open scan at that
key (it restarted, or the scan expired) it opens one after it. A batch holds at most
:data:`BATCH_KEYS` keys and the source examines at most :data:`SCAN_LIMIT` keys for it, so no
single event scans a large store whole.

If a source fails (it refuses — its placement differs —, cannot be reached, or stops answering
for :data:`PULL_TIMEOUT_S`) the round is abandoned and started again with that source counted
unreachable: the other current replicas then send the keys it alone would have sent. Merges are
idempotent, so keys received twice do no harm.

:class:`Streaming` is a node's part in this: the round it pulls, by pull id, and the scans it
serves as a source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from kvcheck.store.context import Context
from kvcheck.store.events import Action, CancelTimer, Now, PullTimeout, Send, StartTimer
from kvcheck.store.ids import PullId
from kvcheck.store.messages import Rejected, StreamBatch, StreamRequest
from kvcheck.store.replica import Replica, Unavailable
from kvcheck.store.storage import Storage
from kvcheck.store.versions import Version

#: Keys in one batch, at most (each key with its siblings is under 10 KB of values).
BATCH_KEYS = 256
#: Keys a source examines for one batch, at most.
SCAN_LIMIT = 4096
#: A source that has not sent the next batch of a pull after this many seconds has failed; a
#: source forgets a scan no batch was asked of for as long.
PULL_TIMEOUT_S = 10.0

Failure = Literal["refused", "unreachable", "silent"]


class SourceScan:
    """A source's scan for one pull, resumed batch after batch: the keys after ``after`` for
    which ``wanted`` holds, with their siblings. Raises StorageError (opening or reading)."""

    def __init__(self, storage: Storage, after: bytes | None,
                 wanted: Callable[[bytes], bool]) -> None:
        self.wanted = wanted
        self.cursor = after
        self._examined = 0
        self._chosen = False  # whether the key the scan yields last was wanted
        start = b"" if after is None else after + b"\x00"
        self._scan = storage.scan(start, where=self._where)

    def _where(self, key: bytes) -> bool:
        # The scan yields chosen keys only (asking in key order, lazily, as the storage
        # contract says); saying yes at the scan limit stops it there.
        self._examined += 1
        self._chosen = self.wanted(key)
        return self._chosen or self._examined >= SCAN_LIMIT

    def next_batch(self) -> tuple[tuple[tuple[bytes, tuple[Version, ...]], ...], bytes | None]:
        """The next keys, and the cursor to resume from (None: every key has been examined)."""
        self._examined = 0
        items: list[tuple[bytes, tuple[Version, ...]]] = []
        for key, versions in self._scan:
            if self._chosen:
                items.append((key, tuple(versions)))
            if self._examined >= SCAN_LIMIT or len(items) >= BATCH_KEYS:
                self.cursor = key
                return tuple(items), key
        self.cursor = None
        return tuple(items), None


@dataclass(slots=True)
class PullRound:
    """One gainer's pulls for one transition: a source per pull id, and who is unreachable."""

    digest: bytes
    unreachable: frozenset[str]
    sources: dict[PullId, str] = field(default_factory=dict)
    keys_received: int = 0


@dataclass(slots=True)
class _Serving:
    """A scan this node keeps open as a source, and when a batch was last asked of it."""

    scan: SourceScan
    used: float  # monotonic time


class Streaming:
    """A node's pulls (at most one round at a time) and the scans it serves to others'."""

    def __init__(self, context: Context, replica: Replica) -> None:
        self._context = context
        self._replica = replica
        self._round: PullRound | None = None
        self._failed: set[str] = set()  # sources that failed in this transition
        #: scans served: (gainer, its pull id) -> the scan
        self._serving: dict[tuple[str, int], _Serving] = {}

    def status(self) -> dict[str, object] | None:
        """The round in progress, for ``/status``; None when not pulling."""
        pulls = self._round
        if pulls is None:
            return None
        return {"sources": sorted(pulls.sources.values()),
                "unreachable": sorted(pulls.unreachable),
                "keys_received": pulls.keys_received}

    def adopted(self, digest: bytes) -> None:
        """The node uses a new layout, named ``digest``: sources failed in the previous one may
        send again, and a round for another layout is over (replies to it are late now, and
        its timers find no round)."""
        self._failed.clear()
        if self._round is not None and self._round.digest != digest:
            self._round = None

    # -- pulling --

    def pull(self, out: list[Action]) -> None:
        """Unless a round is under way, ask every reachable current member for the keys it
        should send this node in the transition in progress."""
        if self._round is not None:
            return
        context = self._context
        current = [m for m in context.placement.current.members if m != context.node_id]
        unreachable = frozenset(m for m in current if context.membership.state(m) != "alive"
                                or m in self._failed)
        sources = [m for m in current if m not in unreachable]
        if not sources:
            return
        pulls = self._round = PullRound(context.placement.digest, unreachable)
        for source in sources:
            pull = context.ids.pull()
            pulls.sources[pull] = source
            self._ask_for_batch(pulls, pull, source, None, out)

    def pulled(self, peer: str, batch: StreamBatch, out: list[Action]) -> bytes | None:
        """A batch of a pull arrived: store it, then ask for the next one. Returns the digest
        of the transition once every source has sent everything, else None."""
        pulls = self._round
        pull = PullId(batch.request)
        if pulls is None or pulls.sources.get(pull) != peer:
            self._context.counters["late_replies"] += 1
            return None
        out.append(CancelTimer(PullTimeout(pull)))
        if not all(self._replica.merge(key, versions) for key, versions in batch.items):
            self.failed(pull, "refused", out)  # by this node's own storage
            return None
        pulls.keys_received += len(batch.items)
        self._context.counters["stream_keys_received"] += len(batch.items)
        if batch.cursor is not None:
            self._ask_for_batch(pulls, pull, peer, batch.cursor, out)
            return None
        del pulls.sources[pull]
        if pulls.sources:
            return None
        self._round = None
        return pulls.digest

    def failed(self, pull: PullId, why: Failure, out: list[Action]) -> None:
        """A source refused, was unreachable or went silent: abandon the round; the next one
        counts that source unreachable, so others send what it alone would have. A pull of no
        round in progress is ignored."""
        pulls = self._round
        if pulls is None or pull not in pulls.sources:
            return
        self._context.counters["stream_sources_failed"] += 1
        self._context.counters[f"stream_sources_{why}"] += 1
        self._failed.add(pulls.sources[pull])
        for other in pulls.sources:
            out.append(CancelTimer(PullTimeout(other)))
        self._round = None

    def _ask_for_batch(self, pulls: PullRound, pull: PullId, source: str, after: bytes | None,
                       out: list[Action]) -> None:
        out.append(Send(source, StreamRequest(pull, pulls.digest, tuple(sorted(pulls.unreachable)),
                                              after)))
        out.append(StartTimer(PullTimeout(pull), PULL_TIMEOUT_S))

    # -- serving --

    def serve(self, peer: str, request: StreamRequest, now: Now, out: list[Action]) -> None:
        """Be a source for ``peer``'s pull: the next keys it should get from this node, from
        the scan left open at ``request.after`` (or a new one)."""
        expired = now.monotonic - PULL_TIMEOUT_S
        self._serving = {k: s for k, s in self._serving.items() if s.used >= expired}
        placement = self._context.placement
        if request.digest != placement.digest:
            self._refuse(peer, request, "this node uses another placement", out)
            return
        me, unreachable = self._context.node_id, frozenset(request.unreachable)

        def wanted(key: bytes) -> bool:
            return placement.should_send(me, peer, key, unreachable)

        serving = self._serving.get((peer, request.request))
        if serving is None or serving.scan.cursor != request.after:
            opened = self._replica.attempt(lambda storage: SourceScan(storage, request.after,
                                                                      wanted))
            if isinstance(opened, Unavailable):
                self._refuse(peer, request, opened.reason, out)
                return
            serving = _Serving(opened, now.monotonic)
        batch = self._replica.attempt(lambda _: serving.scan.next_batch())
        if isinstance(batch, Unavailable):
            self._refuse(peer, request, batch.reason, out)
            return
        items, cursor = batch
        if cursor is None:
            self._serving.pop((peer, request.request), None)
        else:
            serving.used = now.monotonic
            self._serving[(peer, request.request)] = serving
        self._context.counters["stream_keys_sent"] += len(items)
        out.append(Send(peer, StreamBatch(request.request, items, cursor)))

    def _refuse(self, peer: str, request: StreamRequest, reason: str,
                out: list[Action]) -> None:
        self._serving.pop((peer, request.request), None)
        out.append(Send(peer, Rejected(request.request, reason)))
