"""Hints: writes a node holds for another (sloppy quorum), until it can hand them off.

When a key's replica is down, a *stand-in* — the next healthy node along the ring — accepts the
write in its place and records a hint ``(owner, key)``. When gossip shows the owner alive again,
the stand-in sends it the key's versions; once the owner has stored them the hint is dropped.

Each hint carries a sequence number: a hint re-recorded while its handoff was in flight has a
new number, so the acknowledgement of the older handoff does not drop it. (Numbers may repeat
across a restart, when no handoff is in flight.)

:class:`Hints` keeps them in memory; :class:`DurableHints` also appends every change to a
checksummed log (the commit log's format) and replays it on start, so hints survive a crash.

The log is storage like the engine's commit log. A hint that cannot be logged is not added:
:meth:`Hints.add` raises StorageError, and the replica write it belongs to fails with it, since
a stand-in's acknowledgement promises the owner will get the write. A delivered hint whose
``done`` cannot be logged is dropped all the same (after a restart it is delivered again, which
is harmless), and counted in ``log_errors``. The hint log's fsyncs follow the node's
:class:`~kvcheck.store.storage.interface.FailStop`, as the engine's do. Once delivered hints
dominate the log, it is rewritten with only the live ones (:meth:`DurableHints.compact`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import msgpack

from kvcheck.store.storage import FailStop, StorageError
from kvcheck.store.storage.commitlog import CommitLog, CorruptLogError, replay
from kvcheck.store.storage.sstable import fsync_dir

log = logging.getLogger(__name__)

#: The log is compacted once it holds this many records and :data:`COMPACT_RATIO` times as many
#: as there are live hints: a rewrite of L hints comes after at least (RATIO - 1) * L changes.
COMPACT_MIN_RECORDS = 4096
COMPACT_RATIO = 4


class Hints:
    """Hints in memory. ``add`` and ``done`` are the only changes."""

    def __init__(self) -> None:
        self._pending: dict[str, dict[bytes, int]] = {}
        self._seq = 0
        #: Log errors that changed nothing durable: deliveries the log could not record, and
        #: compactions that failed (the log goes on as it was).
        self.log_errors = 0

    def add(self, owner: str, key: bytes) -> int:
        """Record that ``owner`` must receive ``key``; return the hint's sequence number.
        Raises StorageError when the log cannot record it; then nothing changed."""
        seq = self._seq + 1
        self._record(["add", owner, key, seq])
        self._seq = seq
        self._pending.setdefault(owner, {})[key] = seq
        self._changed()
        return seq

    def done(self, owner: str, key: bytes, seq: int) -> bool:
        """Drop the hint if it is still the one numbered ``seq``; return whether it was. Never
        raises: a delivery the log cannot record is counted in ``log_errors``."""
        keys = self._pending.get(owner, {})
        if keys.get(key) != seq:
            return False
        del keys[key]
        if not keys:
            del self._pending[owner]
        try:
            self._record(["done", owner, key, seq])
        except StorageError:
            self.log_errors += 1
        self._changed()
        return True

    def pending(self, owner: str) -> list[tuple[bytes, int]]:
        """The hints for ``owner``: ``(key, seq)``, oldest first."""
        return sorted(self._pending.get(owner, {}).items(), key=lambda item: item[1])

    def owners(self) -> list[str]:
        return sorted(self._pending)

    def holds(self, key: bytes) -> bool:
        """True while any owner still has a hint for ``key``."""
        return any(key in keys for keys in self._pending.values())

    def counts(self) -> dict[str, int]:
        """Pending hints per target (for ``/status``)."""
        return {owner: len(keys) for owner, keys in sorted(self._pending.items())}

    def _record(self, change: list[object]) -> None:
        """Log a change (in memory: nothing to do). Raises StorageError when the log cannot be
        written."""

    def _changed(self) -> None:
        """A change is done, in memory and (if it could be) in the log."""

    def _redo(self, action: str, owner: str, key: bytes, seq: int) -> None:
        """Apply one recorded change again (replaying the log after a restart)."""
        if action == "add":
            self._pending.setdefault(owner, {})[key] = seq
        elif self._pending.get(owner, {}).get(key) == seq:
            del self._pending[owner][key]
            if not self._pending[owner]:
                del self._pending[owner]
        self._seq = max(self._seq, seq)

    @property
    def unsynced(self) -> bool:
        """True when some change may not be durable yet."""
        return False

    def sync(self) -> None:
        """Make every change so far durable. Raises StorageError when it cannot."""

    def close(self) -> None:
        """Release files. The hints cannot be used afterwards. Never raises."""


class DurableHints(Hints):
    """Hints logged to ``path`` and replayed from it. Raises CorruptLogError on damage.

    Opening needs no free space: if the log cannot be created (a full disk), hints are
    refused until it can. ``fail_stop`` is the node's fsync failure policy, shared with its
    storage engine: a failed fsync of the log trips it, and a tripped one refuses every
    ``add`` and ``sync``.
    """

    def __init__(self, path: Path, fail_stop: FailStop) -> None:
        super().__init__()
        self.path = path
        self._fail_stop = fail_stop
        self._records = 0
        for offset, payload in replay(path):
            try:
                self._redo(*msgpack.unpackb(payload, raw=False))
            except (ValueError, TypeError, KeyError) as exc:
                raise CorruptLogError(path, offset, f"undecodable hint: {exc}") from None
            self._records += 1
        self._log: CommitLog | None = None
        with contextlib.suppress(OSError):
            self._log = CommitLog(path)

    def _record(self, change: list[object]) -> None:
        self._fail_stop.check()
        try:
            if self._log is None:
                self._log = CommitLog(self.path)
            self._log.append(msgpack.packb(change, use_bin_type=True))
        except (OSError, ValueError) as exc:
            raise StorageError(f"hint log append failed: {exc}") from exc
        self._records += 1

    def _changed(self) -> None:
        live = sum(len(keys) for keys in self._pending.values())
        if self._records >= max(COMPACT_MIN_RECORDS, COMPACT_RATIO * live):
            self.compact()

    @property
    def unsynced(self) -> bool:
        return self._log is not None and self._log.unsynced

    def sync(self) -> None:
        """Make every change so far durable. Raises StorageError when the fsync fails, which
        trips the node's fail-stop, and on every call after that."""
        self._fail_stop.sync(self._log, "hint log sync")

    def compact(self) -> None:
        """Rewrite the log with only the pending hints: into a temporary file, fsynced, renamed
        over the log, the directory fsynced. A failure before the rename leaves the log as it
        was (counted in ``log_errors``; tried again after :data:`COMPACT_MIN_RECORDS` more
        changes at least); a failed fsync of the directory after it trips the node's fail-stop.
        Does nothing once that has tripped. Never raises."""
        if self._fail_stop.reason is not None:
            return
        temporary = self.path.with_name(self.path.name + ".tmp")
        live = [["add", owner, key, seq]
                for owner in self.owners() for key, seq in self.pending(owner)]
        try:
            temporary.unlink(missing_ok=True)
            compacted = CommitLog(temporary)
            try:
                for change in live:
                    compacted.append(msgpack.packb(change, use_bin_type=True))
                compacted.sync()
                os.replace(temporary, self.path)
            except BaseException:
                compacted.close(sync=False)
                raise
        except OSError as exc:
            log.warning("%s: compaction failed, the log goes on as it was: %s", self.path, exc)
            self.log_errors += 1
            self._records = 0
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            return
        previous, self._log, self._records = self._log, compacted, len(live)
        if previous is not None:
            previous.close(sync=False)  # its file is gone: what it held, the new one holds
        try:
            fsync_dir(self.path.parent)
        except OSError as exc:
            self._fail_stop.trip("fsync of the data directory", exc)

    def close(self) -> None:
        self._fail_stop.close(self._log, "hint log sync")
