"""The commit log on real files: round trips, torn tails, corruption."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvcheck.store.storage import CommitLog, CorruptLogError, replay
from kvcheck.store.storage.commitlog import MAGIC


def write(path: Path, payloads: list[bytes], sync_each: bool = False) -> list[int]:
    """Append payloads; return the offset where each record starts."""
    log = CommitLog(path)
    offsets = []
    for payload in payloads:
        offsets.append(log.size)
        log.append(payload)
        assert log.unsynced
        if sync_each:
            log.sync()
            assert not log.unsynced
    log.close()
    return offsets


def payloads_of(path: Path) -> list[bytes]:
    return [payload for _, payload in replay(path)]


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=300), max_size=20), st.booleans())
def test_records_round_trip(tmp_path: Path, payloads: list[bytes], sync_each: bool) -> None:
    path = tmp_path / "round-trip.log"
    path.unlink(missing_ok=True)
    write(path, payloads, sync_each)
    assert payloads_of(path) == payloads


def test_a_missing_log_replays_as_empty(tmp_path: Path) -> None:
    assert payloads_of(tmp_path / "absent.log") == []


def test_every_cut_of_the_last_record_is_a_torn_tail(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "c.log"
    payloads = [b"first", b"second", b"x" * 100]
    offsets = write(path, payloads)
    whole = path.read_bytes()
    for cut in range(offsets[-1] + 1, len(whole)):
        path.write_bytes(whole[:cut])
        with caplog.at_level(logging.WARNING):
            assert payloads_of(path) == payloads[:-1]
        assert "torn final record" in caplog.text
        assert path.stat().st_size == offsets[-1]  # truncated to the last whole record
        caplog.clear()
    # After truncation the log is appendable again and replays whole.
    write(path, [b"after"])
    assert payloads_of(path) == [*payloads[:-1], b"after"]


def test_a_torn_file_header_and_a_zero_filled_tail_are_torn_tails(tmp_path: Path) -> None:
    path = tmp_path / "h.log"
    path.write_bytes(MAGIC[:3])
    assert payloads_of(path) == []
    assert path.stat().st_size == 0
    write(path, [b"kept"])
    path.write_bytes(path.read_bytes() + b"\0" * 40)
    assert payloads_of(path) == [b"kept"]


def test_a_bad_payload_at_the_very_end_is_torn(tmp_path: Path) -> None:
    path = tmp_path / "p.log"
    write(path, [b"kept", b"last"])
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert payloads_of(path) == [b"kept"]


@pytest.mark.parametrize("where", ["header", "payload"])
def test_corruption_before_the_end_stops_replay_naming_file_and_offset(
    tmp_path: Path, where: str
) -> None:
    path = tmp_path / "m.log"
    offsets = write(path, [b"one", b"two", b"three"])
    data = bytearray(path.read_bytes())
    data[offsets[1] + (1 if where == "header" else 12)] ^= 0x55
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError) as caught:
        payloads_of(path)
    assert caught.value.offset == offsets[1]
    assert str(path) in str(caught.value) and f"offset {offsets[1]}" in str(caught.value)
    assert path.read_bytes() == bytes(data)  # nothing truncated


def test_a_file_that_is_not_a_log_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "n.log"
    path.write_bytes(b"hello, this is not a commit log")
    with pytest.raises(CorruptLogError, match="bad magic"):
        payloads_of(path)
