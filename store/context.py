"""What the parts of one node share (see :mod:`kvcheck.store.node`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from kvcheck.store.config import ClusterConfig
from kvcheck.store.ids import Ids
from kvcheck.store.membership import Membership
from kvcheck.store.placement import Placement


@dataclass(slots=True)
class Context:
    """Who the node is, the cluster's settings, the layout it uses, its view of the members, the
    figures it counts for ``/status`` and its id minter.

    The node alone replaces :attr:`placement` (when it adopts a new layout); the parts read it
    afresh at every event and never keep a copy.
    """

    node_id: str
    cluster: ClusterConfig
    placement: Placement
    membership: Membership
    counters: Counter[str] = field(default_factory=Counter)
    ids: Ids = field(default_factory=Ids)
