"""Local storage engines behind one small interface (see :mod:`store.storage.interface`)."""

from store.storage.commitlog import CommitLog, CorruptLogError, replay
from store.storage.interface import Storage, StorageError
from store.storage.logstore import LogStorage
from store.storage.memory import MemoryStorage

__all__ = [
    "CommitLog",
    "CorruptLogError",
    "LogStorage",
    "MemoryStorage",
    "Storage",
    "StorageError",
    "replay",
]
