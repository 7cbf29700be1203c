"""The storage interface the node logic calls: a key's sibling set in, a key's sibling set out.

Calls are synchronous. A :meth:`Storage.put` has reached the operating system when it returns
(it survives the process being killed) and is durable (it survives power loss) once
:meth:`Storage.sync` has returned. The fsync policy decides who syncs when: the server syncs
before any acknowledgement leaves the node (``always``, with group commit), the node logic on a
timer (``interval``), or nobody (``never``). The node logic never touches files itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from kvcheck.store.versions import Version

if TYPE_CHECKING:
    from kvcheck.store.storage.commitlog import CommitLog

log = logging.getLogger(__name__)


class StorageError(Exception):
    """The engine could not carry out a call (disk full, I/O error). The key is unchanged."""


class FailStop:
    """The fsync failure policy of one node, shared by its engine and its hint log: *fail-stop
    for writes*. After an fsync of data a write was acknowledged on, or may be, has failed
    (the commit log, the hint log, the data directory), the kernel may have dropped those
    pages and a later fsync would succeed without them — PostgreSQL's "fsyncgate" — so from
    then on every write and every sync is refused (:meth:`check`) until the process restarts
    and replays its logs. Reads go on. ``reason`` (None while healthy) says what failed."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def trip(self, what: str, exc: OSError) -> StorageError:
        """Record that ``what`` failed with ``exc`` (the first failure is kept); return the
        error to raise."""
        if self.reason is None:
            self.reason = f"{what} failed: {exc}"
            log.error("%s; refusing writes until restarted (fail-stop for writes)", self.reason)
        return StorageError(f"{what} failed: {exc}")

    def check(self) -> None:
        """Raise :class:`StorageError` once tripped."""
        if self.reason is not None:
            raise StorageError(f"writes refused until the node restarts: {self.reason}")

    def sync(self, log: CommitLog | None, what: str) -> None:
        """Sync ``log`` (None: not open, nothing to sync), the ``what`` of a node under this
        policy. Raises :class:`StorageError` once tripped, and when the fsync fails (which
        trips it)."""
        self.check()
        if log is not None:
            try:
                log.sync()
            except OSError as exc:
                raise self.trip(what, exc) from exc

    def close(self, log: CommitLog | None, what: str) -> None:
        """Close ``log`` (None: not open), synced unless tripped. Never raises: a failed sync
        trips this."""
        if log is not None:
            try:
                log.close(sync=self.reason is None)
            except OSError as exc:
                self.trip(what, exc)


class Storage(Protocol):
    def get(self, key: bytes) -> list[Version]:
        """The key's sibling set; empty when the key is unknown."""
        ...

    def put(self, key: bytes, versions: Sequence[Version]) -> None:
        """Replace the key's sibling set. Raises :class:`StorageError` (a full disk, writes
        refused after a failed sync); then nothing changed."""
        ...

    @property
    def unsynced(self) -> bool:
        """True when some put may not be durable yet."""
        ...

    def keys(self) -> Iterator[bytes]:
        """Every stored key, in no particular order."""
        ...

    def scan(self, start: bytes = b"", end: bytes | None = None,
             where: Callable[[bytes], bool] | None = None,
             ) -> Iterator[tuple[bytes, list[Version]]]:
        """Stream ``(key, sibling set)`` for the keys in ``[start, end)`` (no ``end``: to the
        last key) for which ``where(key)`` holds (no ``where``: all), in key order, as of the
        call: later puts do not show. ``where`` is called for each key in order as the scan
        reaches it, and keys it rejects are never decoded."""
        ...

    def purge_tombstones(self, older_than_ms: int) -> int:
        """Forget keys whose siblings are all tombstones older than the given wall-clock ms.

        An engine may purge lazily (the LSM engine does, in compactions). Returns how many keys
        were purged since the previous call.
        """
        ...

    def sync(self) -> None:
        """Make every put so far durable. Raises :class:`StorageError` when it cannot; an
        engine with a :class:`FailStop` then refuses every later put and sync."""
        ...

    def close(self) -> None:
        """Sync and release files. The storage cannot be used afterwards."""
        ...

    def stats(self) -> dict[str, Any]:
        """Figures for ``/status``: key count, bytes, and engine specifics."""
        ...
