"""The ids a node mints for what it puts on the wire, typed by what they name.

A node names five kinds of thing in its messages: the client requests it coordinates (the stamp,
replicate and read messages it sends for one carry that request's id), the handoffs of hinted
writes, indirect probes, anti-entropy sessions and the pulls of a join or leave. A reply carries
the id it answers and nothing else (the wire format is fixed: ids are ints), so the kind must be
recoverable from the id itself. One sequence is shared by all kinds and the kind sits in the low
bits::

    id = sequence * KINDS + kind        kind_of(id) == Kind(id % KINDS)

so ids are unique across kinds, and a reply (or a timer) is routed by the kind of its id to the
part of the node that owns that kind, which looks the id up in its own table. An id that table
does not hold (finished, forgotten, or never minted here) is late, and counted as such. Nothing
is kept per id outside the owner's table, so nothing leaks when an owner forgets one.

Id 0 (:data:`REPAIR_REQUEST`) has no kind: a repair write carries it, and nobody awaits its
acknowledgement. Ids received from peers (the requests a replica answers, a peer's sessions)
are only echoed back, never interpreted.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NewType

RequestId = NewType("RequestId", int)
HandoffId = NewType("HandoffId", int)
ProbeId = NewType("ProbeId", int)
SessionId = NewType("SessionId", int)
PullId = NewType("PullId", int)

#: The request id of repair writes (read repair, anti-entropy, late stamps): nobody awaits
#: their acknowledgement.
REPAIR_REQUEST = 0


class Kind(IntEnum):
    """What an id names, and so which part of the node owns it."""

    REQUEST = 1  # a client request this node coordinates
    HANDOFF = 2  # a hinted write handed off to its owner
    PROBE = 3  # an indirect probe: asked of a helper, or sent for another node
    SESSION = 4  # an anti-entropy session this node opened
    PULL = 5  # a pull of keys from one source in a join or leave


#: Room for the kinds in an id's low bits.
KINDS = 8


def kind_of(id: int) -> Kind | None:
    """The kind ``id`` was minted as; None for :data:`REPAIR_REQUEST` and for an id that no
    node mints (a peer's bug: whoever routes it treats it as late)."""
    if id <= 0:
        return None
    try:
        return Kind(id % KINDS)
    except ValueError:
        return None


class Ids:
    """One node's id minter: one sequence for every kind (see the module docstring)."""

    def __init__(self) -> None:
        self._sequence = 0

    def request(self) -> RequestId:
        return RequestId(self._mint(Kind.REQUEST))

    def handoff(self) -> HandoffId:
        return HandoffId(self._mint(Kind.HANDOFF))

    def probe(self) -> ProbeId:
        return ProbeId(self._mint(Kind.PROBE))

    def session(self) -> SessionId:
        return SessionId(self._mint(Kind.SESSION))

    def pull(self) -> PullId:
        return PullId(self._mint(Kind.PULL))

    def _mint(self, kind: Kind) -> int:
        self._sequence += 1
        return self._sequence * KINDS + kind
