"""The commit log: an append-only file of checksummed records, replayed on start-up.

File layout: an 8-byte magic (``KVLOG`` and a format version), then records::

    +-----------+-----------------+------------------+---------------+
    | length u32| header crc u32  | payload crc u32  | payload bytes |
    +-----------+-----------------+------------------+---------------+

All integers are big-endian; the header crc is CRC-32 of the length field, the payload crc is
CRC-32 of the payload. A record is written with one ``write`` on a file opened ``O_APPEND``, so a
killed process leaves either the whole record or none of it in the page cache; power loss can
leave a partial one, and only at the end.

Replay tells a *torn tail* (the last append, cut short: dropped with a warning and truncated
away) from *corruption* (damage followed by more data: start-up stops with the file and offset):

- fewer bytes left than a header, or a header that is all zeros from there to the end: torn;
- a header whose crc does not match: corrupt (headers are small enough to be written whole);
- a payload that runs past the end of the file: torn;
- a payload whose crc does not match: torn if it ends exactly at end of file, else corrupt.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from kvcheck.store.storage import faults

MAGIC = b"KVLOG\x00\x01\n"
_HEADER = struct.Struct(">III")
#: No record is larger (a key's sibling set is far smaller); a longer length is corruption.
MAX_RECORD = 64 * 1024 * 1024

log = logging.getLogger(__name__)


class CorruptLogError(Exception):
    """The commit log is damaged before its end; the node must not start on it."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"{path}: corrupt record at offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


def _header(payload: bytes) -> bytes:
    length = struct.pack(">I", len(payload))
    return length + struct.pack(">II", zlib.crc32(length), zlib.crc32(payload))


def replay(path: Path) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, payload)`` for every whole record in ``path``, oldest first.

    A torn tail is logged as a warning and truncated off the file once iteration reaches it.
    Raises :class:`CorruptLogError` on damage before the end and on a file that is not a
    commit log. A missing file yields nothing.
    """
    if not path.exists():
        return
    size = path.stat().st_size
    with path.open("rb") as f:
        magic = f.read(len(MAGIC))
        if magic != MAGIC:
            if len(magic) < len(MAGIC) and MAGIC.startswith(magic):
                _truncate(path, 0, size, "file header")
                return
            raise CorruptLogError(path, 0, "not a commit log (bad magic)")
        offset = len(MAGIC)
        while offset < size:
            header = f.read(_HEADER.size)
            if len(header) < _HEADER.size or (not header.strip(b"\0") and _zeros_to_end(f)):
                _truncate(path, offset, size, "record header")
                return
            length, header_crc, payload_crc = _HEADER.unpack(header)
            if zlib.crc32(header[:4]) != header_crc:
                raise CorruptLogError(path, offset, "record header checksum mismatch")
            if length > MAX_RECORD:
                raise CorruptLogError(path, offset, f"record length {length} exceeds limit")
            end = offset + _HEADER.size + length
            if end > size:
                _truncate(path, offset, size, "record payload")
                return
            payload = f.read(length)
            if zlib.crc32(payload) != payload_crc:
                if end == size:
                    _truncate(path, offset, size, "record payload")
                    return
                raise CorruptLogError(path, offset, "record payload checksum mismatch")
            yield offset, payload
            offset = end


def _zeros_to_end(f: BinaryIO) -> bool:
    here = f.tell()
    while chunk := f.read(1 << 16):
        if chunk.strip(b"\0"):
            f.seek(here)
            return False
    f.seek(here)
    return True


def _truncate(path: Path, offset: int, size: int, what: str) -> None:
    log.warning(
        "%s: dropping torn final record at offset %d (%d bytes, incomplete %s)",
        path, offset, size - offset, what,
    )
    with path.open("r+b") as f:
        f.truncate(offset)
        faults.fsync(f.fileno())


class CommitLog:
    """An open commit log, appending. Replay the file with :func:`replay` before opening it.

    An appended record is in the kernel when :meth:`append` returns, so it survives the process
    being killed; it survives power loss once :meth:`sync` has returned. Who calls :meth:`sync`,
    and when, is the fsync policy: after every append (``always``), every few ms (``interval``),
    or never. :meth:`sync` may run in another thread while appends go on; it covers at least
    every record appended before it was called.
    """

    def __init__(self, path: Path) -> None:
        """Open ``path`` for appending, creating it (with its header) if it is empty or missing.
        Raises OSError (a full disk, say); then no descriptor is left open, though a file
        created may be left behind empty (an empty log replays as empty)."""
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if os.fstat(self._fd).st_size < len(MAGIC):  # new, or a header cut short
                os.ftruncate(self._fd, 0)
                if os.write(self._fd, MAGIC) != len(MAGIC):
                    raise OSError(f"{path}: short write of the header")
                faults.fsync(self._fd)
            self.size = os.fstat(self._fd).st_size
        except BaseException:
            os.close(self._fd)
            raise
        self._appended = 0
        self._synced = 0

    @property
    def unsynced(self) -> bool:
        """True when some appended record may not be durable yet."""
        return self._synced != self._appended

    def append(self, payload: bytes) -> None:
        """Append one record. Raises ValueError if it is larger than :data:`MAX_RECORD`, and
        OSError if the write fails (the file is then as before)."""
        if len(payload) > MAX_RECORD:
            raise ValueError(f"record of {len(payload)} bytes exceeds {MAX_RECORD}")
        record = _header(payload) + payload
        try:
            written = 0
            while written < len(record):  # after a short write (a disk just filled), the write
                done = os.write(self._fd, record[written:])  # of the rest raises why
                if not done:
                    raise OSError(f"{self.path}: short write ({written} of {len(record)} bytes)")
                written += done
        except OSError:
            os.ftruncate(self._fd, self.size)  # never leave a partial record before the next
            raise
        self.size += written
        self._appended += 1

    def sync(self) -> None:
        """Make every record appended so far durable (a no-op when nothing is pending)."""
        target = self._appended
        if self._synced != target:
            faults.fdatasync(self._fd)
            self._synced = target

    def close(self, sync: bool = True) -> None:
        """Sync (unless ``sync`` is False) and close. The descriptor is closed even when the
        sync raises OSError. The log cannot be used afterwards."""
        if self._fd >= 0:
            try:
                if sync:
                    self.sync()
            finally:
                os.close(self._fd)
                self._fd = -1
