"""Local storage engines behind one small interface (see :mod:`kvcheck.store.storage.interface`)."""

from kvcheck.store.storage.commitlog import CommitLog, CorruptLogError, replay
from kvcheck.store.storage.datafiles import DataDirError
from kvcheck.store.storage.engine import EngineOptions, LsmStorage
from kvcheck.store.storage.interface import FailStop, Storage, StorageError
from kvcheck.store.storage.memory import MemoryStorage
from kvcheck.store.storage.sstable import CorruptSSTableError

__all__ = [
    "CommitLog",
    "CorruptLogError",
    "CorruptSSTableError",
    "DataDirError",
    "EngineOptions",
    "FailStop",
    "LsmStorage",
    "MemoryStorage",
    "Storage",
    "StorageError",
    "replay",
]
