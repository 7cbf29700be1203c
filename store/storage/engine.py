"""The log-structured storage engine: commit log, memtable, SSTables, compaction.

Theory of operation
-------------------
*Write.* :meth:`LsmStorage.put` appends ``[key, sibling set]`` to the current commit-log segment
(``wal-NNNNNNNN.log``), then records the set in the memtable. The put has reached the kernel when
it returns and is durable once :meth:`~LsmStorage.sync` has returned (the server syncs before any
acknowledgement leaves, with group commit). When the memtable has grown past ``memtable_bytes``,
the next put first *freezes* it: the current segment is synced, a new segment is opened, and a
fresh memtable takes the writes while the frozen one is flushed.

*Flush.* The frozen memtable is written, sorted, to an SSTable (see
:mod:`kvcheck.store.storage.sstable`) a slice at a time by :meth:`~LsmStorage.step`, which the
server calls from its event loop between requests — cooperative background work, because the store
runs under libfaketime, where threads and timed waits misbehave, and a subprocess would need the
memtable shipped to it. The table is written under a temporary name, fsynced, renamed, the directory
fsynced; only then are the segments it covers deleted. If a memtable fills while the previous flush
is still running, the put finishes that flush first (back-pressure: at most two memtables in
memory).

*Generations.* Segments are numbered 1, 2, 3, … and an SSTable is named ``sst-LO-HI.sst`` after
the segments whose writes it holds. A flush covers the frozen memtable's segments; a compaction's
output covers the union of its inputs, which are always adjacent in age. So the live tables'
ranges and the remaining segments tile ``1..N`` exactly, the newest number always a segment. Start-
up checks that tiling (:mod:`kvcheck.store.storage.datafiles`): a gap means a missing file, and
the node refuses to start rather than serve without it.

*Read.* The memtable, then the frozen memtable, then the SSTables newest to oldest, skipping any
whose Bloom filter rules the key out; the first place holding the key answers. Newest-wins is the
vector-clock merge here: the node only ever puts the :func:`~kvcheck.store.versions.sync` of what it
read with what it learnt, so a newer sibling set always supersedes the older ones (``sync(newer,
older) == newer``), except where the node deliberately forgot a key (a purge, recorded as an empty
set), which a merge would resurrect. :class:`Storage` says so: a put *replaces* the key's set.

*Compaction* is size-tiered, in the style of RocksDB's universal compaction, chosen over leveled
because it writes each byte fewer times (the engine is Python: CPU per byte written is the cost
that matters), and because it merges runs of tables adjacent in age, which keeps newest-wins and
the generation tiling trivially true. Two triggers, checked when no compaction runs:

- space amplification: when the tables newer than the oldest hold more than ``max_space_amp``
  times the oldest's bytes (or there are more than ``max_tables``), merge them all. Under
  overwrites this bounds the disk used to about ``1 + max_space_amp`` times the live data;
- tiers: a table's tier is ``floor(log_fanout(bytes / memtable_bytes))``; the newest run of
  ``fanout`` adjacent tables of one tier is merged into one of the next tier.

A merge keeps each key's newest set. When the run includes the oldest table there is nothing older
for a deletion to shadow, so it also drops empty sets and keys whose siblings are all tombstones
older than the cutoff last given to :meth:`~LsmStorage.purge_tombstones`. Compaction runs in
slices like a flush; reads use the input tables until the output is renamed into place and swapped
in, and a crash before that leaves only a temporary file, deleted at start-up (and a crash after
it leaves inputs whose range the output contains, also deleted at start-up).

*Errors.* A put the commit log cannot take (a full disk) raises StorageError and changes
nothing; so does one whose memtable cannot be frozen because the previous flush fails. A flush
or compaction that fails (no space, a failed read or fsync) is abandoned — its temporary file
deleted, its input still on disk — and :meth:`~LsmStorage.step` starts it again later; a
compaction starts only when the file system has as much free space as its inputs take, so that
it does not fill the disk under the commit log. Opening needs no space: without room for a new
segment the engine serves reads and refuses puts until it has. A failed fsync of the commit log
or of the directory trips the node's :class:`~kvcheck.store.storage.interface.FailStop`: every
put, sync and background step is refused until the process restarts; a failed fsync of a table
not yet renamed into place is only retried, since no acknowledged write rests on it.
"""

from __future__ import annotations

import errno
import heapq
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgpack

from kvcheck.store.storage import faults
from kvcheck.store.storage.bloom import key_hashes
from kvcheck.store.storage.commitlog import CommitLog, CorruptLogError, replay
from kvcheck.store.storage.datafiles import segment_name, survey, table_name
from kvcheck.store.storage.interface import FailStop, StorageError
from kvcheck.store.storage.memtable import Memtable
from kvcheck.store.storage.sstable import SSTable, SSTableWriter, fsync_dir
from kvcheck.store.versions import Version, decode_versions, encode_versions

log = logging.getLogger(__name__)

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """Tuning of :class:`LsmStorage`. Raises ValueError for values out of range."""

    #: Freeze and flush the memtable once it holds this many bytes (estimated).
    memtable_bytes: int = 4 << 20
    #: Target size of an SSTable data block (the unit read and checksummed).
    block_bytes: int = 4096
    #: False-positive rate the Bloom filters are sized for.
    bloom_fp_rate: float = 0.01
    #: Consult the Bloom filters on reads (off only to measure what they save).
    use_bloom: bool = True
    #: Adjacent tables of one tier merged together; also the ratio between tiers.
    fanout: int = 4
    #: Merge every table once the newer ones outweigh the oldest by this factor.
    max_space_amp: float = 1.0
    #: Merge every table once there are more than this many.
    max_tables: int = 24
    #: Bytes written (and synced) by one :meth:`LsmStorage.step`.
    step_bytes: int = 256 << 10

    def __post_init__(self) -> None:
        if min(self.memtable_bytes, self.block_bytes, self.step_bytes) < 1:
            raise ValueError("memtable_bytes, block_bytes and step_bytes must be positive")
        if not 0 < self.bloom_fp_rate < 1:
            raise ValueError("bloom_fp_rate must be between 0 and 1")
        if self.fanout < 2 or self.max_tables < 2 or self.max_space_amp <= 0:
            raise ValueError("fanout and max_tables must be at least 2, max_space_amp positive")


@dataclass(eq=False, slots=True)
class _Table:
    lo: int
    hi: int
    sst: SSTable


@dataclass(eq=False)
class _Build:
    """An SSTable being written a slice at a time from a sorted source."""

    lo: int
    hi: int
    writer: SSTableWriter
    source: Iterator[tuple[bytes, bytes]]
    inputs: list[_Table] = field(default_factory=list)

    def step(self, budget: int) -> bool:
        """Write about ``budget`` bytes and sync them; True once the source is exhausted."""
        written = 0
        for key, value in self.source:
            self.writer.add(key, value)
            written += len(key) + len(value)
            if written >= budget:
                self.writer.sync()
                return False
        return True


def _tag(scan: Iterable[tuple[bytes, V]], rank: int) -> Iterator[tuple[bytes, int, V]]:
    for key, value in scan:
        yield key, rank, value


def _newest_first(scans: Sequence[Iterable[tuple[bytes, V]]]) -> Iterator[tuple[bytes, V]]:
    """Merge key-sorted scans, given newest first, yielding each key once with its newest value."""
    last: bytes | None = None
    for key, _, value in heapq.merge(*(_tag(s, rank) for rank, s in enumerate(scans))):
        if key != last:
            last = key
            yield key, value


def _pack(versions: Sequence[Version]) -> bytes:
    packed: bytes = msgpack.packb(encode_versions(versions), use_bin_type=True)
    return packed


def _unpack(raw: bytes) -> list[Version]:
    return decode_versions(msgpack.unpackb(raw, raw=False))


def _log_record(key: bytes, encoded: bytes) -> bytes:
    """The commit-log record of a put: ``[key, versions]`` in msgpack, which is the header of a
    two-element array, then each element's own encoding — ``encoded`` as :func:`_pack` made it."""
    return b"\x92" + msgpack.packb(key, use_bin_type=True) + encoded


_EMPTY = _pack([])


class LsmStorage:
    """The engine on ``data_dir`` (created if absent). Implements :class:`Storage`, plus
    :meth:`scan`, :meth:`step`, :meth:`flush` and :meth:`compact`.

    Opening recovers: temporary files and compaction inputs left by a crash are deleted, the
    segments not yet flushed are replayed into the memtable. It needs no free space: if the
    current segment cannot be created (a full disk), the engine opens without it, serves
    reads, and refuses puts until it can. Raises
    :class:`~kvcheck.store.storage.commitlog.CorruptLogError` for a damaged segment,
    :class:`~kvcheck.store.storage.sstable.CorruptSSTableError` for a damaged table and
    :class:`~kvcheck.store.storage.datafiles.DataDirError` for a missing file; the node must
    not start on any of them.

    ``fail_stop`` is the node's fsync failure policy (a new one if not given), shared with
    its hint log: a failed fsync of the commit log or of the directory trips it.
    """

    def __init__(self, data_dir: Path, options: EngineOptions | None = None,
                 fail_stop: FailStop | None = None) -> None:
        self.dir = data_dir
        self.options = options or EngineOptions()
        self.fail_stop = fail_stop or FailStop()
        #: The last error of background work (None once a slice succeeds): the caller of
        #: :meth:`step` backs off while it is set.
        self.background_error: str | None = None
        self._log: CommitLog | None = None  # None until the current segment could be opened
        if faults.ACTIVE is not None:
            log.warning("storage fault hook ON (%s=%s): for tests only", faults.ENV,
                        faults.ACTIVE)
        self._tables: list[_Table] = []  # oldest first
        self._frozen: Memtable | None = None
        self._flush: _Build | None = None
        self._compaction: _Build | None = None
        self._purge_before: int | None = None
        self._purged_unreported = 0
        self._counters: Counter[str] = Counter()
        self._recover()

    # -- start-up --

    def _recover(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        found = survey(self.dir)
        try:
            for lo, hi in sorted(found.live):
                self._tables.append(_Table(lo, hi, SSTable(found.live[lo, hi])))
            # Only once the tables that supersede them have opened cleanly:
            for path in found.finished:
                log.warning("%s: input of a finished compaction, deleting", path)
                path.unlink()
            for path in found.flushed:
                log.info("%s: already flushed, deleting", path)
                path.unlink()
            segments = found.segments
            self._segment = max(segments, default=found.floor + 1)
            self._memtable = Memtable(min(segments, default=self._segment))
            records = sum(self._replay(segments[n]) for n in sorted(segments))
        except BaseException:
            self._close_tables()
            raise
        try:
            self._open_log()
        except (OSError, StorageError) as exc:
            log.error("cannot open commit-log segment %d, refusing writes until it can: %s",
                      self._segment, exc)
        log.info("opened %s: %d tables, %d records replayed", self.dir, len(self._tables), records)

    def _replay(self, path: Path) -> int:
        count = 0
        for offset, payload in replay(path):
            try:
                key, raw = msgpack.unpackb(payload, raw=False)
                if not isinstance(key, bytes):
                    raise TypeError("key is not bytes")
                self._memtable.put(key, _pack(decode_versions(raw)))
            except (ValueError, TypeError) as exc:
                raise CorruptLogError(path, offset, f"undecodable record: {exc}") from None
            count += 1
        return count

    # -- the Storage interface --

    def get(self, key: bytes) -> list[Version]:
        """The key's sibling set; empty when unknown. Raises
        :class:`~kvcheck.store.storage.sstable.CorruptSSTableError` when a block it reads is
        damaged, and :class:`StorageError` when the device fails the read."""
        for memtable in (self._memtable, self._frozen):
            if memtable is not None and (found := memtable.get(key)) is not None:
                return _unpack(found)
        hashes = key_hashes(key) if self.options.use_bloom else None
        for table in reversed(self._tables):
            raw = table.sst.get(key, hashes)
            if raw is not None:
                return _unpack(raw)
        return []

    def put(self, key: bytes, versions: Sequence[Version]) -> None:
        """Replace the key's sibling set (empty: forget the key). Raises :class:`StorageError`
        when the commit log cannot be written (a full disk), when a full memtable cannot be
        frozen (its predecessor's flush fails), and always once :attr:`fail_stop` has
        tripped; then nothing changed."""
        self.fail_stop.check()
        try:
            try:
                self._open_log()
            except OSError as exc:
                raise StorageError(f"cannot open a commit-log segment: {exc}") from exc
            if self._memtable.bytes >= self.options.memtable_bytes:
                try:
                    self._freeze()
                except OSError as exc:
                    raise StorageError(f"the memtable is full and cannot be flushed: {exc}"
                                       ) from exc
            assert self._log is not None
            encoded = _pack(versions)
            try:
                self._log.append(_log_record(key, encoded))
            except (OSError, ValueError) as exc:
                raise StorageError(f"commit log append failed: {exc}") from exc
        except StorageError:
            self._counters["write_errors"] += 1
            raise
        self._memtable.put(key, encoded)

    @property
    def unsynced(self) -> bool:
        return self._log is not None and self._log.unsynced

    def sync(self) -> None:
        """Make every put so far durable. Raises :class:`StorageError` when fsync fails, which
        trips :attr:`fail_stop`, and on every call after that (a later fsync could succeed
        without the pages the failed one lost)."""
        self.fail_stop.sync(self._log, "commit log sync")

    def _open_log(self) -> None:
        """Open (create) the current segment if it is not open. Raises OSError, or
        StorageError when the directory's fsync fails."""
        if self._log is None:
            segment = CommitLog(self.dir / segment_name(self._segment))
            try:
                self._sync_dir()
            except StorageError:
                segment.close(sync=False)
                raise
            self._log = segment

    def _sync_dir(self) -> None:
        """Make renames and new files in the directory durable; a failure trips
        :attr:`fail_stop` (acknowledged writes depend on them) and raises StorageError."""
        try:
            fsync_dir(self.dir)
        except OSError as exc:
            raise self.fail_stop.trip("fsync of the data directory", exc) from exc

    def keys(self) -> Iterator[bytes]:
        """Every stored key, in key order, streamed (see :meth:`scan`)."""
        return (key for key, _ in self.scan())

    def scan(self, start: bytes = b"", end: bytes | None = None,
             where: Callable[[bytes], bool] | None = None,
             ) -> Iterator[tuple[bytes, list[Version]]]:
        """Stream ``(key, sibling set)`` for keys in ``[start, end)`` in key order.

        A snapshot as of the call: the memtables are copied, and the tables are read through
        descriptors of their own, so puts, flushes and compactions meanwhile do not disturb it.
        Memory is one block per table plus the memtables. Raises
        :class:`~kvcheck.store.storage.sstable.CorruptSSTableError` on a damaged block.
        """
        scans: list[Iterable[tuple[bytes, bytes]]] = [
            m.items(start) for m in (self._memtable, self._frozen) if m is not None]
        scans.extend(t.sst.scan(start) for t in reversed(self._tables))
        return self._scan(scans, end, where)

    @staticmethod
    def _scan(scans: Sequence[Iterable[tuple[bytes, bytes]]],
              end: bytes | None, where: Callable[[bytes], bool] | None,
              ) -> Iterator[tuple[bytes, list[Version]]]:
        for key, value in _newest_first(scans):
            if end is not None and key >= end:
                return
            if where is not None and not where(key):
                continue
            if versions := _unpack(value):
                yield key, versions

    def purge_tombstones(self, older_than_ms: int) -> int:
        """Let compactions that include the oldest table drop keys whose siblings are all
        tombstones older than ``older_than_ms``. Purging is lazy: returns how many keys
        compactions dropped since the previous call."""
        self._purge_before = older_than_ms
        purged, self._purged_unreported = self._purged_unreported, 0
        return purged

    def close(self) -> None:
        """Abandon background work (its input is still on disk), sync (unless
        :attr:`fail_stop` has tripped) and close files. Never raises: a failed sync is logged
        and trips :attr:`fail_stop`."""
        for build in (self._flush, self._compaction):
            if build is not None:
                build.writer.abort()
        self._flush = self._compaction = None
        self.fail_stop.close(self._log, "commit log sync")
        self._close_tables()

    def _close_tables(self) -> None:
        for table in self._tables:
            table.sst.close()

    # -- background work --

    @property
    def work_pending(self) -> bool:
        """True when a flush or a compaction is waiting for :meth:`step`."""
        return self._frozen is not None or self._compaction is not None or bool(self._pick())

    def step(self) -> bool:
        """Do one slice (about ``step_bytes``) of a flush, else of a compaction. Returns
        :attr:`work_pending`, or False after an error (a full disk, a failed read or fsync),
        which is logged, counted and kept in :attr:`background_error`, never raised: the work
        is retried from its start at a later call (its input is still on disk), so a caller
        should back off while :attr:`background_error` is set. Does nothing and returns False
        once :attr:`fail_stop` has tripped: the files stay as they are until the restart."""
        if self.fail_stop.reason is not None:
            return False
        try:
            if self._frozen is not None:
                self._step_flush()
            else:
                self._step_compaction()
        except (OSError, StorageError) as exc:
            if self.background_error is None:
                log.error("storage background work failed, will retry: %s", exc)
            self._counters["background_errors"] += 1
            self.background_error = str(exc)
            return False
        if self.background_error is not None:
            log.info("storage background work succeeded again")
            self.background_error = None
        return self.work_pending

    def flush(self) -> None:
        """Freeze the memtable (if it holds anything) and flush it, to completion. Raises
        OSError or StorageError if a file cannot be written (the data stays in the commit log,
        the flush starts again at the next call)."""
        self.fail_stop.check()
        self._open_log()
        if len(self._memtable):
            self._freeze()
        while self._frozen is not None:
            self._step_flush()

    def compact(self) -> None:
        """Flush, run the compactions due, then rewrite whatever tables remain as one (purging).
        Raises OSError or StorageError if a file cannot be written (the inputs stay in place)."""
        self.flush()
        while self._compaction is not None or self._pick():
            self._step_compaction()
        if self._tables:
            self._compaction = self._start_compaction(list(self._tables))
            while self._compaction is not None:
                self._step_compaction()

    def _freeze(self) -> None:
        """Sync the open segment, open the next and give it a fresh memtable, once the previous
        flush is done. Raises OSError or StorageError; then nothing changed but that flush's
        progress."""
        assert self._log is not None
        if self._frozen is not None:
            self._counters["flush_stalls"] += 1
            while self._frozen is not None:
                self._step_flush()
        self.sync()
        new_log = CommitLog(self.dir / segment_name(self._segment + 1))
        try:
            self._sync_dir()
        except StorageError:
            new_log.close(sync=False)
            raise
        self._log.close()
        self._log = new_log
        self._segment += 1
        self._frozen, self._memtable = self._memtable, Memtable(self._segment)

    def _step_flush(self) -> None:
        frozen = self._frozen
        assert frozen is not None
        if self._flush is None:
            lo, hi = frozen.first_segment, self._segment - 1
            writer = SSTableWriter(self.dir / table_name(lo, hi), len(frozen),
                                   self.options.bloom_fp_rate, self.options.block_bytes)
            self._flush = _Build(lo, hi, writer, iter(frozen.items()))
        build = self._flush
        try:
            if not build.step(self.options.step_bytes):
                return
            size = build.writer.finish()
            self._sync_dir()
            table = SSTable(build.writer.path)
        except BaseException:
            build.writer.abort()
            self._flush = None
            raise
        self._tables.append(_Table(build.lo, build.hi, table))
        self._frozen = self._flush = None
        for number in range(build.lo, build.hi + 1):
            (self.dir / segment_name(number)).unlink(missing_ok=True)
        self._counters["flushes"] += 1
        self._counters["flushed_bytes"] += size

    def _pick(self) -> list[_Table]:
        """The tables the next compaction should merge (none: nothing due)."""
        tables = self._tables
        if len(tables) < 2:
            return []
        sizes = [t.sst.size for t in tables]
        options = self.options
        if sum(sizes[1:]) > options.max_space_amp * sizes[0] or len(tables) > options.max_tables:
            return list(tables)
        tiers = [self._tier(size) for size in sizes]
        end = len(tables)
        while end > 0:
            start = end - 1
            while start > 0 and tiers[start - 1] == tiers[end - 1]:
                start -= 1
            if end - start >= options.fanout:
                return tables[start:end]
            end = start
        return []

    def _tier(self, size: int) -> int:
        return max(0, math.floor(math.log(max(size, 1) / self.options.memtable_bytes,
                                          self.options.fanout)))

    def _step_compaction(self) -> None:
        if self._compaction is None:
            inputs = self._pick()
            if not inputs:
                return
            self._compaction = self._start_compaction(inputs)
        build = self._compaction
        try:
            if not build.step(self.options.step_bytes):
                return
            size = build.writer.finish()
            self._sync_dir()
            output = _Table(build.lo, build.hi, SSTable(build.writer.path))
        except BaseException:
            build.writer.abort()
            self._compaction = None
            raise
        at = self._tables.index(build.inputs[0])
        self._tables[at:at + len(build.inputs)] = [output]
        self._compaction = None
        for table in build.inputs:
            self._retire(table, keep_file=table.sst.path == output.sst.path)
        self._counters["compactions"] += 1
        self._counters["compacted_bytes"] += size

    def _start_compaction(self, inputs: list[_Table]) -> _Build:
        """The build merging ``inputs``. Raises OSError (ENOSPC) without writing anything when
        the file system has less free space than the inputs take: the output could need as
        much, and filling the disk would refuse the commit log's appends meanwhile."""
        needed = sum(t.sst.size for t in inputs)
        disk = os.statvfs(self.dir)
        if disk.f_bavail * disk.f_frsize < needed:
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: a compaction of "
                          f"{len(inputs)} tables needs up to {needed} bytes free, "
                          f"{disk.f_bavail * disk.f_frsize} are")
        lo, hi = inputs[0].lo, inputs[-1].hi
        writer = SSTableWriter(self.dir / table_name(lo, hi), sum(t.sst.entries for t in inputs),
                               self.options.bloom_fp_rate, self.options.block_bytes)
        merged = _newest_first([t.sst.scan() for t in reversed(inputs)])
        source = self._purging(merged) if inputs[0] is self._tables[0] else merged
        return _Build(lo, hi, writer, source, inputs)

    def _purging(self, merged: Iterator[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
        """``merged`` less forgotten keys and, past the purge cutoff, all-tombstone keys."""
        cutoff = self._purge_before
        for key, value in merged:
            if value == _EMPTY:
                continue
            if cutoff is not None and all(v.value is None and v.timestamp < cutoff
                                          for v in _unpack(value)):
                self._purged_unreported += 1
                self._counters["keys_purged"] += 1
                continue
            yield key, value

    def _retire(self, table: _Table, keep_file: bool) -> None:
        """Close a compaction input; delete its file unless the output was renamed over it
        (a lone table rewritten to purge it)."""
        for name in ("lookups", "bloom_passes", "bloom_false_positives"):
            self._counters[name] += getattr(table.sst, name)
        table.sst.close()
        if not keep_file:
            table.sst.path.unlink()

    # -- observability --

    def stats(self) -> dict[str, Any]:
        """Figures for ``/status``: memtables, tables by tier, compaction and Bloom filters."""
        tables = [t.sst for t in self._tables]
        counters = self._counters
        lookups = counters["lookups"] + sum(t.lookups for t in tables)
        passes = counters["bloom_passes"] + sum(t.bloom_passes for t in tables)
        false_positives = counters["bloom_false_positives"] + sum(t.bloom_false_positives
                                                                  for t in tables)
        negatives = lookups - (passes - false_positives)
        return {
            "engine": "lsm",
            "memtable_bytes": self._memtable.bytes,
            "memtable_keys": len(self._memtable),
            "frozen_memtable_bytes": self._frozen.bytes if self._frozen else 0,
            "commit_log_segment": self._segment,
            "commit_log_bytes": self._log.size if self._log is not None else None,
            "fail_stopped": self.fail_stop.reason,
            "write_errors": counters["write_errors"],
            "sstable_count": len(tables),
            "sstable_bytes": sum(t.size for t in tables),
            "sstables": [{"file": t.path.name, "bytes": t.size, "entries": t.entries,
                          "tier": self._tier(t.size)} for t in tables],
            "flushes": counters["flushes"],
            "flushed_bytes": counters["flushed_bytes"],
            "flush_stalls": counters["flush_stalls"],
            "compaction_running": self._compaction is not None,
            "compactions": counters["compactions"],
            "compacted_bytes": counters["compacted_bytes"],
            "keys_purged": counters["keys_purged"],
            "background_errors": counters["background_errors"],
            "background_error": self.background_error,
            "background_work_pending": self.work_pending,
            "bloom_configured_fp_rate": self.options.bloom_fp_rate,
            "bloom_observed_fp_rate": false_positives / negatives if negatives else None,
            "bloom_lookups": lookups,
            "test_fault_file": str(faults.ACTIVE) if faults.ACTIVE is not None else None,
        }
