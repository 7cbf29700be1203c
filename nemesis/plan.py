"""Faults as plans: what to break, on which nodes, and how to heal it.

A :class:`Fault` is data: the actions that start it, the actions that stop it, and a description
for the history. A cluster backend executes actions; nothing here touches a node. The
:class:`Nemesis` draws faults of the kinds a test asked for, from a seeded random generator, so
the same seed draws the same faults.

Kinds (``docs/nemesis.md`` says how each is done and what it proves):

- ``partition``: cut links along a topology (:mod:`kvcheck.nemesis.topology`), heal them all;
  the topologies drawn from can be restricted, and include ``isolate-primary`` where the
  database can name its primary (the caller passes it in: the plan itself stays pure);
- ``kill``: SIGKILL the store on a minority of nodes, start it again on the same data;
- ``pause``: SIGSTOP a minority, SIGCONT them;
- ``clock``: move wall clocks by milliseconds to minutes (bump) or back and forth (strobe),
  then reset them;
- ``packet``: delay, lose, duplicate or reorder packets — each only where the backend can;
- ``membership``: a spare node joins the cluster and leaves it again at the stop, or a member
  leaves (decommissions) and joins again, on an empty disk, at the stop — so data moves between
  nodes while clients run. Shrinking needs more members than replicas per key.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kvcheck.nemesis.topology import MIN_NODES, PRIMARY_TOPOLOGIES, TOPOLOGIES, Link

KINDS = ("partition", "kill", "pause", "clock", "packet", "membership")


# -- actions ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CutLinks:
    """Drop every packet from ``src`` to ``dst`` for each pair."""

    links: frozenset[Link]


@dataclass(frozen=True, slots=True)
class HealLinks:
    """Remove every cut this nemesis made."""


@dataclass(frozen=True, slots=True)
class KillNodes:
    nodes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RestartNodes:
    nodes: tuple[str, ...]


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
HEAL_ALL: tuple[Action, ...] = (HealLinks(), ClearPackets(), ResetClocks())


# -- the nemesis ------------------------------------------------------------------------------


class NemesisError(ValueError):
    """A nemesis that cannot be built as asked (unknown kind, too few nodes, ...)."""


def parse_kinds(text: str) -> tuple[str, ...]:
    """``"partition,kill"`` -> ``("partition", "kill")``; ``"none"`` or ``""`` -> ``()``.

    Raises :class:`NemesisError` naming any unknown kind.
    """
    kinds = tuple(k.strip() for k in text.split(",") if k.strip() and k.strip() != "none")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise NemesisError(f"unknown nemesis kind(s) {', '.join(unknown)}; "
                           f"known: {', '.join(KINDS)} (or none)")
    return tuple(dict.fromkeys(kinds))


@dataclass(frozen=True, slots=True)
class PacketSupport:
    """Which packet effects a backend can produce, and why not the others."""

    effects: frozenset[str]
    missing_reason: str = ""


class Nemesis:
    """Draws faults of ``kinds`` for ``nodes``, round-robin over the kinds.

    ``hold`` is how long a fault lasts (strobes use it as their duration). ``spare`` names a
    node that is not a member, for membership faults to add; ``replicas`` is N, which a
    membership fault never takes the cluster below. ``topologies`` restricts the partitions
    drawn (by default every one these nodes allow, with ``isolate-primary`` where
    ``primaries``: the database can name its primary). Raises :class:`NemesisError` when a
    kind or a topology cannot work with these nodes.
    """

    def __init__(self, kinds: Sequence[str], nodes: Sequence[str], rng: random.Random,
                 hold: float, packets: PacketSupport | None = None, *, spare: str = "",
                 replicas: int = 3, topologies: Sequence[str] = (),
                 primaries: bool = False) -> None:
        self.kinds = tuple(kinds)
        self.nodes = list(nodes)
        self.rng = rng
        self.hold = hold
        self.packets = packets or PacketSupport(frozenset())
        self.spare = spare
        self.replicas = replicas
        self.topologies = usable_topologies(len(self.nodes), topologies, primaries)
        self._turn = 0
        if "membership" in self.kinds and not spare and len(self.nodes) <= replicas:
            raise NemesisError("the membership nemesis needs a spare node to add, or more "
                               "nodes than replicas per key to remove one")
        if "packet" in self.kinds and not self.packets.effects:
            raise NemesisError("the packet nemesis can do nothing on this backend: "
                               + (self.packets.missing_reason or "no packet effects available"))
        if len(self.nodes) < 2 and set(self.kinds) & {"partition", "packet"}:
            raise NemesisError("partition and packet faults need at least 2 nodes")

    @property
    def wants_primary(self) -> bool:
        """Whether the next fault may be built around the current primary: pass it to
        :meth:`next_fault`."""
        return (self.kinds[self._turn % len(self.kinds)] == "partition"
                and any(t in PRIMARY_TOPOLOGIES for t in self.topologies))

    def next_fault(self, primary: str | None = None) -> Fault:
        """The next fault. ``primary``: the node that leads now, if known (a partition that
        would isolate it isolates one random node instead when it is not, and says so)."""
        kind = self.kinds[self._turn % len(self.kinds)]
        self._turn += 1
        if kind == "partition":
            return self._partition(primary)
        draw: Callable[[], Fault] = getattr(self, "_" + kind)
        return draw()

    def _membership(self) -> Fault:
        shrink = len(self.nodes) > self.replicas and (not self.spare or self.rng.random() < 0.5)
        if shrink:
            node = self.rng.choice(self.nodes)
            via = self.rng.choice([n for n in self.nodes if n != node])
            return Fault("membership", (node,), (LeaveNode(node),), (JoinNode(node, via),),
                         {"change": "leave, then join again"})
        via = self.rng.choice(self.nodes)
        return Fault("membership", (self.spare,), (JoinNode(self.spare, via),),
                     (LeaveNode(self.spare),), {"change": "join, then leave", "via": via})

    def _minority(self) -> tuple[str, ...]:
        size = self.rng.randint(1, max(1, (len(self.nodes) - 1) // 2))
        return tuple(sorted(self.rng.sample(self.nodes, size)))

    def _partition(self, primary: str | None) -> Fault:
        name = self.rng.choice(self.topologies)
        detail: dict[str, Any] = {}
        if name in PRIMARY_TOPOLOGIES:
            if primary in self.nodes:
                partition = PRIMARY_TOPOLOGIES[name](self.nodes, self.rng, primary)
                detail["primary"] = primary
            else:
                partition = TOPOLOGIES["isolate-one"](self.nodes, self.rng)
                detail["instead_of"] = f"{name}: no primary was known"
        else:
            partition = TOPOLOGIES[name](self.nodes, self.rng)
        involved = tuple(sorted({a for a, _ in partition.cut}))
        return Fault("partition", involved, (CutLinks(partition.cut),), (HealLinks(),),
                     {**partition.describe(), **detail})

    def _kill(self) -> Fault:
        nodes = self._minority()
        return Fault("kill", nodes, (KillNodes(nodes),), (RestartNodes(nodes),))

    def _pause(self) -> Fault:
        nodes = self._minority()
        return Fault("pause", nodes, (PauseNodes(nodes),), (ResumeNodes(nodes),))

    def _clock(self) -> Fault:
        nodes = self._minority()
        if self.rng.random() < 0.5:
            offsets = {node: self._skew() for node in nodes}
            return Fault("clock", nodes, (SetClocks(offsets),), (ResetClocks(),),
                         {"mode": "bump", "offsets": offsets})
        delta = abs(self._skew())
        period = self.rng.uniform(0.01, 0.2)
        strobe = StrobeClocks(nodes, delta, period, self.hold)
        return Fault("clock", nodes, (strobe,), (ResetClocks(),),
                     {"mode": "strobe", "delta": delta, "period": period})

    def _skew(self) -> float:
        """A wall-clock offset from 10 ms to 2 minutes, log-uniform, either sign."""
        magnitude = math.exp(self.rng.uniform(math.log(0.01), math.log(120)))
        return round(magnitude if self.rng.random() < 0.5 else -magnitude, 3)

    def _packet(self) -> Fault:
        nodes = self._minority()
        effect = self.rng.choice(sorted(self.packets.effects))
        fault = {
            "delay": lambda: PacketFault(nodes, delay_ms=self.rng.uniform(50, 500),
                                         jitter_ms=self.rng.uniform(0, 50)),
            "loss": lambda: PacketFault(nodes, loss=round(self.rng.uniform(0.1, 0.5), 3)),
            "duplicate": lambda: PacketFault(nodes, duplicate=round(self.rng.uniform(0.1, 0.5), 3)),
            "reorder": lambda: PacketFault(nodes, delay_ms=50, reorder=round(
                self.rng.uniform(0.1, 0.5), 3)),
            "rate": lambda: PacketFault(nodes, rate_kbit=self.rng.choice([64, 256, 1024])),
        }[effect]()
        detail = {"effect": effect, **{k: v for k, v in _packet_detail(fault).items() if v}}
        return Fault("packet", nodes, (fault,), (ClearPackets(),), detail)


def usable_topologies(nodes: int, wanted: Sequence[str] = (),
                      primaries: bool = False) -> tuple[str, ...]:
    """The partition topologies a nemesis draws from: ``wanted`` (every one these ``nodes``
    allow if empty, ``isolate-primary`` only where the database names its ``primaries``).

    Raises :class:`NemesisError` for an unknown topology, one that needs more nodes, or one
    built around a primary the database cannot name.
    """
    known = (*TOPOLOGIES, *PRIMARY_TOPOLOGIES)
    unknown = [t for t in wanted if t not in known]
    if unknown:
        raise NemesisError(f"unknown partition topology {', '.join(unknown)}; known: "
                           f"{', '.join(known)}")
    if not primaries and (needing := [t for t in wanted if t in PRIMARY_TOPOLOGIES]):
        raise NemesisError(f"the {', '.join(needing)} topology needs a database that names "
                           "its primary, which this one cannot")
    small = [t for t in wanted if nodes < MIN_NODES.get(t, 2)]
    if small:
        raise NemesisError(", ".join(f"the {t} topology needs at least {MIN_NODES.get(t, 2)} "
                                     "nodes" for t in small))
    if wanted:
        return tuple(dict.fromkeys(wanted))
    return tuple(t for t in known if nodes >= MIN_NODES.get(t, 2)
                 and (primaries or t not in PRIMARY_TOPOLOGIES))


def _packet_detail(fault: PacketFault) -> dict[str, Any]:
    return {"delay_ms": round(fault.delay_ms, 1), "jitter_ms": round(fault.jitter_ms, 1),
            "loss": fault.loss, "duplicate": fault.duplicate, "reorder": fault.reorder,
            "rate_kbit": fault.rate_kbit}
