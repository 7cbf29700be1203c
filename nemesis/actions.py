"""What faults are made of: the actions a cluster backend executes, and :class:`Fault`, the
actions that start one fault and those that stop it.

Nothing here touches a node: a backend executes actions (:func:`kvcheck.harness.backend.execute`).
Faults are drawn by :class:`~kvcheck.nemesis.plan.Nemesis` or written in a schedule
(:mod:`kvcheck.nemesis.schedule`), which builds them from their data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kvcheck.nemesis.topology import Link

KINDS = ("partition", "kill", "pause", "clock", "packet", "membership", "disk", "power", "zone")
#: The kinds only the simulator can make, and why a real cluster's backend cannot.
SIMULATED_ONLY: Mapping[str, str] = {
    "disk": "a container's disk cannot be made to fail writes, reads or syncs on demand",
    "power": "a killed container's writes stay in the host's page cache: only a simulated "
             "device loses what was not synced",
}
#: How a disk fault makes the device fail: every write (a full disk), read, or sync.
DISK_ERRORS = ("write", "read", "fsync")
#: How a data center (a ``zone`` fault) is lost: its network cut off from the other zones, or
#: its power (every node of the zone killed).
ZONE_OUTAGES = ("network", "power")
#: The kinds that need the nodes spread over two zones or more.
NEEDS_ZONES = frozenset({"zone"})


# -- actions ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CutLinks:
    """Drop every packet from ``src`` to ``dst`` for each pair."""

    links: frozenset[Link]


@dataclass(frozen=True, slots=True)
class HealLinks:
    """Undo one :class:`CutLinks` of ``links``, or, with none given, every cut this nemesis
    made. A link cut by two faults that overlap stays cut until both heal it."""

    links: frozenset[Link] | None = None


@dataclass(frozen=True, slots=True)
class KillNodes:
    nodes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RestartNodes:
    """Start the nodes' killed processes again; with ``wait``, until they are ready and the
    cluster has settled (not while another fault may keep them from it)."""

    nodes: tuple[str, ...]
    wait: bool = True


@dataclass(frozen=True, slots=True)
class PauseNodes:
    nodes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ResumeNodes:
    nodes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SetClocks:
    """Set each node's wall-clock offset, in seconds (monotonic clocks stay true)."""

    offsets: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class StrobeClocks:
    """Flip the nodes' clocks between +``delta`` and 0 every ``period`` s for ``duration`` s."""

    nodes: tuple[str, ...]
    delta: float
    period: float
    duration: float


@dataclass(frozen=True, slots=True)
class ResetClocks:
    """Every node's offset back to zero."""


@dataclass(frozen=True, slots=True)
class PacketFault:
    """Degrade packets leaving ``nodes``. Each field set asks for one effect."""

    nodes: tuple[str, ...]
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    rate_kbit: int = 0

    @property
    def effects(self) -> frozenset[str]:
        names = {"delay": self.delay_ms, "loss": self.loss, "duplicate": self.duplicate,
                 "reorder": self.reorder, "rate": self.rate_kbit}
        return frozenset(name for name, amount in names.items() if amount)


@dataclass(frozen=True, slots=True)
class ClearPackets:
    """Remove every packet fault this nemesis added."""


@dataclass(frozen=True, slots=True)
class FailDisks:
    """Make the disks of ``nodes`` fail every operation of the ``error`` kind
    (:data:`DISK_ERRORS`)."""

    nodes: tuple[str, ...]
    error: str


@dataclass(frozen=True, slots=True)
class HealDisks:
    """Every disk works again; a node whose writes a failed sync stopped starts again on its
    data."""


@dataclass(frozen=True, slots=True)
class CutPower:
    """Cut the nodes' power: they stop, and their disks keep only what was synced (and what
    the kernel wrote back by itself). :class:`RestartNodes` brings them back."""

    nodes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class JoinNode:
    """Start ``node`` on an empty disk and have it join the cluster through member ``via``."""

    node: str
    via: str


@dataclass(frozen=True, slots=True)
class LeaveNode:
    """Decommission ``node``: wait until its data has moved and it has left, then stop it."""

    node: str


Action = (
    CutLinks | HealLinks | KillNodes | RestartNodes | PauseNodes | ResumeNodes | SetClocks
    | StrobeClocks | ResetClocks | PacketFault | ClearPackets | JoinNode | LeaveNode
    | FailDisks | HealDisks | CutPower
)


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault: ``start`` breaks, ``stop`` heals; ``detail`` goes into the history."""

    kind: str
    targets: tuple[str, ...]
    start: tuple[Action, ...]
    stop: tuple[Action, ...]
    detail: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"fault": self.kind, "targets": list(self.targets), **self.detail}


#: Actions that heal everything any fault can do: run at the end of every test.
HEAL_ALL: tuple[Action, ...] = (HealLinks(), ClearPackets(), ResetClocks(), HealDisks())


class NemesisError(ValueError):
    """A nemesis that cannot be built as asked (unknown kind, too few nodes, ...)."""


@dataclass(frozen=True, slots=True)
class PacketSupport:
    """Which packet effects a backend can produce, and why not the others."""

    effects: frozenset[str]
    missing_reason: str = ""
