"""A source's batches: every wanted key exactly once, in order, whether the scan is resumed or
opened again at the cursor; and no batch examines more than the scan limit."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from kvcheck.store.storage import EngineOptions, LsmStorage, MemoryStorage, Storage
from kvcheck.store.streaming import BATCH_KEYS, SCAN_LIMIT, SourceScan
from kvcheck.store.versions import stamp

_, VERSIONS = stamp("n1.a", [], {}, b"v", 1, 10)


def fill(storage: Storage, count: int) -> list[bytes]:
    keys = [b"key-%06d" % i for i in range(count)]
    for key in keys:
        storage.put(key, VERSIONS)
    return keys


def drain(storage: Storage, wanted: object, reopen: bool) -> tuple[list[bytes], int]:
    """Every batch's keys, in order, and how many batches it took."""
    got: list[bytes] = []
    batches = 0
    scan = SourceScan(storage, None, wanted)  # type: ignore[arg-type]
    while True:
        items, cursor = scan.next_batch()
        batches += 1
        assert len(items) <= BATCH_KEYS
        got.extend(key for key, versions in items if versions)
        if cursor is None:
            return got, batches
        if reopen:  # as after a source restart: a new scan after the cursor
            scan = SourceScan(storage, cursor, wanted)  # type: ignore[arg-type]


@settings(max_examples=20, deadline=None)
@given(every=st.integers(1, 60), reopen=st.booleans())
def test_batches_hold_every_wanted_key_once_in_order(every: int, reopen: bool) -> None:
    storage = MemoryStorage()
    keys = fill(storage, 9000)

    def wanted(key: bytes) -> bool:
        return int(key[4:]) % every == 0

    got, batches = drain(storage, wanted, reopen)
    assert got == [k for k in keys if wanted(k)]
    # A batch ends at BATCH_KEYS wanted keys or SCAN_LIMIT examined ones, whichever is first.
    assert batches >= len(keys) // max(SCAN_LIMIT, BATCH_KEYS * every)


def test_a_scan_resumed_on_the_lsm_engine_reads_flushed_and_fresh_keys(tmp_path: Path) -> None:
    storage = LsmStorage(tmp_path, EngineOptions(memtable_bytes=64 * 1024))
    try:
        keys = fill(storage, 3000)
        while storage.step():  # flush and compact what the memtable could not hold
            pass
        late = [b"late-%04d" % i for i in range(500)]
        for key in late:  # and these stay in the memtable
            storage.put(key, VERSIONS)
        stats = storage.stats()
        assert stats["sstable_count"] > 0 and stats["memtable_keys"] > 0
        got, _ = drain(storage, lambda key: key.endswith(b"7"), reopen=False)
        assert got == [k for k in sorted(keys + late) if k.endswith(b"7")]
    finally:
        storage.close()
