"""The memtable: the newest writes in memory, sorted when they are flushed or scanned.

A dict from key to sibling set, held *encoded* — the bytes an SSTable stores for it (an encoded
empty set marks a key deleted, shadowing older tables). Encoded, an entry is two objects the
garbage collector never visits (a bytes key and a bytes value), so a full collection's pause does
not grow with the memtable. Held as objects (a list, and a ``Version`` and its ``Dot`` per
sibling), the memtable made most of the 105,000 objects a node tracked under
``benchmarks/store_bench.py``, and each full collection stopped the node for 30 to 50 ms. A read
decodes its entry (a few µs).

The standard library has no sorted container, and a sorted list costs O(n) per insert; so keys are
sorted once, by :meth:`Memtable.items`, when the memtable is flushed or scanned (Timsort,
O(n log n)), and point reads and writes stay O(1). The memtable also records which commit-log
segments hold its writes, so that the SSTable it becomes can retire them.
"""

from __future__ import annotations

import bisect

#: Bytes per entry beyond its key and encoded value (its dict slot, the bytes objects' headers),
#: so that :attr:`Memtable.bytes` tracks the memory used.
ENTRY_OVERHEAD = 100


class Memtable:
    """Writes by key, all held in commit-log segments numbered ``first_segment`` or later."""

    def __init__(self, first_segment: int) -> None:
        self.first_segment = first_segment
        self._data: dict[bytes, bytes] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: bytes) -> bytes | None:
        """The key's encoded sibling set, or None when the memtable lacks it."""
        return self._data.get(key)

    def put(self, key: bytes, encoded: bytes) -> None:
        """Record ``encoded``, the key's sibling set as an SSTable stores it, replacing the
        one held."""
        old = self._data.get(key)
        self.bytes += len(encoded) + (len(key) + ENTRY_OVERHEAD if old is None else -len(old))
        self._data[key] = encoded

    def items(self, start: bytes = b"") -> list[tuple[bytes, bytes]]:
        """A sorted snapshot of the entries with key >= ``start``."""
        keys = sorted(self._data)
        return [(k, self._data[k]) for k in keys[bisect.bisect_left(keys, start):]]
