"""The hint log as storage: a hint it cannot record fails the stand-in's write with nothing
stored, its fsync failure stops the node's writes as the commit log's does, it opens on a full
disk, and it is compacted once delivered hints dominate it."""

from __future__ import annotations

import errno
import os
from collections import Counter
from pathlib import Path

import pytest
from tinyfs import fill, tiny_fs

from kvcheck.store import hints as hints_module
from kvcheck.store.antientropy import SharedHashes
from kvcheck.store.config import ClusterConfig
from kvcheck.store.events import Failed, Found, Respond, Send, StartTimer, Tick, Written
from kvcheck.store.hints import DurableHints, Hints
from kvcheck.store.messages import (
    Rejected,
    Replicate,
    ReplicateAck,
    StampReply,
    StampRequest,
)
from kvcheck.store.replica import Replica, unacknowledged
from kvcheck.store.ring import Member, Ring
from kvcheck.store.storage import FailStop, LsmStorage, MemoryStorage, StorageError, faults
from kvcheck.store.storage.commitlog import replay
from kvcheck.store.versions import Dot, Version

RING = Ring.build([Member("n1"), Member("n2"), Member("n3")], 16)
VERSIONS = (Version(Dot("n2.1", 1), {}, b"v", 10),)


def eio(*_: object) -> None:
    raise OSError(errno.EIO, os.strerror(errno.EIO))


class FullHintLog(Hints):
    """Hints whose log refuses every change, as on a full disk."""

    def _record(self, change: list[object]) -> None:
        raise StorageError("hint log append failed: [Errno 28] No space left on device")


@pytest.mark.parametrize("request_", [
    StampRequest(7, b"k", {}, b"v", 10, hint_for="n3"),
    Replicate(7, b"k", VERSIONS, hint_for="n3"),
])
def test_a_stand_in_whose_hint_log_is_full_refuses_the_write_and_stores_nothing(
        request_: StampRequest | Replicate) -> None:
    storage = MemoryStorage()
    replica = Replica("n1.1", ClusterConfig(), storage, FullHintLog(),
                      SharedHashes("n1", RING, 3), Counter())
    assert replica.answer(request_) == Rejected(
        7, "hint log append failed: [Errno 28] No space left on device")
    assert storage.get(b"k") == []  # else a write refused as not applied would be there


def test_the_log_is_compacted_once_delivered_hints_dominate_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hints_module, "COMPACT_MIN_RECORDS", 16)
    path = tmp_path / "hints.log"
    hints = DurableHints(path, FailStop())
    seqs = [hints.add("n2", b"k%d" % i) for i in range(100)]
    for i, seq in enumerate(seqs[:95]):
        assert hints.done("n2", b"k%d" % i, seq)
    hints.sync()
    records = len(list(replay(path)))
    assert records <= 4 * 5 and hints.log_errors == 0  # 195 changes, 5 hints pending
    hints.close()
    reopened = DurableHints(path, FailStop())
    assert reopened.pending("n2") == hints.pending("n2") == [
        (b"k%d" % i, seqs[i]) for i in range(95, 100)]
    reopened.close()


def test_a_compaction_that_fails_leaves_the_log_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hints_module, "COMPACT_MIN_RECORDS", 16)
    path = tmp_path / "hints.log"
    hints = DurableHints(path, FailStop())
    with monkeypatch.context() as patched:
        patched.setattr(hints_module.os, "replace", eio)
        for i in range(20):
            hints.done("n2", b"k%d" % i, hints.add("n2", b"k%d" % i))
        hints.add("n3", b"kept")
    assert hints.log_errors >= 1 and not list(tmp_path.glob("*.tmp"))
    hints.close()
    reopened = DurableHints(path, FailStop())
    assert reopened.owners() == ["n3"]
    reopened.close()


def test_a_failed_hint_log_fsync_stops_the_nodes_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = LsmStorage(tmp_path / "data")
    hints = DurableHints(tmp_path / "hints.log", engine.fail_stop)
    hints.add("n2", b"k")
    with monkeypatch.context() as patched:
        patched.setattr(faults, "fdatasync", eio)
        with pytest.raises(StorageError, match="hint log sync failed"):
            hints.sync()
    for refused in (hints.sync, lambda: hints.add("n3", b"k"),
                    lambda: engine.put(b"k", VERSIONS)):
        with pytest.raises(StorageError, match="refused until the node restarts"):
            refused()
    assert engine.stats()["fail_stopped"] == "hint log sync failed: [Errno 5] Input/output error"
    hints.close()
    engine.close()


def test_the_hint_log_opens_on_a_full_disk_and_refuses_hints_until_space_returns(
        tmp_path: Path) -> None:
    with tiny_fs(tmp_path / "disk", "256k") as disk:
        filler = fill(disk)
        hints = DurableHints(disk / "hints.log", FailStop())
        with pytest.raises(StorageError, match="No space left"):
            hints.add("n2", b"k")
        assert hints.owners() == []
        filler.unlink()
        seq = hints.add("n2", b"k")
        hints.sync()
        hints.close()
        reopened = DurableHints(disk / "hints.log", FailStop())
        assert reopened.pending("n2") == [(b"k", seq)]
        reopened.close()


def test_actions_held_for_a_failed_sync_lose_their_acknowledgements() -> None:
    held = [Respond(1, Written({})), Send("n2", ReplicateAck(5)),
            Send("n3", StampReply(6, b"k", Dot("n1.1", 1), VERSIONS)),
            Respond(2, Found(VERSIONS, {})), Send("n2", Replicate(8, b"k", VERSIONS)),
            StartTimer(Tick.GOSSIP, 1.0)]
    assert unacknowledged(held, "commit log sync failed: EIO") == [
        Respond(1, Failed("the write may not be durable here: commit log sync failed: EIO",
                          "unknown")),
        Send("n2", Rejected(5, "commit log sync failed: EIO")),
        Respond(2, Found(VERSIONS, {})), Send("n2", Replicate(8, b"k", VERSIONS)),
        StartTimer(Tick.GOSSIP, 1.0)]
