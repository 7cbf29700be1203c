"""The storage interface the node logic calls: a key's sibling set in, a key's sibling set out.

Calls are synchronous. A :meth:`Storage.put` has reached the operating system when it returns
(it survives the process being killed) and is durable (it survives power loss) once
:meth:`Storage.sync` has returned. The fsync policy decides who syncs when: the server syncs
before any acknowledgement leaves the node (``always``, with group commit), the node logic on a
timer (``interval``), or nobody (``never``). The node logic never touches files itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from kvcheck.store.versions import Version


class StorageError(Exception):
    """The engine could not carry out a call (disk full, I/O error). The key is unchanged."""


class Storage(Protocol):
    def get(self, key: bytes) -> list[Version]:
        """The key's sibling set; empty when the key is unknown."""
        ...

    def put(self, key: bytes, versions: Sequence[Version]) -> None:
        """Replace the key's sibling set. Raises :class:`StorageError`; then nothing changed."""
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
        """Make every put so far durable."""
        ...

    def close(self) -> None:
        """Sync and release files. The storage cannot be used afterwards."""
        ...

    def stats(self) -> dict[str, Any]:
        """Figures for ``/status``: key count, bytes, and engine specifics."""
        ...
