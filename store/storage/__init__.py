"""Local storage engines behind one small interface (see :mod:`store.storage.interface`)."""

from store.storage.commitlog import CommitLog, CorruptLogError, replay
from store.storage.engine import DataDirError, EngineOptions, LsmStorage
from store.storage.interface import Storage, StorageError
from store.storage.memory import MemoryStorage
from store.storage.sstable import CorruptSSTableError

__all__ = [
    "CommitLog",
    "CorruptLogError",
    "CorruptSSTableError",
    "DataDirError",
    "EngineOptions",
    "LsmStorage",
    "MemoryStorage",
    "Storage",
    "StorageError",
    "replay",
]
