"""Hints: writes a node holds for another (sloppy quorum), until it can hand them off.

When a key's replica is down, a *stand-in* — the next healthy node along the ring — accepts the
write in its place and records a hint ``(owner, key)``. When gossip shows the owner alive again,
the stand-in sends it the key's versions; once the owner has stored them the hint is dropped.

Each hint carries a sequence number: a hint re-recorded while its handoff was in flight has a
new number, so the acknowledgement of the older handoff does not drop it.

:class:`Hints` keeps them in memory; :class:`DurableHints` also appends every change to a
checksummed log (the commit log's format) and replays it on start, so hints survive a crash.
"""

from __future__ import annotations

from pathlib import Path

import msgpack

from kvcheck.store.storage.commitlog import CommitLog, CorruptLogError, replay


class Hints:
    """Hints in memory. ``add`` and ``done`` are the only changes."""

    def __init__(self) -> None:
        self._pending: dict[str, dict[bytes, int]] = {}
        self._seq = 0
        #: Changes the log could not record (a full or failing disk): they hold while the node
        #: runs, and a crash may forget them — anti-entropy is the backstop.
        self.log_errors = 0

    def add(self, owner: str, key: bytes) -> int:
        """Record that ``owner`` must receive ``key``; return the hint's sequence number."""
        self._seq += 1
        self._pending.setdefault(owner, {})[key] = self._seq
        self._write(["add", owner, key, self._seq])
        return self._seq

    def done(self, owner: str, key: bytes, seq: int) -> bool:
        """Drop the hint if it is still the one numbered ``seq``; return whether it was."""
        keys = self._pending.get(owner, {})
        if keys.get(key) != seq:
            return False
        del keys[key]
        if not keys:
            del self._pending[owner]
        self._write(["done", owner, key, seq])
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

    def _write(self, change: list[object]) -> None:
        try:
            self._record(change)
        except OSError:
            self.log_errors += 1

    def _record(self, change: list[object]) -> None:
        """Log a change (in memory: nothing to do). Raises OSError when the log cannot be
        written."""

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
        """Make every change so far durable."""

    def close(self) -> None:
        """Release files. The hints cannot be used afterwards."""


class DurableHints(Hints):
    """Hints logged to ``path`` and replayed from it. Raises CorruptLogError on damage."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        for offset, payload in replay(path):
            try:
                self._redo(*msgpack.unpackb(payload, raw=False))
            except (ValueError, TypeError, KeyError) as exc:
                raise CorruptLogError(path, offset, f"undecodable hint: {exc}") from None
        self._log = CommitLog(path)

    def _record(self, change: list[object]) -> None:
        self._log.append(msgpack.packb(change, use_bin_type=True))

    @property
    def unsynced(self) -> bool:
        return self._log.unsynced

    def sync(self) -> None:
        self._log.sync()

    def close(self) -> None:
        self._log.close()
