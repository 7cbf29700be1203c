"""The LSM storage engine on real files: write and read paths, flushes, compaction, recovery."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from kvcheck.store.config import ClusterConfig, ConfigError
from kvcheck.store.storage import (
    CommitLog,
    CorruptLogError,
    EngineOptions,
    LsmStorage,
    MemoryStorage,
)
from kvcheck.store.storage.bloom import BloomFilter
from kvcheck.store.storage.datafiles import LEGACY_LOG
from kvcheck.store.versions import Dot, Version, encode_versions, stamp, sync

SMALL = EngineOptions(memtable_bytes=6_000, step_bytes=500, block_bytes=256)


def value(actor: str, counter: int, data: bytes | None, ms: int = 10) -> list[Version]:
    return [Version(Dot(actor, counter), {}, data, ms)]


def key(i: int) -> bytes:
    return f"key{i:05d}".encode()


def files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def drain(engine: LsmStorage) -> None:
    while engine.step():
        pass


def test_puts_survive_flushes_compactions_and_reopen(tmp_path: Path) -> None:
    engine = LsmStorage(tmp_path, SMALL)
    expected = {}
    for i in range(600):
        k = key(i % 150)
        expected[k] = value("a", i + 1, b"v%d" % i)
        engine.put(k, expected[k])
        engine.step()
    drain(engine)
    assert engine.stats()["flushes"] > 0 and engine.stats()["compactions"] > 0
    assert {k: engine.get(k) for k in expected} == expected
    engine.close()
    reopened = LsmStorage(tmp_path, SMALL)
    assert dict(reopened.scan()) == expected
    assert list(reopened.keys()) == sorted(expected)
    reopened.close()


def test_a_flush_retires_the_segments_it_covers_and_writes_flow_meanwhile(tmp_path: Path) -> None:
    engine = LsmStorage(tmp_path, SMALL)
    i = 0
    while engine.stats()["frozen_memtable_bytes"] == 0:
        engine.put(key(i), value("a", 1, b"x" * 40))
        i += 1
    assert files(tmp_path) == ["wal-00000001.log", "wal-00000002.log"]
    frozen = key(0)
    engine.put(b"during", value("a", 1, b"late"))  # the flush has not run yet
    while engine.stats()["frozen_memtable_bytes"]:
        engine.step()
        assert engine.get(frozen) == value("a", 1, b"x" * 40)
        assert engine.get(b"during") == value("a", 1, b"late")
    assert files(tmp_path) == ["sst-00000001-00000001.sst", "wal-00000002.log"]
    engine.close()


def test_a_full_memtable_finishes_the_previous_flush_first(tmp_path: Path) -> None:
    engine = LsmStorage(tmp_path, SMALL)
    for i in range(200):
        engine.put(key(i), value("a", 1, b"x" * 40))
    stats = engine.stats()
    assert stats["flush_stalls"] > 0
    assert stats["frozen_memtable_bytes"] <= SMALL.memtable_bytes * 2
    assert all(engine.get(key(i)) == value("a", 1, b"x" * 40) for i in range(200))
    engine.close()


def test_newest_set_wins_which_is_the_vector_clock_merge_of_the_node(tmp_path: Path) -> None:
    engine = LsmStorage(tmp_path, SMALL)
    _, first = stamp("n1", [], {}, b"a", 1, 10)
    engine.put(b"k", first)
    engine.flush()
    _, concurrent = stamp("n2", [], {}, b"b", 2, 10)
    engine.put(b"k", sync(engine.get(b"k"), concurrent))  # what the node does with a replica write
    engine.flush()
    assert engine.get(b"k") == sync(first, concurrent)
    assert len(engine.get(b"k")) == 2
    engine.compact()
    assert engine.get(b"k") == sync(first, concurrent)
    engine.close()


def test_a_deleted_key_stays_deleted_over_older_tables_until_compacted_away(tmp_path: Path) -> None:
    engine = LsmStorage(tmp_path, SMALL)
    engine.put(b"k", value("a", 1, b"old"))
    engine.flush()
    engine.put(b"k", [])
    engine.flush()
    assert engine.get(b"k") == []
    assert list(engine.keys()) == []
    engine.compact()
    assert engine.stats()["sstables"][0]["entries"] == 0
    assert engine.get(b"k") == []
    engine.close()


def test_compaction_purges_old_tombstones_only_past_the_cutoff(tmp_path: Path) -> None:
    engine = LsmStorage(tmp_path, SMALL)
    engine.put(b"old", value("a", 1, None, ms=100))
    engine.put(b"young", value("a", 1, None, ms=900))
    engine.put(b"mixed", value("a", 1, None, ms=100) + value("b", 1, b"live", ms=100))
    assert engine.purge_tombstones(500) == 0
    engine.compact()
    assert engine.get(b"old") == []
    assert engine.get(b"young") == value("a", 1, None, ms=900)
    assert len(engine.get(b"mixed")) == 2
    assert engine.purge_tombstones(500) == 1
    assert engine.purge_tombstones(500) == 0
    engine.close()


def test_space_stays_bounded_under_overwrites(tmp_path: Path) -> None:
    options = EngineOptions(memtable_bytes=12_000, step_bytes=1_000, block_bytes=512)
    engine = LsmStorage(tmp_path, options)
    peak = 0
    for i in range(6_000):
        engine.put(key(i % 100), value("a", i + 1, b"x" * 50))
        engine.step()
        peak = max(peak, engine.stats()["sstable_bytes"])
    drain(engine)
    engine.compact()
    live = engine.stats()["sstable_bytes"]
    assert peak <= (2 + options.max_space_amp) * live + 2 * options.memtable_bytes * options.fanout
    engine.close()


def test_scan_streams_a_range_and_is_a_snapshot(tmp_path: Path) -> None:
    engine = LsmStorage(tmp_path, SMALL)
    for i in range(100):
        engine.put(key(i), value("a", 1, b"%d" % i))
    drain(engine)
    scan = engine.scan(key(10), key(20))
    engine.put(key(15), value("a", 2, b"changed"))
    engine.compact()
    assert [(k, v[0].value) for k, v in scan] == [(key(i), b"%d" % i) for i in range(10, 20)]
    assert [k for k, _ in engine.scan(key(98))] == [key(98), key(99)]
    engine.close()


def test_memory_storage_scans_the_same_way() -> None:
    storage = MemoryStorage()
    for i in (3, 1, 2):
        storage.put(key(i), value("a", 1, b"v"))
    assert [k for k, _ in storage.scan(key(2))] == [key(2), key(3)]
    assert [k for k, _ in storage.scan(end=key(2))] == [key(1)]


def test_bloom_filters_skip_tables_at_about_the_configured_rate(tmp_path: Path) -> None:
    engine = LsmStorage(tmp_path, EngineOptions(memtable_bytes=50_000, bloom_fp_rate=0.02))
    for i in range(2_000):
        engine.put(key(i), value("a", 1, b"v"))
    engine.flush()
    for i in range(2_000, 12_000):
        assert engine.get(key(i)) == []
    stats = engine.stats()
    assert stats["bloom_configured_fp_rate"] == 0.02
    assert 0 < stats["bloom_observed_fp_rate"] < 0.04
    engine.close()


def test_bloom_filter_has_no_false_negatives_and_round_trips() -> None:
    bloom = BloomFilter.for_keys(500, 0.01)
    for i in range(500):
        bloom.add(key(i))
    again = BloomFilter.from_bytes(bloom.to_bytes())
    assert all(key(i) in again for i in range(500))
    assert sum(key(i) in again for i in range(500, 10_500)) < 300


def test_the_legacy_commit_log_is_replayed_as_the_first_segment(tmp_path: Path) -> None:
    log = CommitLog(tmp_path / LEGACY_LOG)
    log.append(msgpack.packb([b"k", encode_versions(value("a", 1, b"v"))], use_bin_type=True))
    log.close()
    engine = LsmStorage(tmp_path)
    assert engine.get(b"k") == value("a", 1, b"v")
    assert files(tmp_path) == ["wal-00000001.log"]
    engine.close()


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="bloom_fp_rate"):
        EngineOptions(bloom_fp_rate=1.5)
    with pytest.raises(ValueError, match="fanout"):
        EngineOptions(fanout=1)


def test_the_memtable_size_is_a_validated_cluster_setting() -> None:
    assert ClusterConfig(memtable_bytes=1 << 20).memtable_bytes == 1 << 20
    with pytest.raises(ConfigError, match="memtable_bytes"):
        ClusterConfig(memtable_bytes=100)


def test_a_segment_record_that_does_not_decode_stops_start_up(tmp_path: Path) -> None:
    log = CommitLog(tmp_path / "wal-00000001.log")
    log.append(b"\x93garbage")
    log.close()
    with pytest.raises(CorruptLogError, match="undecodable record"):
        LsmStorage(tmp_path)


def test_reads_and_writes_go_on_while_a_compaction_runs(tmp_path: Path) -> None:
    engine = LsmStorage(tmp_path, EngineOptions(memtable_bytes=6_000, step_bytes=300,
                                                block_bytes=256, fanout=2))
    for i in range(200):
        engine.put(key(i), value("a", 1, b"first"))
    engine.flush()
    for i in range(200):
        engine.put(key(i), value("a", 2, b"second"))
    engine.flush()
    assert engine.stats()["sstable_count"] >= 2
    slices = 0
    while engine.step():
        slices += 1
        engine.put(key(slices), value("a", 3, b"third"))
        assert engine.get(key(slices)) == value("a", 3, b"third")
        assert engine.get(key(199)) == value("a", 2, b"second")
    stats = engine.stats()
    assert stats["compactions"] >= 1 and slices > stats["compactions"]
    assert [v[0].value for _, v in engine.scan(key(slices + 1))] == [b"second"] * (199 - slices)
    engine.close()
