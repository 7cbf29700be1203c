"""The commit-log engine: every write appended to the commit log, all keys indexed in memory.

This is the write path's first stage on its own: durable and crash-safe, but it keeps the whole
data set in memory and the log grows without bound. The memtable/SSTable engine replaces it
behind the same interface.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgpack

from store.storage.commitlog import CommitLog, CorruptLogError, replay
from store.storage.interface import StorageError
from store.storage.memory import MemoryStorage
from store.versions import Version, decode_versions, encode_versions

log = logging.getLogger(__name__)

LOG_NAME = "commit.log"


class LogStorage:
    """Storage in ``data_dir``: replays the commit log on open, appends on every put.

    Raises :class:`~store.storage.commitlog.CorruptLogError` when the log is damaged before
    its end (the node must not start on it).
    """

    def __init__(self, data_dir: Path) -> None:
        path = data_dir / LOG_NAME
        self._index = MemoryStorage()
        self._records = 0
        for offset, payload in replay(path):
            try:
                key, raw = msgpack.unpackb(payload, raw=False)
                if not isinstance(key, bytes):
                    raise TypeError("key is not bytes")
                self._index.put(key, decode_versions(raw))
            except (ValueError, TypeError) as exc:
                raise CorruptLogError(path, offset, f"undecodable record: {exc}") from None
            self._records += 1
        self._log = CommitLog(path)
        log.info("replayed %d records from %s", self._records, path)

    def get(self, key: bytes) -> list[Version]:
        return self._index.get(key)

    def put(self, key: bytes, versions: Sequence[Version]) -> None:
        payload = msgpack.packb([key, encode_versions(versions)], use_bin_type=True)
        try:
            self._log.append(payload)
        except (OSError, ValueError) as exc:
            raise StorageError(f"commit log append failed: {exc}") from exc
        self._records += 1
        self._index.put(key, versions)

    def keys(self) -> Iterator[bytes]:
        return self._index.keys()

    def purge_tombstones(self, older_than_ms: int) -> int:
        return self._index.purge_tombstones(older_than_ms)

    @property
    def unsynced(self) -> bool:
        return self._log.unsynced

    def sync(self) -> None:
        try:
            self._log.sync()
        except OSError as exc:
            raise StorageError(f"commit log sync failed: {exc}") from exc

    def close(self) -> None:
        self._log.close()

    def stats(self) -> dict[str, Any]:
        return {
            "engine": "commitlog",
            "keys": self._index.stats()["keys"],
            "commit_log_bytes": self._log.size,
            "commit_log_records": self._records,
        }
