"""Storage in a dict: what the simulator's disk holds, and storage for unit tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from kvcheck.store.versions import Version


class MemoryStorage:
    """A dict from key to sibling set. Nothing is lost while the object lives; it never
    fails. :class:`~kvcheck.store.sim_disk.SimDisk` adds a device's syncs and failures."""

    def __init__(self) -> None:
        self._data: dict[bytes, list[Version]] = {}

    def copy(self) -> MemoryStorage:
        """Another storage holding the same sibling sets, changed independently."""
        twin = MemoryStorage()
        twin._data = {key: list(versions) for key, versions in self._data.items()}
        return twin

    def get(self, key: bytes) -> list[Version]:
        return list(self._data.get(key, ()))

    def put(self, key: bytes, versions: Sequence[Version]) -> None:
        if versions:
            self._data[key] = list(versions)
        else:
            self._data.pop(key, None)

    def keys(self) -> Iterator[bytes]:
        return iter(list(self._data))

    def scan(self, start: bytes = b"", end: bytes | None = None,
             where: Callable[[bytes], bool] | None = None,
             ) -> Iterator[tuple[bytes, list[Version]]]:
        snapshot = {k: list(v) for k, v in self._data.items()
                    if k >= start and (end is None or k < end)}
        return ((k, snapshot[k]) for k in sorted(snapshot) if where is None or where(k))

    def purge_tombstones(self, older_than_ms: int) -> int:
        doomed = [
            key
            for key, versions in self._data.items()
            if all(v.value is None and v.timestamp < older_than_ms for v in versions)
        ]
        for key in doomed:
            del self._data[key]
        return len(doomed)

    unsynced = False

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {"engine": "memory", "keys": len(self._data)}
