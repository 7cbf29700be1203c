"""SSTables: immutable files of sorted keys with a sparse index and a Bloom filter.

File layout (integers big-endian)::

    magic                 8 bytes  b"KVSST\\0\\1\\n"
    data block ...        msgpack [[key, value], ...] in key order, then its CRC-32 (u32)
    index block           msgpack [[first key, offset, length], ...] per data block, then CRC-32
    Bloom block           the filter (see :mod:`kvcheck.store.storage.bloom`), then CRC-32
    footer (44 bytes)     index offset u64, index length u32, Bloom offset u64, Bloom length u32,
                          entry count u64, CRC-32 of those 32 bytes u32, magic 8 bytes

A block's ``length`` excludes its 4-byte checksum. ``value`` is opaque bytes to this module (the
engine stores a msgpack-encoded sibling set there). A table is written under a temporary name,
fsynced, renamed into place and the directory fsynced (by the engine), so a file with the final
name is whole; any damage found later is corruption, reported as :class:`CorruptSSTableError`
with the file and offset, never returned as data. A read the device fails is a
:class:`~kvcheck.store.storage.interface.StorageError` too.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import struct
import zlib
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import msgpack

from kvcheck.store.storage import faults
from kvcheck.store.storage.bloom import BloomFilter
from kvcheck.store.storage.interface import StorageError

MAGIC = b"KVSST\x00\x01\n"
_FOOTER = struct.Struct(">QIQIQ")
FOOTER_SIZE = _FOOTER.size + 4 + len(MAGIC)
_CRC = struct.Struct(">I")


class CorruptSSTableError(StorageError):
    """An SSTable is damaged: a checksum mismatch or a malformed structure at ``offset``."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"{path}: corrupt SSTable at offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


def fsync_dir(path: Path) -> None:
    """Make renames and unlinks in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        faults.fsync(fd)
    finally:
        os.close(fd)


class SSTableWriter:
    """Writes one table under ``path`` + ``.tmp``; :meth:`finish` publishes it as ``path``.

    Keys must be added in strictly increasing order (ValueError otherwise). OSError from the
    file system propagates (a full disk, a failed fsync); :meth:`abort` then removes the
    temporary file.
    """

    def __init__(self, path: Path, expected_keys: int, fp_rate: float,
                 block_bytes: int = 4096) -> None:
        self.path = path
        self.temporary = path.with_name(path.name + ".tmp")
        # Unbuffered: each block is one write, and nothing is left in a buffer to write on
        # close (which would fail again on a full disk).
        self._fd = os.open(self.temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._offset = 0
        try:
            self._write(MAGIC)
        except BaseException:
            self.abort()
            raise
        self._bloom = BloomFilter.for_keys(expected_keys, fp_rate)
        self._block_bytes = block_bytes
        self._block: list[tuple[bytes, bytes]] = []
        self._block_size = 0
        self._index: list[tuple[bytes, int, int]] = []
        self._last: bytes | None = None
        self.entries = 0

    def add(self, key: bytes, value: bytes) -> None:
        if self._last is not None and key <= self._last:
            raise ValueError(f"keys out of order: {key!r} after {self._last!r}")
        self._last = key
        self._bloom.add(key)
        self._block.append((key, value))
        self._block_size += len(key) + len(value) + 8
        self.entries += 1
        if self._block_size >= self._block_bytes:
            self._flush_block()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        self._offset += len(data)

    def _write_block(self, payload: bytes) -> tuple[int, int]:
        at = self._offset
        self._write(payload + _CRC.pack(zlib.crc32(payload)))
        return at, len(payload)

    def _flush_block(self) -> None:
        if self._block:
            first = self._block[0][0]
            offset, length = self._write_block(msgpack.packb(self._block, use_bin_type=True))
            self._index.append((first, offset, length))
            self._block, self._block_size = [], 0

    def sync(self) -> None:
        """Push what was added so far to disk, so that :meth:`finish` has little left to sync
        (the engine calls this after each slice of work, keeping every fsync short)."""
        faults.fdatasync(self._fd)

    def finish(self) -> int:
        """Write index, filter and footer, fsync, and rename into place; the caller fsyncs the
        directory (:func:`fsync_dir`) to make the rename durable.

        Returns the file's size.
        """
        self._flush_block()
        index_at, index_len = self._write_block(msgpack.packb(self._index, use_bin_type=True))
        bloom_at, bloom_len = self._write_block(self._bloom.to_bytes())
        fields = _FOOTER.pack(index_at, index_len, bloom_at, bloom_len, self.entries)
        self._write(fields + _CRC.pack(zlib.crc32(fields)) + MAGIC)
        faults.fsync(self._fd)
        fd, self._fd = self._fd, -1
        os.close(fd)
        os.replace(self.temporary, self.path)
        return self._offset

    def abort(self) -> None:
        """Close and delete the temporary file, if it is still there. Never raises: a file
        that cannot be deleted is deleted at the next start-up."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            self.temporary.unlink(missing_ok=True)


class SSTable:
    """An open table: footer, index and Bloom filter in memory, data blocks read on demand.

    Raises :class:`CorruptSSTableError` when the footer, index or filter fails its checks,
    OSError when the file cannot be opened.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        try:
            self.size = os.fstat(self._fd).st_size
            self._load()
        except BaseException:
            os.close(self._fd)
            raise
        self.lookups = 0
        self.bloom_passes = 0
        self.bloom_false_positives = 0

    def _load(self) -> None:
        at = self.size - FOOTER_SIZE
        if at < len(MAGIC) or os.pread(self._fd, len(MAGIC), 0) != MAGIC:
            raise CorruptSSTableError(self.path, 0, "bad magic or file too short")
        footer = os.pread(self._fd, FOOTER_SIZE, at)
        fields, crc, magic = footer[:_FOOTER.size], footer[_FOOTER.size:-len(MAGIC)], footer[-8:]
        if magic != MAGIC or _CRC.unpack(crc)[0] != zlib.crc32(fields):
            raise CorruptSSTableError(self.path, at, "footer checksum mismatch")
        index_at, index_len, bloom_at, bloom_len, self.entries = _FOOTER.unpack(fields)
        try:
            index = msgpack.unpackb(self._block(index_at, index_len), raw=False)
            self._first_keys = [bytes(first) for first, _, _ in index]
            # Offsets and lengths in arrays: 12 bytes a block beside its first key.
            self._offsets = array("Q", (offset for _, offset, _ in index))
            self._lengths = array("I", (length for _, _, length in index))
            self.bloom = BloomFilter.from_bytes(self._block(bloom_at, bloom_len))
        except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
            raise CorruptSSTableError(self.path, index_at, f"malformed index: {exc}") from None

    def _block(self, offset: int, length: int, fd: int | None = None) -> bytes:
        try:
            raw = faults.pread(self._fd if fd is None else fd, length + _CRC.size, offset)
        except OSError as exc:
            raise StorageError(f"{self.path}: read failed at offset {offset}: {exc}") from exc
        if len(raw) != length + _CRC.size:
            raise CorruptSSTableError(self.path, offset, "block runs past end of file")
        payload = raw[:length]
        if _CRC.unpack(raw[length:])[0] != zlib.crc32(payload):
            raise CorruptSSTableError(self.path, offset, "block checksum mismatch")
        return payload

    def _entries(self, i: int, fd: int | None = None) -> list[list[bytes]]:
        offset, length = self._offsets[i], self._lengths[i]
        payload = self._block(offset, length, fd)
        try:
            entries: list[list[bytes]] = msgpack.unpackb(payload, raw=False)
        except (ValueError, msgpack.UnpackException) as exc:
            raise CorruptSSTableError(self.path, offset, f"malformed block: {exc}") from None
        return entries

    def get(self, key: bytes, hashes: tuple[int, int] | None = None) -> bytes | None:
        """The value stored for ``key``, or None. Consults the Bloom filter first when given
        the key's :func:`~kvcheck.store.storage.bloom.key_hashes` (None: skip it, to measure what
        the filter saves).

        Raises :class:`CorruptSSTableError` when the block holding the key is damaged.
        """
        self.lookups += 1
        if hashes is not None:
            if not self.bloom.contains_hashes(hashes):
                return None
            self.bloom_passes += 1
        i = bisect.bisect_right(self._first_keys, key) - 1
        if i >= 0:
            for k, value in self._entries(i):
                if k == key:
                    return value
        if hashes is not None:
            self.bloom_false_positives += 1
        return None

    def scan(self, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Stream ``(key, value)`` from the first key >= ``start``, one block in memory at a time.

        The scan holds its own descriptor, so it keeps working after the table is closed or its
        file deleted. Raises :class:`CorruptSSTableError` on a damaged block.
        """
        # Closed when the scan ends or is dropped, even if it never started.
        handle = open(os.dup(self._fd), "rb", buffering=0)  # noqa: SIM115
        first = max(bisect.bisect_right(self._first_keys, start) - 1, 0)
        return self._scan(handle, first, start)

    def _scan(self, handle: BinaryIO, first: int, start: bytes) -> Iterator[tuple[bytes, bytes]]:
        with handle:
            for i in range(first, len(self._offsets)):
                for key, value in self._entries(i, handle.fileno()):
                    if key >= start:
                        yield key, value

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
