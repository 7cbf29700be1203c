"""The memtable: the newest writes in memory, sorted when they are flushed or scanned.

A dict from key to sibling set (an empty set marks a key deleted, shadowing older tables). The
standard library has no sorted container, and a sorted list costs O(n) per insert; so keys are
sorted once, by :meth:`Memtable.items`, when the memtable is flushed or scanned (Timsort,
O(n log n)), and point reads and writes stay O(1). The memtable also records which commit-log
segments hold its writes, so that the SSTable it becomes can retire them.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from kvcheck.store.versions import Version

#: Python objects per entry beyond the encoded record (dict slots, list, Version, Dot, context
#: dict): measured at about 300 bytes, so :attr:`Memtable.bytes` tracks the memory used.
ENTRY_OVERHEAD = 300


class Memtable:
    """Writes by key, all held in commit-log segments numbered ``first_segment`` or later."""

    def __init__(self, first_segment: int) -> None:
        self.first_segment = first_segment
        self._data: dict[bytes, list[Version]] = {}
        self._sizes: dict[bytes, int] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: bytes) -> list[Version] | None:
        """The key's sibling set (empty: deleted here), or None when the memtable lacks it."""
        return self._data.get(key)

    def put(self, key: bytes, versions: Sequence[Version], size: int) -> None:
        """Record ``versions`` for ``key``, replacing its set; ``size``: their encoded size."""
        self._data[key] = list(versions)
        size += len(key) + ENTRY_OVERHEAD
        self.bytes += size - self._sizes.get(key, 0)
        self._sizes[key] = size

    def items(self, start: bytes = b"") -> list[tuple[bytes, list[Version]]]:
        """A sorted snapshot of the entries with key >= ``start``."""
        keys = sorted(self._data)
        return [(k, self._data[k]) for k in keys[bisect.bisect_left(keys, start):]]
