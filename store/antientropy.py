"""Merkle trees over a replica's keys, for anti-entropy between replicas.

Theory of operation
-------------------
Two replicas that should hold the same keys compare them without sending them. Each builds a
tree over the keys they share: the ring position of a key picks one of ``FANOUT ** DEPTH``
leaves (the top bits of its hash); a leaf's hash covers the sorted ``(key, digest of its
versions)`` pairs in it, and an inner node's hash covers its children's. Equal roots: nothing
to do. Otherwise the two sides take turns: each compares the other's hashes at one level with
its own and answers with the children of the nodes that differ, down to the leaves; for differing
leaves the keys and their digests are exchanged, and each side sends the other the versions of
the keys on which they disagree. Merging is ``sync``, so a key present on both sides converges
whichever side sent it.

A round compares one *segment* (one of the root's ``FANOUT`` subtrees) with one peer, so its
work is a sixteenth of the keys; rounds rotate through peers and segments. A round costs one
message per level (each carrying ``FANOUT`` hashes per differing node) plus the keys of the
differing leaves: it grows with the difference, not with the data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from store.ring import RING_BITS, key_position

FANOUT = 16
DEPTH = 3  # levels below the root: FANOUT ** DEPTH = 4096 leaves
LEAVES = FANOUT ** DEPTH
_LEAF_BITS = (LEAVES - 1).bit_length()
EMPTY = b"\0" * 8


def leaf_of(key: bytes) -> int:
    """The leaf a key belongs to: the top bits of its ring position."""
    return key_position(key) >> (RING_BITS - _LEAF_BITS)


def segment_of(key: bytes) -> int:
    """Which of the ``FANOUT`` subtrees under the root a key falls in (one round's share)."""
    return leaf_of(key) // FANOUT ** (DEPTH - 1)


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=8).digest()


@dataclass(frozen=True, slots=True)
class MerkleTree:
    """An immutable tree; ``levels[0]`` is ``[root]``, ``levels[DEPTH]`` the leaves."""

    levels: tuple[tuple[bytes, ...], ...]
    leaves: dict[int, dict[bytes, bytes]]  # leaf -> key -> digest (non-empty leaves only)

    @classmethod
    def build(cls, items: Iterable[tuple[bytes, bytes]]) -> MerkleTree:
        """A tree over ``(key, digest of its versions)`` pairs."""
        leaves: dict[int, dict[bytes, bytes]] = {}
        for key, key_digest in items:
            leaves.setdefault(leaf_of(key), {})[key] = key_digest
        level = [EMPTY] * LEAVES
        for leaf, keys in leaves.items():
            level[leaf] = digest(b"".join(k + d for k, d in sorted(keys.items())))
        levels = [tuple(level)]
        while len(level) > 1:
            level = [EMPTY if all(h == EMPTY for h in level[i:i + FANOUT])
                     else digest(b"".join(level[i:i + FANOUT]))
                     for i in range(0, len(level), FANOUT)]
            levels.append(tuple(level))
        return cls(tuple(reversed(levels)), leaves)

    @property
    def root(self) -> bytes:
        return self.levels[0][0]

    def hash(self, level: int, index: int) -> bytes:
        return self.levels[level][index]

    def differing(self, level: int, theirs: Sequence[tuple[int, bytes]]) -> list[int]:
        """The indexes at ``level`` whose hash differs from the other side's."""
        return [i for i, h in theirs if 0 <= i < len(self.levels[level])
                and self.levels[level][i] != h]

    def children(self, level: int, indexes: Iterable[int]) -> list[tuple[int, bytes]]:
        """This tree's hashes of the children of ``indexes`` at ``level``."""
        below = self.levels[level + 1]
        return [(c, below[c]) for i in indexes for c in range(i * FANOUT, (i + 1) * FANOUT)]

    def keys_in(self, leaves: Iterable[int]) -> dict[bytes, bytes]:
        """``key -> digest`` for every key in the given leaves."""
        out: dict[bytes, bytes] = {}
        for leaf in leaves:
            out.update(self.leaves.get(leaf, {}))
        return out
