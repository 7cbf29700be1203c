"""The engine's files in a data directory, by name, and what start-up finds among them.

Segments are numbered 1, 2, 3, … (``wal-NNNNNNNN.log``); a table is named after the range of
segments whose writes it holds (``sst-LO-HI.sst``). The live tables' ranges and the segments not
yet flushed tile ``1..N`` exactly, the newest number always a segment (see
:mod:`kvcheck.store.storage.engine`); :func:`survey` checks that tiling, so a missing file is
noticed rather than served without.
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from kvcheck.store.storage.interface import StorageError
from kvcheck.store.storage.sstable import fsync_dir

log = logging.getLogger(__name__)

_SEGMENT = re.compile(r"wal-(\d{8})\.log")
_TABLE = re.compile(r"sst-(\d{8})-(\d{8})\.sst")
#: The commit log of the engine before segments; replayed as segment 1.
LEGACY_LOG = "commit.log"


def segment_name(number: int) -> str:
    return f"wal-{number:08d}.log"


def table_name(lo: int, hi: int) -> str:
    return f"sst-{lo:08d}-{hi:08d}.sst"


class DataDirError(StorageError):
    """The data directory is inconsistent (a missing file, overlapping tables, a legacy log
    beside segments); the node must not start on it."""


@dataclass(frozen=True, slots=True)
class Survey:
    """What start-up found: the ``live`` tables by range, the ``finished`` compactions' inputs
    and the ``flushed`` segments (both to delete once the live tables have opened), and the
    ``segments`` to replay, by number, newer than ``floor``, the newest table's last."""

    live: dict[tuple[int, int], Path]
    finished: list[Path]
    flushed: list[Path]
    segments: dict[int, Path]
    floor: int


def survey(directory: Path) -> Survey:
    """Survey ``directory``: delete the temporary tables a crash left, rename a legacy commit
    log to segment 1, and check the tiling. Raises :class:`DataDirError`."""
    for temporary in directory.glob("sst-*.sst.tmp"):
        log.warning("%s: deleting unfinished file left by a crash", temporary)
        temporary.unlink()
    segments = {int(m[1]): p for p in directory.iterdir() if (m := _SEGMENT.fullmatch(p.name))}
    ranges = {(int(m[1]), int(m[2])): p
              for p in directory.iterdir() if (m := _TABLE.fullmatch(p.name))}
    legacy = directory / LEGACY_LOG
    if legacy.exists():
        if segments or ranges:
            raise DataDirError(f"{legacy}: a legacy commit log beside segments or tables")
        segments[1] = legacy.rename(directory / segment_name(1))
        fsync_dir(directory)
    live, finished = _split_compaction_inputs(directory, ranges)
    floor = max((hi for _, hi in live), default=0)
    _check_tiling(directory, live, sorted(n for n in segments if n > floor), floor)
    return Survey(live, finished, [segments[n] for n in sorted(segments) if n <= floor],
                  {n: path for n, path in segments.items() if n > floor}, floor)


def _split_compaction_inputs(directory: Path, ranges: dict[tuple[int, int], Path]
                             ) -> tuple[dict[tuple[int, int], Path], list[Path]]:
    """The live tables, and those whose range another contains (a finished compaction's
    inputs). Raises :class:`DataDirError` when live tables overlap."""
    live, finished = {}, []
    for (lo, hi), path in ranges.items():
        if any(r != (lo, hi) and r[0] <= lo and hi <= r[1] for r in ranges):
            finished.append(path)
        else:
            live[lo, hi] = path
    for older, newer in itertools.pairwise(sorted(live)):
        if newer[0] <= older[1]:
            raise DataDirError(f"{directory}: tables {table_name(*older)} and "
                               f"{table_name(*newer)} overlap")
    return live, finished


def _check_tiling(directory: Path, live: dict[tuple[int, int], Path], segments: list[int],
                  floor: int) -> None:
    expected = 1
    for lo, hi in sorted(live):
        if lo != expected:
            raise DataDirError(f"{directory}: missing file(s) for generations "
                               f"{expected}..{lo - 1} (before {live[lo, hi].name})")
        expected = hi + 1
    if live and not segments:
        raise DataDirError(f"{directory}: commit-log segment {segment_name(floor + 1)} "
                           "is missing")
    for number in segments:
        if number != expected:
            raise DataDirError(f"{directory}: missing commit-log segment(s) or table(s) for "
                               f"generations {expected}..{number - 1}")
        expected = number + 1
