"""A Bloom filter: a set of keys that answers "maybe present" or "certainly absent".

``m`` bits and ``k`` probes per key, sized for a target false-positive rate ``p`` over ``n`` keys
(``m = -n ln p / ln² 2``, ``k = m/n ln 2``). The probes are ``h1 + i·h2 mod m`` (Kirsch and
Mitzenmacher's double hashing) over two 64-bit halves of a BLAKE2b digest of the key.

Serialised form: ``k`` (u8), ``m`` (u32, big-endian), then the ``ceil(m/8)`` bit bytes.
"""

from __future__ import annotations

import hashlib
import math
import struct

_HEAD = struct.Struct(">BI")


def key_hashes(key: bytes) -> tuple[int, int]:
    """The two 64-bit hashes every filter derives its probes from."""
    digest = hashlib.blake2b(key, digest_size=16).digest()
    return int.from_bytes(digest[:8], "big"), int.from_bytes(digest[8:], "big")


class BloomFilter:
    """A fixed-size Bloom filter over byte-string keys."""

    def __init__(self, bits: int, probes: int, data: bytes | None = None) -> None:
        if bits < 8 or not 1 <= probes <= 32:
            raise ValueError(f"bad Bloom filter shape: {bits} bits, {probes} probes")
        self.bits = bits
        self.probes = probes
        self._data = bytearray(data) if data is not None else bytearray((bits + 7) // 8)
        if len(self._data) != (bits + 7) // 8:
            raise ValueError("Bloom filter data does not match its size")

    @classmethod
    def for_keys(cls, count: int, fp_rate: float) -> BloomFilter:
        """An empty filter sized for ``count`` keys at false-positive rate ``fp_rate``."""
        if not 0 < fp_rate < 1:
            raise ValueError(f"false-positive rate must be in (0, 1), not {fp_rate}")
        n = max(count, 1)
        bits = max(64, math.ceil(-n * math.log(fp_rate) / math.log(2) ** 2))
        return cls(bits, max(1, min(32, round(bits / n * math.log(2)))))

    def add(self, key: bytes) -> None:
        h1, h2 = key_hashes(key)
        for i in range(self.probes):
            bit = (h1 + i * h2) % self.bits
            self._data[bit >> 3] |= 1 << (bit & 7)

    def __contains__(self, key: bytes) -> bool:
        return self.contains_hashes(key_hashes(key))

    def contains_hashes(self, hashes: tuple[int, int]) -> bool:
        """Membership by :func:`key_hashes` of the key, computed once for many filters."""
        h1, h2 = hashes
        data, bits = self._data, self.bits
        for i in range(self.probes):
            bit = (h1 + i * h2) % bits
            if not data[bit >> 3] & (1 << (bit & 7)):
                return False
        return True

    def to_bytes(self) -> bytes:
        return _HEAD.pack(self.probes, self.bits) + bytes(self._data)

    @classmethod
    def from_bytes(cls, raw: bytes) -> BloomFilter:
        """Decode :meth:`to_bytes`. Raises ValueError when malformed."""
        if len(raw) < _HEAD.size:
            raise ValueError("Bloom filter too short")
        probes, bits = _HEAD.unpack_from(raw)
        return cls(bits, probes, raw[_HEAD.size:])
