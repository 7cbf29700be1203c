"""Merkle-tree hashes of the keys a node shares with each peer, kept up to date write by write.

Theory of operation
-------------------
Two replicas that should hold the same keys compare them without sending them. For each peer a
node keeps a tree over the keys both replicate (both are in the key's preference list): the ring
position of a key picks one of ``LEAVES = FANOUT ** DEPTH`` leaves (the top bits of its hash).
A key *contributes* a 128-bit hash of the key and the digest of its sibling set, and a node's hash
is the sum, modulo 2**128, of the contributions below it — for a leaf, of its keys; for an inner
node, of its children. A sum is what makes the tree incremental: a write changes one key's
contribution, so it adds ``new - old`` to one leaf per peer sharing the key, and nothing else is
stored: per peer, ``LEAVES`` 16-byte sums (64 KiB), whatever the data set. Inner nodes are
summed from the leaves when asked for (4096 additions for the root).

A key whose siblings are all tombstones contributes nothing, as if absent: replicas purge
tombstones lazily and independently (compaction), and a purge must neither show as a difference
nor be undone by anti-entropy. A delete still spreads: a replica holding the deleted value
differs, and the exchange of that leaf sends each side the other's stored versions.

The sums start empty and take every write from the moment :meth:`SharedHashes.build_step` opens
a storage scan, a snapshot; the build then adds the snapshot's keys a slice at a time. Since
addition commutes, snapshot plus the writes since equals the current state: once the scan is
done the hashes are exact. Until then the tree is unavailable (:attr:`SharedHashes.ready`).

The comparison protocol (:mod:`kvcheck.store.antientropy_sessions`) walks the two trees from the
root, one level per message, into the subtrees that differ, and exchanges the keys of differing
leaves only: its traffic grows with the difference, not with the data.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence

import msgpack

from kvcheck.store.ring import RING_BITS, Ring, key_position
from kvcheck.store.versions import Version, canonical, encode_versions

FANOUT = 16
#: Levels below the root: FANOUT ** DEPTH = 4096 leaves. Odd: a session's messages alternate
#: from the root (level 0, sent by the opener), so the leaves' hashes reach the opener.
DEPTH = 3
LEAVES: int = FANOUT**DEPTH  # int ** int is typed Any: a negative power is a float
_LEAF_BITS = (LEAVES - 1).bit_length()
HASH_BYTES = 16
_MOD = 1 << (8 * HASH_BYTES)
_LOW = (1 << 64) - 1

#: A scan of the keys ``where`` accepts: ``Storage.scan(where=...)``.
Scan = Callable[[Callable[[bytes], bool]], Iterator[tuple[bytes, list[Version]]]]


def leaf_of(key: bytes) -> int:
    """The leaf a key belongs to: the top bits of its ring position."""
    return key_position(key) >> (RING_BITS - _LEAF_BITS)


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=8).digest()


def live(versions: Iterable[Version]) -> bool:
    """True unless every sibling is a tombstone (or there are none): what trees compare."""
    return any(v.value is not None for v in versions)


def versions_digest(versions: Sequence[Version]) -> bytes:
    """A digest of a sibling set, the same on every replica holding the same set."""
    return digest(msgpack.packb(encode_versions(canonical(versions)), use_bin_type=True))


def contribution(key: bytes, versions: Sequence[Version]) -> int:
    """What ``key`` holding ``versions`` adds to its leaf: 0 unless :func:`live`."""
    if not live(versions):
        return 0
    data = versions_digest(versions) + key  # the digest's fixed length keeps this unambiguous
    return int.from_bytes(hashlib.blake2b(data, digest_size=HASH_BYTES).digest(), "big")


def encode_hash(value: int) -> bytes:
    return value.to_bytes(HASH_BYTES, "big")


class SharedHashes:
    """Per peer, the leaf sums over the keys this node and that peer both replicate.

    Contract: every change the node makes to its storage is reported to :meth:`update` after it
    succeeded, with the key's sibling set before and after; :meth:`build_step` is called until
    it returns True, after construction and after every :meth:`rebuild`. Then :meth:`hash`
    answers for the storage as it is now.
    """

    def __init__(self, node_id: str, ring: Ring, n: int) -> None:
        self.node_id = node_id
        self.n = n
        self.ring = ring
        self._leaves: dict[str, array[int]] = {}
        self._scan: Iterator[tuple[bytes, list[Version]]] | None = None
        self.ready = False
        self.rebuild(ring)

    def rebuild(self, ring: Ring | None = None) -> None:
        """Forget every sum (and take ``ring``, if given: after a ring change); the tree is
        unavailable until :meth:`build_step` has run to completion again."""
        if ring is not None:
            self.ring = ring
        self._leaves = {}
        self._scan = None
        self.ready = False

    def ready_for(self, peer: str) -> bool:
        """True when the tree shared with ``peer`` is built (and ``peer`` is a member)."""
        return self.ready and peer in self._leaves

    def mine(self, key: bytes) -> bool:
        """True when this node replicates ``key`` (a scan filter)."""
        return self.node_id in self.ring.preference_list(key, self.n)

    def peers_sharing(self, key: bytes) -> list[str]:
        """The peers that replicate ``key`` with this node (none unless this node does)."""
        preferred = self.ring.preference_list(key, self.n)
        if self.node_id not in preferred:
            return []
        return [node for node in preferred if node != self.node_id]

    def build_step(self, scan: Scan, budget: int) -> bool:
        """Add up to ``budget`` keys of the storage snapshot; the first call after a rebuild
        opens it (with ``scan``) and from then on :meth:`update` counts. Returns True once the
        build is complete. Raises whatever the scan raises (then call :meth:`rebuild`)."""
        if self.ready:
            return True
        if self._scan is None:
            self._leaves = {peer: array("Q", bytes(2 * 8 * LEAVES))
                            for peer in self.ring.members if peer != self.node_id}
            self._scan = scan(self.mine)
        for _ in range(budget):
            item = next(self._scan, None)
            if item is None:
                self._scan, self.ready = None, True
                break
            key, versions = item
            self._add(key, contribution(key, versions))
        return self.ready

    def update(self, key: bytes, old: Sequence[Version], new: Sequence[Version]) -> None:
        """``key`` changed from ``old`` to ``new`` in storage."""
        if self._scan is None and not self.ready:
            return  # no snapshot yet: the build will see the new state
        if not self.peers_sharing(key):
            return
        delta = contribution(key, new) - contribution(key, old)
        if delta:
            self._add(key, delta)

    def hash(self, peer: str, level: int, index: int) -> bytes:
        """The hash of node ``index`` at ``level`` (0: the root; ``DEPTH``: the leaves) of the
        tree shared with ``peer``. Only meaningful when :meth:`ready_for` ``peer``; raises
        KeyError for a node that is not a peer, IndexError for an index out of range."""
        if not 0 <= index < FANOUT ** level:
            raise IndexError(index)
        leaves = self._leaves[peer]
        span = FANOUT ** (DEPTH - level)
        lo, hi = 2 * index * span, 2 * (index + 1) * span
        return encode_hash(((sum(leaves[lo:hi:2]) << 64) + sum(leaves[lo + 1:hi:2])) % _MOD)

    def _add(self, key: bytes, delta: int) -> None:
        leaf = 2 * leaf_of(key)
        for peer in self.peers_sharing(key):
            leaves = self._leaves[peer]
            value = ((leaves[leaf] << 64) + leaves[leaf + 1] + delta) % _MOD
            leaves[leaf], leaves[leaf + 1] = value >> 64, value & _LOW
