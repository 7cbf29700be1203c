"""Versions of a value: dotted version vectors, siblings, and last-write-wins.

Theory of operation
-------------------
Every write creates one *version*: the value (``None`` for a delete, a *tombstone*), a *dot* naming
the write event uniquely — ``(actor, counter)``, where the actor is the replica that stamped it —
and the *context*: the vector clock of everything the writer had seen when it wrote (the causal
context a client got from its last read). This is the dotted version vector of Preguiça et al.,
which Riak adopted to fix the classic vector clock's flaw: with per-node clocks, a blind write
through node X would silently overwrite an earlier, concurrent write stamped by X.

A key's state on a replica is a set of *siblings*: versions none of which is known to supersede
another. Version ``a`` is *obsolete* when some other version's context covers ``a``'s dot
(``context[a.actor] >= a.counter``) — the writer of that version saw ``a`` and replaced it. So:

- a put with the context of a read supersedes exactly the versions that read returned;
- a put without context (an empty one) supersedes nothing and becomes a sibling.

Counters are per key and per actor and contiguous: the stamping replica uses one more than the
largest counter for itself that it has seen for that key. Replicas exchange whole sibling sets and
merge them with :func:`sync`, so a replica that holds dot ``(X, k)`` also holds, or knows obsolete,
every earlier dot of X for that key — which is what makes ``context[X] = k`` mean "saw X's first k
writes".

Worked case: replica n1 holds ``v1 = (n1, 1)``. Client A read it (context ``{n1: 1}``) and writes
``a``; client B never read and writes ``b``. Stamped by n1: ``a = dot (n1, 2), context {n1: 1}``
supersedes v1; ``b = dot (n1, 3), context {}`` supersedes nothing. A read returns siblings
``[a, b]`` with context ``{n1: 3}``; a put with that context supersedes both.

In ``lww`` mode the same versions are kept, but a set resolves to the single version with the
greatest ``(timestamp, actor, counter)``: the coordinator's wall clock decides, which is exactly
what clock skew can break.

Vector clocks grow by one entry per actor that ever stamped a write of the key; past
``max_entries`` the oldest entries (by the wall-clock time they were last advanced) are dropped, as
Dynamo does. Pruning can only make a version cover less — it may create false siblings, never lose
a write.

A client's context token is checked before anything uses it (:func:`parse_context_token`): at
most :data:`MAX_CONTEXT_ENTRIES` entries, every counter and time at most :data:`MAX_COUNTER`
(a signed 64-bit integer; msgpack holds none below). Counters count one actor's writes of one
key, so no real one comes near; a replica refuses to stamp past the bound
(:mod:`kvcheck.store.replica`), so every counter stays encodable and every token the store hands
out is accepted back.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import msgpack

Versioning = Literal["vclock", "lww"]

#: A vector clock: actor -> (counter, wall-clock ms when that counter was last advanced).
Clock = Mapping[str, tuple[int, int]]


#: The largest counter, and time, a client's context may hold: ``2**63 - 1``.
MAX_COUNTER = 2**63 - 1
#: The most entries a client's context may hold. A context names the actors that stamped the
#: key's versions: a few per member ever (one per wiping of its data), and stamped versions keep
#: at most ``vclock_max_entries`` each.
MAX_CONTEXT_ENTRIES = 1000


class BadContext(ValueError):
    """A causal context token that does not decode to a vector clock, or exceeds its bounds."""


@dataclass(frozen=True, slots=True)
class Dot:
    """One write event: the ``counter``-th write of a key stamped by ``actor``."""

    actor: str
    counter: int

    def __post_init__(self) -> None:
        if not isinstance(self.actor, str) or not self.actor:
            raise ValueError("dot actor must be a non-empty string")
        if not isinstance(self.counter, int) or self.counter < 1:
            raise ValueError("dot counter must be a positive integer")


@dataclass(frozen=True, slots=True)
class Version:
    """One version of a key's value.

    ``value`` is ``None`` for a tombstone. ``timestamp`` is the coordinator's wall clock in ms when
    the write was accepted (it orders versions in ``lww`` mode and times tombstone purging).
    ``context`` must not contain the version's own dot.
    """

    dot: Dot
    context: Clock
    value: bytes | None
    timestamp: int

    def covers(self, dot: Dot) -> bool:
        """True when this version's writer had seen ``dot`` (so this version supersedes it)."""
        entry = self.context.get(dot.actor)
        return entry is not None and entry[0] >= dot.counter


def discard(versions: Iterable[Version], context: Clock) -> list[Version]:
    """The versions whose dots ``context`` does not cover."""
    kept = []
    for version in versions:
        entry = context.get(version.dot.actor)
        if entry is None or entry[0] < version.dot.counter:
            kept.append(version)
    return kept


def canonical(versions: Iterable[Version]) -> list[Version]:
    """A sibling set in dot order, so that equal sets compare (and encode) equal."""
    return sorted(versions, key=lambda v: (v.dot.actor, v.dot.counter))


def sync(*sibling_sets: Iterable[Version]) -> list[Version]:
    """Merge sibling sets: the union, less duplicates and versions another one supersedes.

    Commutative, associative and idempotent (a join), so replicas may merge in any order.
    The result is sorted by dot, so equal sets compare equal. Two versions with one dot but
    different contents — last-write-wins forgets the versions it drops, their dots with them,
    so a replica can stamp a dot again — are settled as last-write-wins would settle them
    (:func:`_content_order`), so replicas that hold either still agree once they have merged.
    """
    by_dot: dict[Dot, Version] = {}
    for versions in sibling_sets:
        for version in versions:
            kept = by_dot.get(version.dot)
            if kept is None or (kept != version
                                and _content_order(version) > _content_order(kept)):
                by_dot[version.dot] = version
    if len(by_dot) <= 1:
        return list(by_dot.values())
    candidates = list(by_dot.values())
    covered: dict[str, int] = {}  # actor -> the highest of its counters some context covers
    for version in candidates:
        for actor, (counter, _) in version.context.items():
            if counter > covered.get(actor, 0):
                covered[actor] = counter
    # Only a version some context covers is looked at again, to tell whose: never its own.
    return canonical(
        v for v in candidates if covered.get(v.dot.actor, 0) < v.dot.counter
        or not any(o.covers(v.dot) for o in candidates if o is not v))


def _content_order(version: Version) -> tuple[object, ...]:
    """A total order of versions with the same dot: the later timestamp first, then by
    content, so that the choice between them is the same on every replica."""
    return (version.timestamp, version.value is not None, version.value or b"",
            sorted(version.context.items()))


def resolve(versions: Sequence[Version], versioning: Versioning) -> list[Version]:
    """Reduce a merged sibling set to what the cluster's versioning mode keeps.

    ``vclock`` keeps every sibling; ``lww`` keeps only the version with the greatest
    ``(timestamp, actor, counter)``.
    """
    if versioning == "lww" and len(versions) > 1:
        return [max(versions, key=lambda v: (v.timestamp, v.dot.actor, v.dot.counter))]
    return list(versions)


def join(versions: Iterable[Version]) -> dict[str, tuple[int, int]]:
    """The causal context of a set of versions: every dot and context entry, maximised."""
    clock: dict[str, tuple[int, int]] = {}
    for version in versions:
        for actor, entry in version.context.items():
            _advance(clock, actor, entry)
        _advance(clock, version.dot.actor, (version.dot.counter, version.timestamp))
    return clock


def _advance(clock: dict[str, tuple[int, int]], actor: str, entry: tuple[int, int]) -> None:
    current = clock.get(actor)
    if current is None or entry[0] > current[0]:
        clock[actor] = entry


def stamp(
    actor: str,
    local: Sequence[Version],
    context: Clock,
    value: bytes | None,
    timestamp: int,
    max_entries: int,
) -> tuple[Version, list[Version]]:
    """Create a new version on the stamping replica ``actor`` and apply it to ``local``.

    Returns the new version and the key's new sibling set: ``local`` less what ``context``
    covers, plus the new version. The new dot's counter is one more than the largest counter of
    ``actor`` in ``local`` and ``context``, so it is unique for the key.
    """
    highest = 0
    for clock in (context, join(local)):
        entry = clock.get(actor)
        if entry is not None:
            highest = max(highest, entry[0])
    dot = Dot(actor, highest + 1)
    version = Version(dot, prune(context, actor, max_entries), value, timestamp)
    return version, [*discard(local, context), version]


def prune(context: Clock, actor: str, max_entries: int) -> dict[str, tuple[int, int]]:
    """``context`` less its oldest entries, so that with ``actor``'s dot it has ``max_entries``.

    Entries go oldest last-advanced time first (ties by actor name); ``actor``'s own never goes.
    """
    clock = dict(context)
    excess = len(clock.keys() | {actor}) - max_entries
    if excess > 0:
        oldest = sorted((ms, name) for name, (_, ms) in clock.items() if name != actor)
        for _, name in oldest[:excess]:
            del clock[name]
    return clock


# -- encoding ---------------------------------------------------------------------------------
#
# Versions travel between nodes and into the commit log as plain msgpack-able lists:
# ``[actor, counter, [[actor, counter, ms], ...], value | None, timestamp]``.


def encode_clock(clock: Clock) -> list[list[object]]:
    return [[actor, counter, ms] for actor, (counter, ms) in sorted(clock.items())]


def decode_clock(raw: object) -> dict[str, tuple[int, int]]:
    """Decode :func:`encode_clock`'s output. Raises ValueError when malformed."""
    if not isinstance(raw, list):
        raise ValueError("clock must be a list")
    clock: dict[str, tuple[int, int]] = {}
    for item in raw:
        if not (isinstance(item, list) and len(item) == 3):
            raise ValueError("clock entry must be [actor, counter, ms]")
        actor, counter, ms = item
        if not (isinstance(actor, str) and actor and _is_int(counter) and _is_int(ms)):
            raise ValueError("clock entry has wrong types")
        if counter < 1 or actor in clock:
            raise ValueError("clock entry counter must be positive and actors unique")
        clock[actor] = (counter, ms)
    return clock


def encode_versions(versions: Iterable[Version]) -> list[list[object]]:
    return [
        [v.dot.actor, v.dot.counter, encode_clock(v.context), v.value, v.timestamp]
        for v in versions
    ]


def decode_versions(raw: object) -> list[Version]:
    """Decode :func:`encode_versions`'s output. Raises ValueError when malformed."""
    if not isinstance(raw, list):
        raise ValueError("versions must be a list")
    versions = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 5):
            raise ValueError("version must be [actor, counter, context, value, timestamp]")
        actor, counter, context, value, timestamp = item
        if not (value is None or isinstance(value, bytes)) or not _is_int(timestamp):
            raise ValueError("version value must be bytes or nil, timestamp an integer")
        if not _is_int(counter):
            raise ValueError("version counter must be an integer")
        versions.append(Version(Dot(actor, counter), decode_clock(context), value, timestamp))
    return versions


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def context_token(clock: Clock) -> str:
    """The opaque causal-context token handed to clients (URL-safe base64)."""
    if not clock:
        return ""
    packed = msgpack.packb(encode_clock(clock), use_bin_type=True)
    return base64.urlsafe_b64encode(packed).rstrip(b"=").decode("ascii")


def parse_context_token(token: str) -> dict[str, tuple[int, int]]:
    """Decode a client's context token; the empty token is the empty context.

    Raises :class:`BadContext` for anything that is not a token this store produced, and for a
    token past the bounds (more than :data:`MAX_CONTEXT_ENTRIES` entries, a counter or time
    above :data:`MAX_COUNTER`).
    """
    token = token.strip()
    if not token:
        return {}
    try:
        packed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        clock = decode_clock(msgpack.unpackb(packed, raw=False))
    except (binascii.Error, ValueError, msgpack.UnpackException, TypeError) as exc:
        raise BadContext(f"malformed causal context token: {exc}") from None
    if len(clock) > MAX_CONTEXT_ENTRIES:
        raise BadContext(f"causal context of {len(clock)} entries; at most "
                         f"{MAX_CONTEXT_ENTRIES} are accepted")
    if any(counter > MAX_COUNTER or ms > MAX_COUNTER for counter, ms in clock.values()):
        raise BadContext(f"causal context out of bounds: counters and times must be at most "
                         f"{MAX_COUNTER}")
    return clock
