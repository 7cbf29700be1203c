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

- ``write``: every append fails as on a full disk (StorageError: nothing changed; the hint log
  refuses the hint, as the real one does);
- ``read``: every read fails with an I/O error (StorageError);
- ``fsync``: every sync fails (StorageError), and what it should have made durable never
  reaches the device, though it stays readable until the power goes — as Linux marks the pages
  clean after a failed writeback, so that a later sync would succeed without writing them.

A failed sync trips the disk's :class:`~kvcheck.store.storage.FailStop`, shared by the storage
and the hint log as the server's engine and hint log share theirs: from then on every write and
sync is refused, until the node restarts (:meth:`SimDisk.restart`).
"""

from __future__ import annotations

import contextlib
import errno
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from kvcheck.store.hints import Hints
from kvcheck.store.storage import FailStop, MemoryStorage, StorageError
from kvcheck.store.versions import Version

DiskError = Literal["write", "read", "fsync"]
DISK_ERRORS: tuple[DiskError, ...] = ("write", "read", "fsync")
#: Unsynced data older than this (seconds) the kernel has written back by itself.
WRITEBACK_S = 30.0

_MESSAGES: dict[DiskError, str] = {
    "write": "[Errno 28] No space left on device",
    "read": "[Errno 5] Input/output error",
}


class _PageCache:
    """Changes appended since the last sync, oldest first, each with the virtual time of its
    append: what a power loss may lose."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._changes: list[tuple[float, Any]] = []
        self._failed_sync = False

    def append(self, change: Any) -> None:
        self._changes.append((self.clock(), change))

    @property
    def unsynced(self) -> bool:
        return bool(self._changes) or self._failed_sync

    def sync(self, error: DiskError | None) -> list[Any]:
        """The changes that are durable now. Raises OSError if ``error`` is ``fsync``: then
        they never will be (marked clean, never written), though still readable."""
        if error == "fsync" and self.unsynced:
            self._changes.clear()
            self._failed_sync = True
            raise OSError(errno.EIO, "Input/output error")
        return self._drop(len(self._changes))

    def lose_power(self, rng: random.Random) -> list[Any]:
        """The changes the device kept through a power loss: those the kernel wrote back by
        itself, and a random prefix of the rest."""
        written_back = sum(1 for at, _ in self._changes if at <= self.clock() - WRITEBACK_S)
        return self._drop(rng.randint(written_back, len(self._changes)))

    def _drop(self, kept: int) -> list[Any]:
        changes = [change for _, change in self._changes[:kept]]
        self._changes.clear()
        self._failed_sync = False
        return changes


class SimDisk:
    """A node's storage engine on a simulated device (the :class:`~kvcheck.store.storage.
    interface.Storage` contract). ``clock`` gives virtual time; ``error`` (None: healthy) is
    how the device fails now."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.error: DiskError | None = None
        self.fail_stop = FailStop()
        self._data = MemoryStorage()  # what the node reads: the device and the page cache
        self._durable = MemoryStorage()  # what the device holds
        self._cache = _PageCache(clock)

    @property
    def clock(self) -> Callable[[], float]:
        return self._cache.clock

    def get(self, key: bytes) -> list[Version]:
        if self.error == "read":
            raise StorageError(f"read failed: {_MESSAGES['read']}")
        return self._data.get(key)

    def put(self, key: bytes, versions: Sequence[Version]) -> None:
        self.fail_stop.check()
        if self.error == "write":
            raise StorageError(f"commit log append failed: {_MESSAGES['write']}")
        self._data.put(key, versions)
        self._cache.append((key, tuple(versions)))

    @property
    def unsynced(self) -> bool:
        return self._cache.unsynced

    def keys(self) -> Iterator[bytes]:
        return self._data.keys()

    def scan(self, start: bytes = b"", end: bytes | None = None,
             where: Callable[[bytes], bool] | None = None,
             ) -> Iterator[tuple[bytes, list[Version]]]:
        return self._data.scan(start, end, where)

    def purge_tombstones(self, older_than_ms: int) -> int:
        """As the engine purges, in a compaction: never failing, durable with the next sync."""
        before = set(self._data.keys())
        purged = self._data.purge_tombstones(older_than_ms)
        for key in sorted(before - set(self._data.keys())):
            self._cache.append((key, ()))
        return purged

    def sync(self) -> None:
        self.fail_stop.check()
        try:
            self._make_durable(self._cache.sync(self.error))
        except OSError as exc:
            raise self.fail_stop.trip("commit log sync", exc) from exc

    def close(self) -> None:
        if self.fail_stop.reason is None:
            with contextlib.suppress(StorageError):
                self.sync()

    def restart(self) -> None:
        """The node's process starts again: writes are no longer refused (until a sync fails
        again)."""
        self.fail_stop = FailStop()

    def stats(self) -> dict[str, Any]:
        return {**self._data.stats(), "engine": "simulated", "unsynced": self.unsynced,
                "fail_stopped": self.fail_stop.reason}

    def lose_power(self, rng: random.Random) -> None:
        """The power went: keep what the device holds (see the module's docstring)."""
        self._make_durable(self._cache.lose_power(rng))
        self._data = self._durable.copy()

    def _make_durable(self, changes: list[tuple[bytes, tuple[Version, ...]]]) -> None:
        for key, versions in changes:
            self._durable.put(key, versions)


class SimHints(Hints):
    """The hint log on ``disk``: it fails as the disk does, and loses power with it."""

    def __init__(self, disk: SimDisk) -> None:
        super().__init__()
        self._disk = disk
        self._durable = Hints()  # the hints the log on the device replays to
        self._cache = _PageCache(disk.clock)

    def _record(self, change: list[object]) -> None:
        self._disk.fail_stop.check()
        if self._disk.error == "write":
            raise StorageError(f"hint log append failed: {_MESSAGES['write']}")
        self._cache.append(change)

    @property
    def unsynced(self) -> bool:
        return self._cache.unsynced

    def sync(self) -> None:
        self._disk.fail_stop.check()
        try:
            self._make_durable(self._cache.sync(self._disk.error))
        except OSError as exc:
            raise self._disk.fail_stop.trip("hint log sync", exc) from exc

    def lose_power(self, rng: random.Random) -> None:
        """Replay what the device holds, as :class:`~kvcheck.store.hints.DurableHints` does."""
        self._make_durable(self._cache.lose_power(rng))
        self._pending = {owner: dict(keys) for owner, keys in self._durable._pending.items()}
        self._seq = self._durable._seq

    def _make_durable(self, changes: list[Any]) -> None:
        for change in changes:
            self._durable._redo(*change)
