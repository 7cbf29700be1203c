"""Drawing faults: the :class:`Nemesis` draws faults of the kinds a test asked for, from seeded
random generators (one per kind), so the same seed draws the same faults, whatever the order in
which overlapping kinds draw them. A drawn fault is its data (kind, targets, parameters:
:class:`~kvcheck.nemesis.schedule.Planned`) made into actions by
:func:`~kvcheck.nemesis.schedule.fault_of`, exactly as a fault written in a schedule is.

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
  nodes while clients run. Shrinking needs more members than replicas per key;
- ``disk`` (simulator only): a minority's disks fail every write, read or sync until the stop;
- ``power`` (simulator only): a minority, or half the time every node, loses power — a rack
  or a data center going dark — and starts again at the stop;
- ``zone``: a data center lost — a zone drawn, every node of it cut off from the other zones
  (``network``) or killed and restarted at the stop (``power``); the outage drawn too unless
  fixed. Needs the nodes spread over two zones or more.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kvcheck.nemesis.actions import (
    DISK_ERRORS,
    KINDS,
    ZONE_OUTAGES,
    Fault,
    NemesisError,
    PacketSupport,
)
from kvcheck.nemesis.schedule import PACKET_FIELDS, Planned, fault_of
from kvcheck.nemesis.topology import MIN_NODES, PRIMARY_TOPOLOGIES, TOPOLOGIES


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


class Nemesis:
    """Draws faults of ``kinds`` for ``nodes``: of a kind asked for (:meth:`draw`), or of each
    kind in turn (:meth:`next_fault`).

    ``hold`` is how long a fault lasts (strobes use it as their duration). ``spare`` names a
    node that is not a member, for membership faults to add; ``replicas`` is N, which a
    membership fault never takes the cluster below. ``topologies`` restricts the partitions
    drawn (by default every one these nodes allow, with ``isolate-primary`` where
    ``primaries``: the database can name its primary). ``zones`` maps each node to its zone
    (zone faults draw one of them); ``outage`` fixes how a zone is lost (``network`` or
    ``power``; empty: drawn). Raises :class:`NemesisError` when a kind or a topology cannot
    work with these nodes.
    """

    def __init__(self, kinds: Sequence[str], nodes: Sequence[str], rng: random.Random,
                 hold: float, packets: PacketSupport | None = None, *, spare: str = "",
                 replicas: int = 3, topologies: Sequence[str] = (),
                 primaries: bool = False, zones: Mapping[str, str] | None = None,
                 outage: str = "") -> None:
        self.kinds = tuple(kinds)
        self.nodes = list(nodes)
        self.rngs = {kind: random.Random(rng.randrange(2**32)) for kind in self.kinds}
        self.hold = hold
        self.packets = packets or PacketSupport(frozenset())
        self.spare = spare
        self.replicas = replicas
        self.topologies = usable_topologies(len(self.nodes), topologies, primaries)
        self.zones = {node: (zones or {}).get(node, "") for node in self.nodes}
        self.outage = outage
        self._turn = 0
        if "zone" in self.kinds and len(set(self.zones.values())) < 2:
            raise NemesisError("the zone nemesis needs the nodes spread over two zones or more")
        if outage and outage not in ZONE_OUTAGES:
            raise NemesisError(f"a zone outage is one of {', '.join(ZONE_OUTAGES)}, "
                               f"not {outage!r}")
        if "membership" in self.kinds and not spare and len(self.nodes) <= replicas:
            raise NemesisError("the membership nemesis needs a spare node to add, or more "
                               "nodes than replicas per key to remove one")
        if "packet" in self.kinds and not self.packets.effects:
            raise NemesisError("the packet nemesis can do nothing on this backend: "
                               + (self.packets.missing_reason or "no packet effects available"))
        if len(self.nodes) < 2 and set(self.kinds) & {"partition", "packet"}:
            raise NemesisError("partition and packet faults need at least 2 nodes")

    def wants_primary(self, kind: str) -> bool:
        """Whether a fault of ``kind`` may be built around the current primary: pass it to
        :meth:`draw`."""
        return kind == "partition" and any(t in PRIMARY_TOPOLOGIES for t in self.topologies)

    @property
    def next_kind(self) -> str:
        """The kind :meth:`next_fault` draws next."""
        return self.kinds[self._turn % len(self.kinds)]

    def next_fault(self, primary: str | None = None) -> Fault:
        """A fault of the next kind in turn (see :meth:`draw`)."""
        kind = self.next_kind
        self._turn += 1
        return self.draw(kind, primary)

    def draw(self, kind: str, primary: str | None = None) -> Fault:
        """A fault of ``kind``, lasting ``hold``. ``primary``: the node that leads now, if
        known (a partition that would isolate it isolates one random node instead when it is
        not, and says so)."""
        rng = self.rngs[kind]
        if kind == "partition":
            targets, params = self._partition(rng, primary)
        else:
            draw: Callable[[random.Random], tuple[tuple[str, ...], dict[str, Any]]] = getattr(
                self, "_" + kind)
            targets, params = draw(rng)
        return fault_of(Planned(0.0, self.hold, kind, targets, params))

    def _membership(self, rng: random.Random) -> tuple[tuple[str, ...], dict[str, Any]]:
        shrink = len(self.nodes) > self.replicas and (not self.spare or rng.random() < 0.5)
        if shrink:
            node = rng.choice(self.nodes)
            via = rng.choice([n for n in self.nodes if n != node])
            return (node,), {"change": "leave", "via": via}
        return (self.spare,), {"change": "join", "via": rng.choice(self.nodes)}

    def _minority(self, rng: random.Random) -> tuple[str, ...]:
        size = rng.randint(1, max(1, (len(self.nodes) - 1) // 2))
        return tuple(sorted(rng.sample(self.nodes, size)))

    def _partition(self, rng: random.Random, primary: str | None
                   ) -> tuple[tuple[str, ...], dict[str, Any]]:
        name = rng.choice(self.topologies)
        detail: dict[str, Any] = {}
        if name in PRIMARY_TOPOLOGIES:
            if primary in self.nodes:
                partition = PRIMARY_TOPOLOGIES[name](self.nodes, rng, primary)
                detail["primary"] = primary
            else:
                partition = TOPOLOGIES["isolate-one"](self.nodes, rng)
                detail["instead_of"] = f"{name}: no primary was known"
        else:
            partition = TOPOLOGIES[name](self.nodes, rng)
        involved = tuple(sorted({a for a, _ in partition.cut}))
        return involved, {**partition.describe(), **detail}

    def _kill(self, rng: random.Random) -> tuple[tuple[str, ...], dict[str, Any]]:
        return self._minority(rng), {}

    def _zone(self, rng: random.Random) -> tuple[tuple[str, ...], dict[str, Any]]:
        zone = rng.choice(sorted(set(self.zones.values())))
        outage = self.outage or rng.choice(ZONE_OUTAGES)
        lost = tuple(n for n in self.nodes if self.zones[n] == zone)
        params: dict[str, Any] = {"zone": zone, "outage": outage}
        if outage == "network":
            params["components"] = [list(lost), [n for n in self.nodes if n not in lost]]
        return lost, params

    def _disk(self, rng: random.Random) -> tuple[tuple[str, ...], dict[str, Any]]:
        return self._minority(rng), {"error": rng.choice(DISK_ERRORS)}

    def _power(self, rng: random.Random) -> tuple[tuple[str, ...], dict[str, Any]]:
        return (tuple(self.nodes) if rng.random() < 0.5 else self._minority(rng)), {}

    def _pause(self, rng: random.Random) -> tuple[tuple[str, ...], dict[str, Any]]:
        return self._minority(rng), {}

    def _clock(self, rng: random.Random) -> tuple[tuple[str, ...], dict[str, Any]]:
        nodes = self._minority(rng)
        if rng.random() < 0.5:
            return nodes, {"mode": "bump",
                           "offset_ms": {node: _skew_ms(rng) for node in nodes}}
        delta = abs(_skew_ms(rng))
        period = round(rng.uniform(10, 200), 1)
        return nodes, {"mode": "strobe", "strobe": {"delta_ms": delta, "period_ms": period}}

    def _packet(self, rng: random.Random) -> tuple[tuple[str, ...], dict[str, Any]]:
        nodes = self._minority(rng)
        effect = rng.choice(sorted(self.packets.effects))
        draws: dict[str, Callable[[], dict[str, float]]] = {
            "delay": lambda: {"delay_ms": round(rng.uniform(50, 500), 1),
                              "jitter_ms": round(rng.uniform(0, 50), 1)},
            "loss": lambda: {"loss": round(rng.uniform(0.1, 0.5), 3)},
            "duplicate": lambda: {"duplicate": round(rng.uniform(0.1, 0.5), 3)},
            "reorder": lambda: {"delay_ms": 50, "reorder": round(rng.uniform(0.1, 0.5), 3)},
            "rate": lambda: {"rate_kbit": rng.choice([64, 256, 1024])},
        }
        amounts = draws[effect]()
        assert set(amounts) <= set(PACKET_FIELDS)
        return nodes, {"effect": effect, **amounts}


def _skew_ms(rng: random.Random) -> float:
    """A wall-clock offset from 10 ms to 2 minutes, in ms, log-uniform, either sign."""
    magnitude = math.exp(rng.uniform(math.log(10), math.log(120_000)))
    return round(magnitude if rng.random() < 0.5 else -magnitude)


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
