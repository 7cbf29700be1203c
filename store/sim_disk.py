"""The simulator's disk: what a node's storage engine and hint log keep through a crash, a power
loss and a failing device, in memory.

The real engine (:mod:`kvcheck.store.storage`) appends each change to a log: an append is in the
kernel's page cache when it returns, so it survives the process being killed; it is on the
device once synced. On power loss the device keeps what was synced, plus whatever the kernel
wrote back by itself — the oldest unsynced appends first, those older than
:data:`WRITEBACK_S` surely (Linux's ``dirty_expire_centisecs``) — and a record cut short at the
end is dropped at replay (a torn tail). So a power loss keeps a *prefix* of the unsynced
changes: :class:`SimDisk` and :class:`SimHints` keep a seeded random one.

A disk can be made to fail (:data:`DiskError`), as a real device does:

- ``write``: every append fails as on a full disk (the engine raises StorageError: nothing
  changed; the hint log raises OSError, as the real one does);
- ``read``: every read fails with an I/O error (StorageError);
- ``fsync``: every sync fails (StorageError), and what it should have made durable never
  reaches the device, though it stays readable until the power goes — as Linux marks the pages
  clean after a failed writeback, so that a later sync succeeds without writing them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from kvcheck.store.hints import Hints
from kvcheck.store.storage import MemoryStorage, StorageError
from kvcheck.store.versions import Version

DiskError = Literal["write", "read", "fsync"]
DISK_ERRORS: tuple[DiskError, ...] = ("write", "read", "fsync")
#: Unsynced data older than this (seconds) the kernel has written back by itself.
WRITEBACK_S = 30.0

_MESSAGES: dict[DiskError, str] = {
    "write": "[Errno 28] No space left on device",
    "read": "[Errno 5] Input/output error",
    "fsync": "[Errno 5] Input/output error",
}


class _Log:
    """Changes in the order they were appended: those synced, and those only in the page cache
    (each with the virtual time of its append)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.durable: list[Any] = []
        self.pending: list[tuple[float, Any]] = []
        self.failed_sync = False

    def append(self, change: Any) -> None:
        self.pending.append((self.clock(), change))

    @property
    def unsynced(self) -> bool:
        return bool(self.pending) or self.failed_sync

    def sync(self, error: DiskError | None) -> None:
        if error == "fsync" and self.unsynced:
            self.pending.clear()  # marked clean, never written: lost at the next power loss
            self.failed_sync = True
            raise StorageError(f"commit log sync failed: {_MESSAGES['fsync']}")
        self.durable.extend(change for _, change in self.pending)
        self.pending.clear()
        self.failed_sync = False

    def lose_power(self, rng: random.Random) -> list[Any]:
        """Keep the written-back prefix of the unsynced changes; return every change kept."""
        written_back = sum(1 for at, _ in self.pending if at <= self.clock() - WRITEBACK_S)
        kept = rng.randint(written_back, len(self.pending))
        self.durable.extend(change for _, change in self.pending[:kept])
        self.pending.clear()
        self.failed_sync = False
        return self.durable


class SimDisk:
    """A node's storage engine on a simulated device (the :class:`~kvcheck.store.storage.
    interface.Storage` contract). ``clock`` gives virtual time; ``error`` (None: healthy) is
    how the device fails now."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.error: DiskError | None = None
        self._data = MemoryStorage()
        self._log = _Log(clock)

    def get(self, key: bytes) -> list[Version]:
        if self.error == "read":
            raise StorageError(f"read failed: {_MESSAGES['read']}")
        return self._data.get(key)

    def put(self, key: bytes, versions: Sequence[Version]) -> None:
        if self.error == "write":
            raise StorageError(f"commit log append failed: {_MESSAGES['write']}")
        self._data.put(key, versions)
        self._log.append((key, tuple(versions)))

    @property
    def unsynced(self) -> bool:
        return self._log.unsynced

    def keys(self) -> Iterator[bytes]:
        return self._data.keys()

    def scan(self, start: bytes = b"", end: bytes | None = None,
             where: Callable[[bytes], bool] | None = None,
             ) -> Iterator[tuple[bytes, list[Version]]]:
        return self._data.scan(start, end, where)

    def purge_tombstones(self, older_than_ms: int) -> int:
        doomed = [key for key, versions in self._data.scan()
                  if all(v.value is None and v.timestamp < older_than_ms for v in versions)]
        for key in doomed:
            self.put(key, ())
        return len(doomed)

    def sync(self) -> None:
        self._log.sync(self.error)

    def close(self) -> None:
        self.sync()

    def stats(self) -> dict[str, Any]:
        return {**self._data.stats(), "engine": "simulated", "unsynced": self.unsynced}

    def lose_power(self, rng: random.Random) -> None:
        """The power went: keep what the device holds (see the module's docstring)."""
        self._data = MemoryStorage()
        for key, versions in self._log.lose_power(rng):
            self._data.put(key, versions)


class SimHints(Hints):
    """The hint log on ``disk``: it fails as the disk does, and loses power with it."""

    def __init__(self, disk: SimDisk, clock: Callable[[], float]) -> None:
        super().__init__()
        self._disk = disk
        self._log = _Log(clock)

    def _record(self, change: list[object]) -> None:
        if self._disk.error == "write":
            raise OSError(28, "No space left on device (the hint log)")
        self._log.append(change)

    @property
    def unsynced(self) -> bool:
        return self._log.unsynced

    def sync(self) -> None:
        self._log.sync(self._disk.error)

    def lose_power(self, rng: random.Random) -> None:
        """Replay what the device holds, as :class:`~kvcheck.store.hints.DurableHints` does."""
        self._pending, self._seq = {}, 0
        for change in self._log.lose_power(rng):
            self._redo(*change)
