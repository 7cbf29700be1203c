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

If a source fails (it refuses — its placement differs —, cannot be reached, or stops answering)
the round is abandoned and started again with that source counted unreachable: the other current
replicas then send the keys it alone would have sent. Merges are idempotent, so keys received
twice do no harm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from kvcheck.store.storage import Storage
from kvcheck.store.versions import Version

#: Keys in one batch, at most (each key with its siblings is under 10 KB of values).
BATCH_KEYS = 256
#: Keys a source examines for one batch, at most.
SCAN_LIMIT = 4096


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
    """One gainer's pulls for one transition: a source per request id, and who is unreachable."""

    digest: bytes
    unreachable: frozenset[str]
    sources: dict[int, str] = field(default_factory=dict)
    keys_received: int = 0
