"""The replica side: storage errors are caught in one place, counted once, and change nothing;
a peer's request that storage cannot serve is answered ``Rejected`` with the reason."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from kvcheck.store.antientropy import SharedHashes
from kvcheck.store.config import ClusterConfig
from kvcheck.store.hints import Hints
from kvcheck.store.messages import (
    ReadReply,
    ReadRequest,
    Rejected,
    Replicate,
    ReplicateAck,
    StampReply,
    StampRequest,
)
from kvcheck.store.replica import Replica, Unavailable
from kvcheck.store.ring import Member, Ring
from kvcheck.store.storage import MemoryStorage, StorageError
from kvcheck.store.versions import Version, stamp

RING = Ring.build([Member("n1"), Member("n2"), Member("n3")], 16)


class Breakable(MemoryStorage):
    """Memory storage whose every read and write fails while ``broken``."""

    broken = False

    def get(self, key: bytes) -> list[Version]:
        if self.broken:
            raise StorageError("damaged block")
        return super().get(key)

    def put(self, key: bytes, versions: Sequence[Version]) -> None:
        if self.broken:
            raise StorageError("disk full")
        super().put(key, versions)


def replica() -> tuple[Replica, Breakable, Hints, Counter[str]]:
    storage, hints, counters = Breakable(), Hints(), Counter[str]()
    shared = SharedHashes("n1", RING, 3)
    return (Replica("n1.1", ClusterConfig(), storage, hints, shared, counters), storage, hints,
            counters)


def versions_of(value: bytes) -> tuple[Version, ...]:
    return tuple(stamp("n2.1", [], {}, value, 1, 10)[1])


def test_a_peers_requests_are_answered_and_stored() -> None:
    node, storage, hints, counters = replica()
    stamped = node.answer(StampRequest(7, b"k", {}, b"v", 1, hint_for="n3"))
    assert isinstance(stamped, StampReply) and stamped.request == 7
    assert [v.value for v in storage.get(b"k")] == [b"v"]
    assert hints.counts() == {"n3": 1}
    assert node.answer(Replicate(8, b"j", versions_of(b"w"))) == ReplicateAck(8)
    assert node.answer(ReadRequest(9, b"j")) == ReadReply(9, versions_of(b"w"))
    assert counters == {}


def test_a_peers_request_storage_cannot_serve_is_rejected_with_the_reason() -> None:
    node, storage, hints, counters = replica()
    storage.broken = True
    assert node.answer(StampRequest(7, b"k", {}, b"v", 1, hint_for="n3")) == Rejected(
        7, "damaged block")
    assert node.answer(Replicate(8, b"k", versions_of(b"w"), "n3")) == Rejected(
        8, "damaged block")
    assert node.answer(ReadRequest(9, b"k")) == Rejected(9, "damaged block")
    assert counters == {"storage_errors": 3}
    storage.broken = False
    assert storage.get(b"k") == [] and hints.counts() == {}


def test_this_nodes_own_operations_report_a_failure_once_and_change_nothing() -> None:
    node, storage, hints, counters = replica()
    storage.broken = True
    assert node.read(b"k") == Unavailable("damaged block")
    assert isinstance(node.stamp(b"k", {}, b"v", 1), Unavailable)
    assert node.merge(b"k", versions_of(b"w"), hint_for="n3") is False
    node.drop(b"k")
    assert counters == {"storage_errors": 4}
    storage.broken = False
    assert storage.get(b"k") == [] and hints.counts() == {}
    assert node.merge(b"k", versions_of(b"w")) is True
    assert node.attempt(lambda storage: [k for k, _ in storage.scan()]) == [b"k"]
    assert counters == {"storage_errors": 4}
