"""Partitioning and replication: a consistent-hashing ring with virtual nodes, weights and zones.

Theory of operation
-------------------
Keys and tokens live on one ring of ``2**64`` positions. A key's position is the first eight bytes
of its BLAKE2b hash (:func:`key_position`). Every physical node (a :class:`Member`) owns
``weight * vnodes_per_weight`` *tokens* (virtual nodes). A token ``t`` owns the arc ``(p, t]``
from the previous token ``p`` clockwise, so a key at position ``k`` belongs to the first token
``>= k``, wrapping past ``2**64 - 1`` to the smallest token.

Tokens are *allocated*, not drawn at random. Random tokens give each node a share whose standard
deviation is about ``1/sqrt(vnodes)`` of its mean (9% with 128 vnodes), so with a handful of nodes
some node is routinely 15-25% off. Instead, in the spirit of Cassandra's
``allocate_tokens_for_keyspace``:

- the first member's tokens are evenly spaced, starting from a hash of its id;
- a joining member needs ``weight / total_weight`` of the ring, i.e. exactly
  ``piece = 2**64 // (total_weight * vnodes_per_weight)`` per token. For each of its tokens it
  picks the *donor*, the member furthest above its own weight-proportional target (ties: natural
  order of ids), chooses one of the donor's arcs ``(a, b]`` longer than ``piece``, and places the
  new token at ``a + piece``: the newcomer owns ``(a, a + piece]``, the donor keeps
  ``(a + piece, b]``.

The donor's average arc is longer than ``piece`` (it is above target), so the split always fits,
and every member ends within about one piece (``1/(weight * vnodes_per_weight)`` of its share) of
its target. Worked case, ``vnodes_per_weight = 2``: n1 alone holds 2 arcs of 1/2. Adding n2 (target
1/2 each, piece 1/4) halves both of n1's arcs. Adding n3 (targets 1/3, piece 1/6) takes 1/6 from
n1, then 1/6 from n2 (now the one further above target): all three end at exactly 1/3.

Which of the donor's arcs is split is free, and is used for *replica* balance: the ring space a
member holds a copy of, for preference lists of 3. A few of the donor's arcs are drawn in an order
seeded by the newcomer's id, and the one that keeps replica load closest to proportional to weight
wins (see :class:`_Allocator`). Splitting the donor's largest arc instead — or scoring every arc —
packs the ring into regular patterns in which, with 4 or 5 equal nodes, some node holds 20-35% more
or fewer replicas than the mean. Measured with the draw (max deviation from the mean, N = 3): 2-9%
for 4-24 equal nodes in one zone, 3-7% for 6-12 nodes in 3 equal zones — about what random tokens
give, with primary shares within 0.5% instead of 15-25%. Mixed weights are weaker: a heavy member
that joins a light one must cut each of its arcs into several pieces, leaving runs of its own tokens
that preference lists skip over, so in small clusters light members can carry up to ~45% more
replicas than their weight asks (5 nodes of weights 1-4); larger ones dilute it (12 nodes: 7%).

A join only splits arcs, so it moves only keys that the new member now owns. A leave drops the
member's tokens; each of its arcs merges into the clockwise successor's, so only its keys move —
and the successors are mostly the donors the leaver took those arcs from, so a leave is not
balanced: after one of n equal members leaves, the member furthest from its new share is off by
25% for n = 4 and typically 9-13% (up to 18%) for n = 8-12. The next join takes from the members
furthest above target and so moves the ring back towards balance. The allocation is a pure
function of the membership history: nodes that apply the same joins and leaves in the same order
compute the same tokens. :meth:`Ring.build` fixes that order (natural sort of ids); gossip spreads
the tokens themselves and :meth:`Ring.from_tokens` rebuilds the ring from them.

Replication: the *walk* from a key lists every member once, in the clockwise order of their first
token at or after the key. The *preference list* of ``n`` picks, along the walk, members of zones
not yet used, and when fewer than ``n`` zones exist fills up with the earliest remaining members;
it is returned in walk order, so its head is always the key's owner. Rings are immutable; answers
per token index are computed on first use and cached, so a lookup is a hash, a bisect and a list
index.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import re
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["RING_BITS", "RING_SIZE", "Member", "Ring", "key_position", "natural_key"]

RING_BITS = 64
RING_SIZE = 1 << RING_BITS  # positions are ints in [0, RING_SIZE)

DEFAULT_VNODES = 128

_BALANCE_REPLICAS = 3  # the allocation balances replica load for preference lists of this size
_CANDIDATES = 8  # arcs drawn and scored per new token
_MASK = RING_SIZE - 1

_DIGITS = re.compile(r"(\d+)")


def key_position(key: bytes) -> int:
    """The ring position of ``key``: ``blake2b(key, digest_size=8)`` read as a big-endian int."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


def natural_key(node_id: str) -> tuple[tuple[str | int, ...], str]:
    """A sort key ordering ids naturally (``n2 < n10``); the raw id breaks ties (``n01``/``n1``)."""
    parts = _DIGITS.split(node_id)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), node_id


@dataclass(frozen=True, slots=True)
class Member:
    """A physical node of the ring.

    ``weight`` asks for ``weight * vnodes_per_weight`` tokens, hence a ``weight / total_weight``
    share of the keys. Raises ``ValueError`` for an empty id or a weight that is not an int >= 1,
    ``TypeError`` for an id or zone that is not a string.
    """

    node_id: str
    zone: str = "default"
    weight: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.node_id, str) or not isinstance(self.zone, str):
            raise TypeError("node_id and zone must be strings")
        if not self.node_id:
            raise ValueError("node_id must not be empty")
        if not self.zone:
            raise ValueError("zone must not be empty")
        if isinstance(self.weight, bool) or not isinstance(self.weight, int) or self.weight < 1:
            raise ValueError(f"weight must be an int >= 1, got {self.weight!r}")


def _check_vnodes(vnodes_per_weight: int) -> None:
    if (
        isinstance(vnodes_per_weight, bool)
        or not isinstance(vnodes_per_weight, int)
        or vnodes_per_weight < 1
    ):
        raise ValueError(f"vnodes_per_weight must be an int >= 1, got {vnodes_per_weight!r}")


def _first_tokens(node_id: str, count: int) -> list[int]:
    """``count`` evenly spaced tokens starting at a position derived from ``node_id``."""
    start = key_position(b"kvcheck-ring:" + node_id.encode())
    return sorted((start + i * RING_SIZE // count) % RING_SIZE for i in range(count))


def _mix(x: int) -> int:
    """SplitMix64's finaliser: a fixed, well-spread permutation of 64-bit ints."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


class _Allocator:
    """Places a joining member's tokens; built for one join, then dropped.

    Primary ownership is the hard constraint: each new token takes exactly ``piece`` from the start
    of an arc of the *donor*, the member furthest above its weight-proportional target. Which of
    the donor's arcs (longer than ``piece``) is split serves *replica* load — the ring space a
    member holds a copy of, with zone-aware preference lists of ``_BALANCE_REPLICAS`` members:
    ``_CANDIDATES`` arcs are drawn in a pseudo-random order seeded by the new member's id, and the
    one that least increases ``sum(load**2 / weight)`` wins (that sum is smallest when every load is
    proportional to its weight). Drawing a few arcs at random, rather than scoring all of them,
    matters: a fully greedy choice settles into regular patterns that later joins cannot undo.
    Arithmetic is on exact integers and ties go to the earlier draw, so the tokens are a pure
    function of the ring and the member.
    """

    def __init__(self, ring: Ring, member: Member) -> None:
        self.new = member.node_id
        members = dict(ring.members)
        members[member.node_id] = member
        self.zone = {i: m.zone for i, m in members.items()}
        self.weight = {i: m.weight for i, m in members.items()}
        self.total_weight = sum(self.weight.values())
        self.scale = math.lcm(*self.weight.values())
        self.n = min(_BALANCE_REPLICAS, len(members))
        zones = set(self.zone.values())
        self.zones_needed = min(self.n, len(zones))
        # When every preference list is bound to hold the new member — it is among the only n
        # members, or alone in its zone with at most n zones — no choice of arcs changes anyone's
        # replica load (the other members are picked as if the new one were absent): skip scoring.
        alone = sum(1 for z in self.zone.values() if z == member.zone) == 1
        self.scoring = not (len(members) <= self.n or (alone and len(zones) <= self.n))
        self.piece = RING_SIZE // (self.total_weight * ring.vnodes_per_weight)
        self.positions = list(ring._positions)
        self.owners = list(ring._owner_at)
        self.rank = {node_id: rank for rank, node_id in enumerate(ring._order)}
        seed = key_position(b"kvcheck-ring-draw:" + member.node_id.encode())
        # Current length of every old token's arc; per member, its arcs longer than a piece in
        # draw order (a heap of (draw key, end token)); primary share; replica load.
        self.length: dict[int, int] = {}
        self.ends: dict[str, list[int]] = {i: [] for i in ring._order}
        self.draws: dict[str, list[tuple[int, int]]] = {i: [] for i in ring._order}
        share = dict.fromkeys(ring._order, 0)
        self.load = dict.fromkeys(members, 0)
        for index, token in enumerate(self.positions):
            owner = self.owners[index]
            length = self.length[token] = self._arc(index)
            self.ends[owner].append(token)
            if length > self.piece:
                self.draws[owner].append((_mix(token ^ seed), token))
            share[owner] += length
            if self.scoring:
                for node_id in self._replicas(index)[0]:
                    self.load[node_id] += length
        for heap in self.draws.values():
            heapq.heapify(heap)
        # Excess over the target share, scaled by total_weight to stay in integers.
        self.excess = {
            i: share[i] * self.total_weight - self.weight[i] * RING_SIZE for i in ring._order
        }

    def _arc(self, index: int) -> int:
        positions = self.positions
        return (positions[index] - positions[index - 1]) % RING_SIZE or RING_SIZE

    def _replicas(self, start: int) -> tuple[list[str], int]:
        """The preference list (in no particular order) of the arc ending at token ``start`` under
        the current owners, and how many tokens the walk looked at. Same rule as
        :meth:`Ring.preference_list`.
        """
        owners, n = self.owners, self.n
        size = len(owners)
        seen: list[str] = []
        if self.zones_needed == 1:  # the common case: the first n distinct members
            for step in range(size):
                node_id = owners[(start + step) % size]
                if node_id not in seen:
                    seen.append(node_id)
                    if len(seen) == n:
                        return seen, step + 1
            return seen, size
        zone, zones_needed = self.zone, self.zones_needed
        chosen: list[str] = []
        used: set[str] = set()
        steps = size
        for step in range(size):
            node_id = owners[(start + step) % size]
            if node_id in seen:
                continue
            seen.append(node_id)
            if zone[node_id] not in used:
                used.add(zone[node_id])
                chosen.append(node_id)
            if len(used) >= zones_needed and len(seen) >= n:
                steps = step + 1
                break
        for node_id in seen:
            if len(chosen) >= n:
                break
            if node_id not in chosen:
                chosen.append(node_id)
        return chosen, steps

    def _deltas(self, index: int, take: int) -> dict[str, int]:
        """Replica-load changes if the new member took ``take`` from the start of arc ``index``.

        Only arcs whose preference walk crosses the split change their replicas: the split arc
        and the arcs just before it (walks from further back stop no later than walks from
        nearer, so the scan stops at the first walk that ends before the split).
        """
        owners = self.owners
        size = len(owners)
        affected: list[tuple[int, int, list[str]]] = []
        for back in range(1, size):
            chosen, steps = self._replicas(index - back)
            if steps <= back:
                break
            affected.append((index - back, self._arc(index - back), chosen))
        split = self._replicas(index)[0]
        owners.insert(index, self.new)  # index - back < 0 still names the same token after this
        delta: dict[str, int] = {}
        try:
            for start, length, before in affected:
                for node_id in before:
                    delta[node_id] = delta.get(node_id, 0) - length
                for node_id in self._replicas(start)[0]:
                    delta[node_id] = delta.get(node_id, 0) + length
            for node_id in split:
                delta[node_id] = delta.get(node_id, 0) - take
            for node_id in self._replicas(index)[0]:
                delta[node_id] = delta.get(node_id, 0) + take
        finally:
            del owners[index]
        return delta

    def _cost(self, delta: Mapping[str, int]) -> int:
        """The change of ``scale * sum(load**2 / weight)`` (exact) if ``delta`` were applied."""
        load, weight, scale = self.load, self.weight, self.scale
        return sum(d * (2 * load[i] + d) * (scale // weight[i]) for i, d in delta.items() if d)

    def allocate(self, count: int) -> list[int]:
        """Place ``count`` tokens for the new member and return them."""
        piece, excess, rank = self.piece, self.excess, self.rank
        new: list[int] = []
        for _ in range(count):
            donor = max(excess, key=lambda i: (excess[i], -rank[i]))
            heap = self.draws[donor]
            drawn: list[tuple[int, int]] = []
            while heap and len(drawn) < _CANDIDATES:
                entry = heapq.heappop(heap)
                if self.length[entry[1]] > piece:  # else it shrank below a piece: drop it
                    drawn.append(entry)
            if drawn:
                moves = [(end, piece) for _, end in drawn]
            else:
                # No arc longer than a piece: possible only for tokens not allocated here (see
                # from_tokens). Halve the donor's longest arc instead.
                end = max(self.ends[donor], key=lambda t: (self.length[t], -t))
                moves = [(end, self.length[end] // 2)]
            best: tuple[int, int, int, dict[str, int]] | None = None
            for order, (end, take) in enumerate(moves):
                if take < 1:
                    continue
                if not self.scoring:
                    best = (0, order, take, {})
                    break
                delta = self._deltas(bisect_left(self.positions, end), take)
                cost = self._cost(delta)
                if best is None or (cost, order) < (best[0], best[1]):
                    best = (cost, order, take, delta)
            if best is None:
                raise RuntimeError("no arc left to split")  # would need ~2**64 tokens
            _, order, take, delta = best
            end = moves[order][0]
            for entry in drawn:
                if entry[1] != end or self.length[end] - take > piece:
                    heapq.heappush(heap, entry)
            index = bisect_left(self.positions, end)
            token = (end - self.length[end] + take) % RING_SIZE
            self.length[end] -= take
            self.positions.insert(index, token)
            self.owners.insert(index, self.new)
            for node_id, d in delta.items():
                self.load[node_id] += d
            excess[donor] -= take * self.total_weight
            new.append(token)
        return new


class Ring:
    """An immutable consistent-hashing ring. Changing membership returns a new ring.

    ``members`` and ``tokens`` are read-only mappings keyed by node id, in natural id order; each
    member's tokens are sorted ascending. No call changes a ring, including one that raises.
    Lookups fill per-token caches on first use, which is invisible and safe to share.
    """

    __slots__ = (
        "_cache_pref",
        "_cache_walk",
        "_members",
        "_order",
        "_owner_at",
        "_ownership",
        "_positions",
        "_tokens",
        "_vnodes",
        "_zone_count",
    )

    def __init__(self, vnodes_per_weight: int = DEFAULT_VNODES) -> None:
        """An empty ring. Raises ``ValueError`` unless ``vnodes_per_weight`` is an int >= 1."""
        _check_vnodes(vnodes_per_weight)
        self._setup({}, {}, vnodes_per_weight)

    # -- construction -----------------------------------------------------------------------

    def _setup(
        self,
        members: Mapping[str, Member],
        tokens: Mapping[str, Sequence[int]],
        vnodes_per_weight: int,
    ) -> None:
        order = sorted(members, key=natural_key)
        self._vnodes = vnodes_per_weight
        self._order = tuple(order)
        self._members = MappingProxyType({i: members[i] for i in order})
        self._tokens = MappingProxyType({i: tuple(sorted(tokens[i])) for i in order})
        pairs = sorted((t, node_id) for node_id in order for t in self._tokens[node_id])
        self._positions = [t for t, _ in pairs]
        self._owner_at = [node_id for _, node_id in pairs]
        self._zone_count = len({m.zone for m in members.values()})
        self._ownership: dict[str, float] | None = None
        self._cache_walk: list[tuple[str, ...] | None] = [None] * len(pairs)
        self._cache_pref: dict[int, list[tuple[str, ...] | None]] = {}

    @classmethod
    def _make(
        cls,
        members: Mapping[str, Member],
        tokens: Mapping[str, Sequence[int]],
        vnodes_per_weight: int,
    ) -> Ring:
        ring = cls.__new__(cls)
        ring._setup(members, tokens, vnodes_per_weight)
        return ring

    @classmethod
    def build(cls, members: Iterable[Member], vnodes_per_weight: int = DEFAULT_VNODES) -> Ring:
        """The ring obtained by adding ``members`` one by one to an empty ring, in natural id
        order (``n2`` before ``n10``) whatever order they are given in.

        Raises ``ValueError`` for a repeated node id or a bad ``vnodes_per_weight``.
        """
        ring = cls(vnodes_per_weight)
        for member in sorted(members, key=lambda m: natural_key(m.node_id)):
            ring = ring.with_member(member)
        return ring

    @classmethod
    def from_tokens(
        cls,
        members: Iterable[Member],
        tokens: Mapping[str, Sequence[int]],
        vnodes_per_weight: int = DEFAULT_VNODES,
    ) -> Ring:
        """Rebuild a ring from announced tokens (as gossip carries them).

        Raises ``ValueError`` when ids repeat, when ``tokens`` names a node that is not a member or
        a member has no tokens, when a token is not an int in ``[0, 2**64)``, or when two tokens
        are equal (within or across members). The token count per member is not checked against
        its weight: the announcer's allocation is authoritative.
        """
        _check_vnodes(vnodes_per_weight)
        by_id: dict[str, Member] = {}
        for member in members:
            if member.node_id in by_id:
                raise ValueError(f"duplicate member {member.node_id!r}")
            by_id[member.node_id] = member
        extra = set(tokens) - set(by_id)
        if extra:
            raise ValueError(f"tokens for non-members: {sorted(extra, key=natural_key)}")
        seen: set[int] = set()
        clean: dict[str, tuple[int, ...]] = {}
        for node_id in by_id:
            own = tuple(tokens.get(node_id, ()))
            if not own:
                raise ValueError(f"member {node_id!r} has no tokens")
            for t in own:
                if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < RING_SIZE:
                    raise ValueError(f"token {t!r} of {node_id!r} is not an int in [0, 2**64)")
                if t in seen:
                    raise ValueError(f"token {t} is announced twice")
                seen.add(t)
            clean[node_id] = own
        return cls._make(by_id, clean, vnodes_per_weight)

    def with_member(self, member: Member) -> Ring:
        """A new ring with ``member`` added and its tokens allocated (see the module docstring).

        Only arcs are split, so every key that changes owner moves to ``member``. Raises
        ``ValueError`` if a member with that id is already present; ``self`` is unchanged.
        """
        if member.node_id in self._members:
            raise ValueError(f"{member.node_id!r} is already a member")
        count = member.weight * self._vnodes
        members = dict(self._members)
        members[member.node_id] = member
        tokens: dict[str, Sequence[int]] = dict(self._tokens)
        if not self._members:
            tokens[member.node_id] = _first_tokens(member.node_id, count)
        else:
            tokens[member.node_id] = _Allocator(self, member).allocate(count)
        return Ring._make(members, tokens, self._vnodes)

    def without_member(self, node_id: str) -> Ring:
        """A new ring without ``node_id``: its tokens are dropped and each of its arcs goes to the
        clockwise successor, so only its keys move. Raises ``KeyError`` if it is not a member.
        """
        if node_id not in self._members:
            raise KeyError(node_id)
        members = {i: m for i, m in self._members.items() if i != node_id}
        tokens = {i: t for i, t in self._tokens.items() if i != node_id}
        return Ring._make(members, tokens, self._vnodes)

    # -- queries ----------------------------------------------------------------------------

    @property
    def members(self) -> Mapping[str, Member]:
        """Members by node id, in natural id order (read-only)."""
        return self._members

    @property
    def tokens(self) -> Mapping[str, tuple[int, ...]]:
        """Each member's tokens, sorted ascending (read-only)."""
        return self._tokens

    @property
    def vnodes_per_weight(self) -> int:
        """Tokens a member is given per unit of weight when it joins."""
        return self._vnodes

    def __len__(self) -> int:
        return len(self._members)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ring):
            return NotImplemented
        return (
            self._vnodes == other._vnodes
            and dict(self._members) == dict(other._members)
            and dict(self._tokens) == dict(other._tokens)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Ring({list(self._members.values())!r}, vnodes_per_weight={self._vnodes})"

    def _index(self, key: bytes) -> int:
        index = bisect_left(self._positions, key_position(key))
        return 0 if index == len(self._positions) else index

    def owner(self, key: bytes) -> str:
        """The member owning the first token at or clockwise after the key's position.

        Raises ``ValueError`` on an empty ring.
        """
        if not self._positions:
            raise ValueError("the ring is empty")
        return self._owner_at[self._index(key)]

    def walk(self, key: bytes) -> tuple[str, ...]:
        """Every member once, in clockwise order from the key (first token at or after it): the
        extended preference list a sloppy quorum falls back along. Empty for an empty ring.
        """
        if not self._positions:
            return ()
        index = self._index(key)
        found = self._cache_walk[index]
        if found is None:
            found = self._cache_walk[index] = self._walk_from(index, len(self._members))
        return found

    def _walk_from(self, index: int, limit: int) -> tuple[str, ...]:
        """The first ``limit`` distinct members clockwise from token ``index``."""
        owners = self._owner_at
        size = len(owners)
        seen: dict[str, None] = {}
        for step in range(size):
            seen.setdefault(owners[(index + step) % size])
            if len(seen) == limit:
                break
        return tuple(seen)

    def preference_list(self, key: bytes, n: int) -> tuple[str, ...]:
        """The ``n`` members that replicate the key, in clockwise order; the head is its owner.

        Along the walk from the key, members of zones not yet used are chosen first; with fewer
        than ``n`` zones the earliest remaining members fill up the list. So it spans
        ``min(n, zones)`` zones and, within one zone, is the first ``n`` distinct members
        clockwise. Raises ``ValueError`` unless ``1 <= n <= len(members)``.
        """
        return self.preference_at(key_position(key), n)

    def preference_at(self, position: int, n: int) -> tuple[str, ...]:
        """:meth:`preference_list` for a key at ring position ``position``."""
        table = self._cache_pref.get(n)
        if table is None:
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(self._members):
                raise ValueError(f"n must be in [1, {len(self._members)}], got {n!r}")
            table = self._cache_pref[n] = [None] * len(self._positions)
        index = bisect_left(self._positions, position)
        if index == len(table):
            index = 0
        found = table[index]
        if found is None:
            found = table[index] = self._preference_from(index, n)
        return found

    def _preference_from(self, index: int, n: int) -> tuple[str, ...]:
        owners, members = self._owner_at, self._members
        size, zones = len(owners), self._zone_count
        seen: list[str] = []
        seen_set: set[str] = set()
        chosen: set[str] = set()
        used_zones: set[str] = set()
        for step in range(size):
            node_id = owners[(index + step) % size]
            if node_id in seen_set:
                continue
            seen.append(node_id)
            seen_set.add(node_id)
            zone = members[node_id].zone
            if zone not in used_zones:
                used_zones.add(zone)
                chosen.add(node_id)
            if len(chosen) == n or (len(used_zones) == zones and len(seen) >= n):
                break
        for node_id in seen:
            if len(chosen) == n:
                break
            chosen.add(node_id)
        return tuple(node_id for node_id in seen if node_id in chosen)

    def ownership(self) -> dict[str, float]:
        """Fraction of the ring each member owns as primary (values sum to 1; empty ring: {})."""
        if self._ownership is None:
            positions, owners = self._positions, self._owner_at
            share = dict.fromkeys(self._order, 0)
            for index, token in enumerate(positions):
                share[owners[index]] += (token - positions[index - 1]) % RING_SIZE or RING_SIZE
            self._ownership = {i: s / RING_SIZE for i, s in share.items()}
        return dict(self._ownership)
