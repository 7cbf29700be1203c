"""The engine on a full or failing disk: background work fails cleanly and is retried once space
returns, a put that cannot be stored is refused with nothing changed, a fresh engine opens on a
full disk, and a failed fsync of what acknowledged writes rest on stops writes until a restart
(fail-stop for writes) while an unpublished table's is only retried."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tinyfs import fill, tiny_fs

from kvcheck.store.storage import (
    CommitLog,
    EngineOptions,
    LsmStorage,
    StorageError,
    faults,
    replay,
)
from kvcheck.store.storage.sstable import SSTableWriter
from kvcheck.store.versions import Dot, Version

OPTIONS = EngineOptions(memtable_bytes=8_000, step_bytes=1_000, block_bytes=512)


def key(i: int) -> bytes:
    return f"key{i:05d}".encode()


def value(i: int) -> list[Version]:
    return [Version(Dot("a", i + 1), {}, b"v%05d" % i + b"x" * 200, 10)]


def drain(engine: LsmStorage) -> None:
    while engine.step():
        pass


def put_until(engine: LsmStorage, written: dict[bytes, list[Version]],
              done: Callable[[], bool]) -> None:
    """Put new keys until ``done()`` holds (at most a few hundred)."""
    for _ in range(500):
        if done():
            return
        i = len(written)
        engine.put(key(i), value(i))
        written[key(i)] = value(i)
    raise AssertionError("condition not reached")


def temporaries(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.tmp"))


def eio(*_: object) -> None:
    raise OSError(errno.EIO, os.strerror(errno.EIO))


def failing_on(matches: Callable[[str], bool], call: Callable[[int], None],
               ) -> Callable[[int], None]:
    """``call``, failing with EIO for the descriptors whose path ``matches``."""
    def checked(fd: int) -> None:
        if matches(os.readlink(f"/proc/self/fd/{fd}")):
            eio()
        call(fd)
    return checked


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with tiny_fs(tmp_path / "disk", "1m") as path:
        yield path


def test_a_table_writer_aborted_on_a_full_disk_never_raises(disk: Path) -> None:
    writer = SSTableWriter(disk / "t.sst", 10_000, 0.01)
    fill(disk)
    with pytest.raises(OSError, match="No space left"):
        for i in range(10_000):
            writer.add(key(i), b"x" * 100)
    writer.abort()  # a buffered writer's close wrote its buffer here, and failed again
    assert not temporaries(disk)


def test_a_record_that_fits_only_in_part_is_refused_with_the_disks_reason(disk: Path) -> None:
    log = CommitLog(disk / "wal.log")
    log.append(b"first")
    size = os.path.getsize(log.path)
    fill(disk)  # what is left: the rest of the log's last page, less than the record below
    with pytest.raises(OSError) as refused:
        log.append(b"x" * 8192)  # the page's rest is written, then the next write fails
    assert refused.value.errno == errno.ENOSPC
    assert os.path.getsize(log.path) == size
    log.close()
    assert [payload for _, payload in replay(log.path)] == [b"first"]


def test_a_flush_out_of_space_fails_cleanly_and_completes_once_space_returns(disk: Path) -> None:
    data = disk / "data"
    engine = LsmStorage(data, OPTIONS)
    written: dict[bytes, list[Version]] = {}
    put_until(engine, written, lambda: engine.stats()["frozen_memtable_bytes"] > 0)
    filler = fill(disk)
    assert not engine.step()  # the flush ran out of space: no exception, nothing left behind
    assert "No space left" in (engine.background_error or "")
    assert not temporaries(data)
    with pytest.raises(StorageError, match="No space left"):  # appends fill the log's last page
        put_until(engine, written, lambda: False)  # then a put is refused, changing nothing
    assert engine.get(key(len(written))) == []
    assert all(engine.get(k) == v for k, v in written.items())
    engine.close()
    engine = LsmStorage(data, OPTIONS)  # starts on the full disk, and serves reads
    assert all(engine.get(k) == v for k, v in written.items())
    filler.unlink()
    put_until(engine, written, lambda: engine.stats()["flushes"] > 0)
    drain(engine)
    assert engine.background_error is None and not temporaries(data)
    assert dict(engine.scan()) == written
    engine.close()


def test_a_compaction_out_of_space_midway_keeps_its_inputs_and_resumes_later(disk: Path) -> None:
    data = disk / "data"
    engine = LsmStorage(data, OPTIONS)
    written: dict[bytes, list[Version]] = {}
    put_until(engine, written, lambda: len(written) == 20)
    engine.flush()
    put_until(engine, written, lambda: len(written) == 80)
    engine.flush()  # the newer table outweighs the older: a compaction of both is due
    assert engine.step() and engine.stats()["compaction_running"]
    tables = engine.stats()["sstables"]
    filler = fill(disk)
    while engine.step():
        pass
    stats = engine.stats()
    assert "No space left" in (engine.background_error or "")
    assert not stats["compaction_running"] and stats["sstables"] == tables
    assert not temporaries(data) and dict(engine.scan()) == written
    filler.unlink()
    drain(engine)
    assert engine.background_error is None and engine.stats()["compactions"] == 1
    assert engine.stats()["sstable_count"] == 1 and dict(engine.scan()) == written
    engine.close()


def test_a_fresh_engine_opens_on_a_full_disk_and_refuses_puts_until_space_returns(
        disk: Path) -> None:
    data = disk / "data"
    data.mkdir()
    filler = fill(disk)
    engine = LsmStorage(data, OPTIONS)
    assert engine.get(key(1)) == [] and engine.stats()["commit_log_bytes"] is None
    with pytest.raises(StorageError, match="No space left"):
        engine.put(key(1), value(1))
    assert engine.get(key(1)) == []
    filler.unlink()
    engine.put(key(1), value(1))
    engine.sync()
    engine.close()
    reopened = LsmStorage(data, OPTIONS)
    assert reopened.get(key(1)) == value(1)
    reopened.close()


def test_a_failed_commit_log_fsync_stops_writes_until_the_engine_is_reopened(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = LsmStorage(tmp_path, OPTIONS)
    engine.put(key(1), value(1))
    engine.sync()
    engine.put(key(2), value(2))
    with monkeypatch.context() as patched:
        patched.setattr(faults, "fdatasync", eio)
        with pytest.raises(StorageError, match="commit log sync failed"):
            engine.sync()
    # The device works again; a sync now would succeed without the pages the failed one lost.
    for refused in (engine.sync, lambda: engine.put(key(3), value(3)), engine.flush):
        with pytest.raises(StorageError, match="refused until the node restarts"):
            refused()
    assert engine.get(key(2)) == value(2)  # reads go on
    assert not engine.step()
    assert (engine.stats()["fail_stopped"] or "").startswith("commit log sync failed")
    engine.close()  # never raises, and does not sync
    reopened = LsmStorage(tmp_path, OPTIONS)  # the restart replays the log
    assert reopened.get(key(2)) == value(2)
    reopened.put(key(3), value(3))
    reopened.sync()
    reopened.close()


def test_a_failed_fsync_of_an_unpublished_table_is_retried_and_stops_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = LsmStorage(tmp_path, OPTIONS)
    written: dict[bytes, list[Version]] = {}
    put_until(engine, written, lambda: engine.stats()["frozen_memtable_bytes"] > 0)
    with monkeypatch.context() as patched:
        for name in ("fsync", "fdatasync"):
            patched.setattr(faults, name, failing_on(lambda path: path.endswith(".sst.tmp"),
                                                     getattr(os, name)))
        while engine.step():
            pass
        assert "Input/output error" in (engine.background_error or "")
        assert engine.stats()["fail_stopped"] is None and not temporaries(tmp_path)
        engine.put(key(9999), value(9999))  # writes go on
        engine.sync()
    drain(engine)
    assert engine.background_error is None and engine.stats()["flushes"] == 1
    engine.close()


def test_a_failed_fsync_of_the_directory_after_a_flush_stops_writes_and_keeps_the_segments(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = LsmStorage(tmp_path, OPTIONS)
    written: dict[bytes, list[Version]] = {}
    put_until(engine, written, lambda: engine.stats()["frozen_memtable_bytes"] > 0)
    segments = sorted(tmp_path.glob("wal-*.log"))
    with monkeypatch.context() as patched:
        patched.setattr(faults, "fsync", failing_on(os.path.isdir, os.fsync))
        while engine.step():
            pass
    assert (engine.stats()["fail_stopped"] or "").startswith("fsync of the data directory")
    assert sorted(tmp_path.glob("wal-*.log")) == segments  # not deleted: the rename may be lost
    with pytest.raises(StorageError, match="refused until the node restarts"):
        engine.put(key(0), value(0))
    engine.close()
    reopened = LsmStorage(tmp_path, OPTIONS)
    assert dict(reopened.scan()) == written
    reopened.close()


def test_the_fault_hook_is_off_unless_the_process_starts_with_its_variable(
        tmp_path: Path) -> None:
    assert faults.ACTIVE is None and faults.fsync is os.fsync and faults.pread is os.pread
    fault_file, data = tmp_path / "faults", tmp_path / "data"
    data.write_bytes(b"x")
    script = textwrap.dedent(f"""
        import os, pathlib
        from kvcheck.store.storage import faults
        fault_file = pathlib.Path({str(fault_file)!r})
        fd = os.open({str(data)!r}, os.O_RDWR)
        for kinds in ("", "fsync", "read"):
            fault_file.write_text(kinds)
            for name, call in (("fsync", lambda: faults.fsync(fd)),
                               ("read", lambda: faults.pread(fd, 1, 0))):
                try:
                    call()
                    print(name, "ok")
                except OSError as exc:
                    print(name, "EIO" if exc.errno == 5 else exc)
    """)
    env = {**os.environ, faults.ENV: str(fault_file)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, check=True, timeout=60)
    assert result.stdout.split() == ["fsync", "ok", "read", "ok", "fsync", "EIO", "read", "ok",
                                     "fsync", "ok", "read", "EIO"]
