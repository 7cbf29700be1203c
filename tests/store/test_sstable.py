"""SSTables and the engine's start-up against damage: each case ends in the documented way.

- a flipped byte in a data block: reads of that block raise CorruptSSTableError naming the file
  and the block's offset; other blocks still read;
- a damaged footer, index or filter, or a truncated table: the engine refuses to open, naming the
  file and offset;
- a missing table or commit-log segment: the engine refuses to open, naming the generations;
- a temporary file or a finished compaction's leftover inputs: deleted at start-up.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kvcheck.store.storage import CorruptSSTableError, DataDirError, EngineOptions, LsmStorage
from kvcheck.store.storage.sstable import FOOTER_SIZE, SSTable, SSTableWriter
from kvcheck.store.versions import Dot, Version

OPTIONS = EngineOptions(memtable_bytes=2_000, step_bytes=500, block_bytes=256)


def write_table(path: Path, count: int) -> None:
    writer = SSTableWriter(path, count, 0.01, block_bytes=256)
    for i in range(count):
        writer.add(b"k%04d" % i, b"value-%d" % i)
    writer.finish()


def test_a_table_round_trips_and_scans_from_any_key(tmp_path: Path) -> None:
    path = tmp_path / "t.sst"
    write_table(path, 300)
    table = SSTable(path)
    assert table.entries == 300
    assert all(table.get(b"k%04d" % i) == b"value-%d" % i for i in range(300))
    assert table.get(b"k9999") is None and table.get(b"a") is None
    assert [k for k, _ in table.scan(b"k0297")] == [b"k0297", b"k0298", b"k0299"]
    table.close()


def test_keys_out_of_order_are_refused(tmp_path: Path) -> None:
    writer = SSTableWriter(tmp_path / "t.sst", 2, 0.01)
    writer.add(b"b", b"")
    with pytest.raises(ValueError, match="out of order"):
        writer.add(b"a", b"")
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_a_flipped_byte_in_a_block_is_reported_with_file_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "t.sst"
    write_table(path, 300)
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))
    table = SSTable(path)
    with pytest.raises(CorruptSSTableError, match="checksum") as caught:
        table.get(b"k0000")
    assert caught.value.path == path and caught.value.offset == 8
    assert table.get(b"k0299") == b"value-299"
    with pytest.raises(CorruptSSTableError):
        list(table.scan())
    table.close()


@pytest.mark.parametrize("damage", ["footer", "index", "truncated", "empty"])
def test_a_damaged_table_stops_start_up(tmp_path: Path, damage: str) -> None:
    engine = LsmStorage(tmp_path, OPTIONS)
    for i in range(100):
        engine.put(b"k%04d" % i, [Version(Dot("a", 1), {}, b"v" * 30, 1)])
    engine.compact()
    engine.close()
    [path] = tmp_path.glob("*.sst")
    data = bytearray(path.read_bytes())
    if damage == "footer":
        data[-FOOTER_SIZE] ^= 0xFF
    elif damage == "index":
        data[-FOOTER_SIZE - 5] ^= 0xFF  # the Bloom block's last byte, before its checksum
    elif damage == "truncated":
        del data[-10:]
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptSSTableError) as caught:
        LsmStorage(tmp_path, OPTIONS)
    assert caught.value.path == path


def flushed_twice(tmp_path: Path) -> list[str]:
    engine = LsmStorage(tmp_path, OPTIONS)
    for batch in range(2):
        engine.put(b"k%d" % batch, [Version(Dot("a", 1), {}, b"v", 1)])
        engine.flush()
    engine.close()
    return sorted(p.name for p in tmp_path.iterdir())


@pytest.mark.parametrize("missing", [0, 1, 2])
def test_a_missing_file_stops_start_up(tmp_path: Path, missing: int) -> None:
    names = flushed_twice(tmp_path)
    assert names == ["sst-00000001-00000001.sst", "sst-00000002-00000002.sst", "wal-00000003.log"]
    (tmp_path / names[missing]).unlink()
    with pytest.raises(DataDirError, match="missing"):
        LsmStorage(tmp_path, OPTIONS)


def test_unfinished_files_and_compaction_inputs_are_deleted_at_start_up(tmp_path: Path) -> None:
    flushed_twice(tmp_path)
    merged = tmp_path / "sst-00000001-00000002.sst"
    engine = LsmStorage(tmp_path, OPTIONS)
    keep = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    engine.compact()
    engine.close()
    compacted = merged.read_bytes()
    for name, data in keep.items():  # as if killed after the rename, before deleting the inputs
        (tmp_path / name).write_bytes(data)
    (tmp_path / "sst-00000003-00000003.sst.tmp").write_bytes(b"half a table")
    engine = LsmStorage(tmp_path, OPTIONS)
    assert sorted(p.name for p in tmp_path.iterdir()) == [merged.name, "wal-00000003.log"]
    assert merged.read_bytes() == compacted
    assert [k for k, _ in engine.scan()] == [b"k0", b"k1"]
    engine.close()


def test_the_engine_reports_a_damaged_block_instead_of_answering(tmp_path: Path) -> None:
    engine = LsmStorage(tmp_path, OPTIONS)
    for i in range(100):
        engine.put(b"k%04d" % i, [Version(Dot("a", 1), {}, b"v" * 30, 1)])
    engine.compact()
    engine.close()
    [path] = tmp_path.glob("*.sst")
    data = bytearray(path.read_bytes())
    data[20] ^= 0x01  # inside the first data block
    path.write_bytes(bytes(data))
    engine = LsmStorage(tmp_path, OPTIONS)
    with pytest.raises(CorruptSSTableError, match=f"{path}: corrupt SSTable at offset 8"):
        engine.get(b"k0000")
    assert engine.get(b"k0099") == [Version(Dot("a", 1), {}, b"v" * 30, 1)]
    engine.close()
