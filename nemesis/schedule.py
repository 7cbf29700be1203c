"""Fault schedules as data: ``schedule.json``, written by every run and replayed by
``kvcheck run --schedule FILE``.

A schedule is a list of :class:`Planned` faults, each with when it starts (``at``, seconds from
the start of the clients), how long it lasts (``duration``), its ``kind``, its ``targets`` (node
ids) and the kind's own parameters — the same parameters the history's ``start-<kind>`` event
carries, so a drawn fault and a written one are one thing. :func:`fault_of` turns a planned
fault into the actions that start and stop it. ``docs/nemesis.md`` documents the format:

``partition``
    ``components``: groups of nodes; the links between nodes of different groups are cut (a
    node in no group keeps its links). Or ``cut``: the directed links ``[src, dst]`` themselves
    (drawn topologies that are not groups, such as ``bridge``, record these). ``topology``
    names a drawn one.
``kill``, ``pause``
    none: the targets are killed (SIGKILL, restarted at the stop) or paused (SIGSTOP).
``clock``
    ``offset_ms``: each target's wall-clock offset (a bump, reset at the stop); or ``strobe``:
    ``{"delta_ms": D, "period_ms": P}``, the targets' clocks flip between +D and 0 every P ms.
``packet``
    any of ``delay_ms``, ``jitter_ms``, ``loss``, ``duplicate``, ``reorder`` (fractions) and
    ``rate_kbit``, for packets leaving the targets.
``membership``
    ``change``: ``join`` (the target, a spare node, joins through ``via`` and leaves at the
    stop) or ``leave`` (the target member leaves, and joins again through ``via`` at the stop).
``disk`` (simulator only)
    ``error``: ``write`` (every write fails, as on a full disk), ``read`` or ``fsync`` — the
    targets' disks fail so until the stop.
``power`` (simulator only)
    none: the targets lose power (what they had not synced may be lost) and start again at
    the stop.
``zone``
    a data center lost: the targets are every node of ``zone``; ``outage`` is ``network``
    (the links between the zone's nodes and every other node cut, as ``components``
    ``[[the zone's nodes], [the others]]`` says; the zone's nodes still talk among themselves)
    or ``power`` (the targets killed, as ``kill`` does, and restarted at the stop).

Two faults that cut links (a partition and a zone's network outage) may overlap: each heals
only its own cuts.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvcheck.nemesis.actions import (
    DISK_ERRORS,
    KINDS,
    ZONE_OUTAGES,
    Action,
    ClearPackets,
    CutLinks,
    CutPower,
    FailDisks,
    Fault,
    HealDisks,
    HealLinks,
    JoinNode,
    KillNodes,
    LeaveNode,
    NemesisError,
    PacketFault,
    PauseNodes,
    ResetClocks,
    RestartNodes,
    ResumeNodes,
    SetClocks,
    StrobeClocks,
)
from kvcheck.nemesis.topology import Link

SCHEDULE_FORMAT = "kvcheck-schedule"
SCHEDULE_VERSION = 1
PACKET_FIELDS = ("delay_ms", "jitter_ms", "loss", "duplicate", "reorder", "rate_kbit")


@dataclass(frozen=True, slots=True)
class Planned:
    """One fault of a schedule (module docstring). ``skipped`` says why a run did not apply
    it (a combination the nemesis cannot make); a schedule to replay has none."""

    at: float
    duration: float
    kind: str
    targets: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    skipped: str = ""

    @property
    def end(self) -> float:
        return self.at + self.duration

    def to_json(self) -> dict[str, Any]:
        out = {"at": round(self.at, 3), "duration": round(self.duration, 3), "kind": self.kind,
               "targets": list(self.targets), **self.params}
        if self.skipped:
            out["skipped"] = self.skipped
        return out


def planned_from_json(obj: Any, where: str) -> Planned:
    """A planned fault from its JSON object. Raises :class:`NemesisError` naming ``where`` and
    the field for anything malformed (the kind's parameters are checked by :func:`fault_of`)."""
    if not isinstance(obj, dict):
        raise NemesisError(f"{where}: a fault must be an object, not {obj!r}")
    fields = dict(obj)
    kind = fields.pop("kind", None)
    if kind not in KINDS:
        raise NemesisError(f"{where}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
    at, duration = fields.pop("at", None), fields.pop("duration", None)
    for name, value in (("at", at), ("duration", duration)):
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value) or value < 0:
            raise NemesisError(f"{where}: {name} must be a number of seconds >= 0, "
                               f"not {value!r}")
    targets = fields.pop("targets", None)
    if not (isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets)):
        raise NemesisError(f"{where}: targets must be a non-empty list of node ids")
    skipped = fields.pop("skipped", "")
    assert isinstance(at, int | float) and isinstance(duration, int | float)
    return Planned(float(at), float(duration), kind, tuple(targets), fields, str(skipped))


def fault_of(planned: Planned) -> Fault:
    """The fault ``planned`` describes: its start and stop actions. Raises
    :class:`NemesisError` when its parameters do not fit its kind."""
    build = _BUILDERS[planned.kind]
    try:
        start, stop = build(planned)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise NemesisError(f"a {planned.kind} fault at {planned.at:g} s has unusable "
                           f"parameters {dict(planned.params)}: {exc}") from None
    return Fault(planned.kind, planned.targets, start, stop, dict(planned.params))


_Actions = tuple[tuple[Action, ...], tuple[Action, ...]]


def _partition(p: Planned) -> _Actions:
    if "cut" in p.params:
        links = frozenset((str(a), str(b)) for a, b in p.params["cut"])
    else:
        links = cut_between(p.params["components"])
    if not links:
        raise ValueError("it cuts no link")
    return (CutLinks(links),), (HealLinks(links),)


def cut_between(components: Sequence[Sequence[str]]) -> frozenset[Link]:
    """Both directions of every link between nodes of different ``components``."""
    groups = [list(map(str, c)) for c in components]
    if len(groups) < 2:
        raise ValueError("a partition needs at least two components")
    return frozenset((a, b) for i, g in enumerate(groups) for h in groups[:i] + groups[i + 1:]
                     for a in g for b in h)


def _kill(p: Planned) -> _Actions:
    return (KillNodes(p.targets),), (RestartNodes(p.targets),)


def _pause(p: Planned) -> _Actions:
    return (PauseNodes(p.targets),), (ResumeNodes(p.targets),)


def _clock(p: Planned) -> _Actions:
    if "strobe" in p.params:
        strobe = p.params["strobe"]
        delta, period = float(strobe["delta_ms"]) / 1000, float(strobe["period_ms"]) / 1000
        if period <= 0:
            raise ValueError("period_ms must be > 0")
        return (StrobeClocks(p.targets, delta, period, p.duration),), (ResetClocks(),)
    offsets = {str(node): float(ms) / 1000 for node, ms in p.params["offset_ms"].items()}
    if set(offsets) != set(p.targets):
        raise ValueError("offset_ms must give an offset for each target, and no other")
    return (SetClocks(offsets),), (ResetClocks(),)


def _packet(p: Planned) -> _Actions:
    amounts = {name: p.params[name] for name in PACKET_FIELDS if name in p.params}
    fault = PacketFault(p.targets, **amounts)
    if not fault.effects:
        raise ValueError(f"it asks for no effect: give one of {', '.join(PACKET_FIELDS)}")
    return (fault,), (ClearPackets(),)


def _membership(p: Planned) -> _Actions:
    change, via = p.params["change"], str(p.params["via"])
    (node,) = p.targets
    if change == "join":
        return (JoinNode(node, via),), (LeaveNode(node),)
    if change == "leave":
        return (LeaveNode(node),), (JoinNode(node, via),)
    raise ValueError(f"change must be join or leave, not {change!r}")


def _disk(p: Planned) -> _Actions:
    error = p.params["error"]
    if error not in DISK_ERRORS:
        raise ValueError(f"error must be one of {', '.join(DISK_ERRORS)}, not {error!r}")
    return (FailDisks(p.targets, error),), (HealDisks(),)


def _power(p: Planned) -> _Actions:
    return (CutPower(p.targets),), (RestartNodes(p.targets),)


def _zone(p: Planned) -> _Actions:
    outage = p.params["outage"]
    if not isinstance(p.params.get("zone"), str) or not p.params["zone"]:
        raise ValueError("zone must name the zone lost")
    if outage == "power":
        return _kill(p)
    if outage != "network":
        raise ValueError(f"outage must be one of {', '.join(ZONE_OUTAGES)}, not {outage!r}")
    if "components" not in p.params:
        raise ValueError("a network outage needs components: [[the zone's nodes], "
                         "[every other node]]")
    if sorted(map(str, p.params["components"][0])) != sorted(p.targets):
        raise ValueError("the first of its components must be its targets, the zone's nodes")
    return _partition(p)


_BUILDERS = {"partition": _partition, "kill": _kill, "pause": _pause, "clock": _clock,
             "packet": _packet, "membership": _membership, "disk": _disk, "power": _power,
             "zone": _zone}


def read_schedule(path: Path) -> tuple[Planned, ...]:
    """The faults of a schedule file, sorted by start: the format, each fault's fields and
    parameters, and that faults of one kind do not overlap, checked (whether its nodes exist is
    :func:`check_nodes`'s business). Faults a recorded run skipped are left out. Raises
    :class:`NemesisError` naming the file and the fault."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise NemesisError(f"{path}: cannot read a schedule: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("faults"), list):
        raise NemesisError(f'{path}: a schedule is an object with a "faults" list')
    if doc.get("format", SCHEDULE_FORMAT) != SCHEDULE_FORMAT \
            or doc.get("version", SCHEDULE_VERSION) != SCHEDULE_VERSION:
        raise NemesisError(f"{path}: not a {SCHEDULE_FORMAT} version {SCHEDULE_VERSION} file")
    faults = []
    for i, obj in enumerate(doc["faults"]):
        where = f"{path}: fault {i + 1}"
        planned = planned_from_json(obj, where)
        if planned.skipped:
            continue  # a recorded run's skipped fault: nothing to replay
        try:
            fault_of(planned)
        except NemesisError as exc:
            raise NemesisError(f"{where}: {exc}") from None
        faults.append(planned)
    faults.sort(key=lambda f: f.at)
    for kind in KINDS:
        same = [f for f in faults if f.kind == kind]
        for a, b in itertools.pairwise(same):
            if b.at < a.end:
                raise NemesisError(f"{path}: two {kind} faults overlap ({a.at:g}-{a.end:g} s "
                                   f"and {b.at:g}-{b.end:g} s): faults of one kind take turns")
    return tuple(faults)


def check_nodes(faults: Sequence[Planned], nodes: Sequence[str], spare: str) -> None:
    """Raise :class:`NemesisError` for a fault that names a node that does not exist: one of
    ``nodes``, or ``spare`` for a membership join."""
    for planned in faults:
        known = (*nodes, spare) if planned.kind == "membership" else tuple(nodes)
        named = set(planned.targets) | _nodes_in(planned.params)
        if unknown := sorted(named - set(known)):
            raise NemesisError(f"the {planned.kind} fault at {planned.at:g} s names "
                               f"{', '.join(unknown)}, not a node of this test (its nodes are "
                               f"{', '.join(known)})")


def _nodes_in(params: Mapping[str, Any]) -> set[str]:
    """The node ids a fault's parameters name (components, cut links, offsets, via)."""
    named: set[str] = set()
    for group in params.get("components", ()):
        named.update(map(str, group))
    for link in params.get("cut", ()):
        named.update(map(str, link))
    named.update(map(str, params.get("offset_ms", {})))
    if "via" in params:
        named.add(str(params["via"]))
    return named


def write_schedule(path: Path, mode: str, faults: Sequence[Planned]) -> None:
    """Write ``schedule.json``: the faults a run applied (and those it skipped, with why), in
    the order they started."""
    doc = {"format": SCHEDULE_FORMAT, "version": SCHEDULE_VERSION, "mode": mode,
           "faults": [f.to_json() for f in sorted(faults, key=lambda f: f.at)]}
    path.write_text(json.dumps(doc, indent=1) + "\n")
