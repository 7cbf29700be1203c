"""Faults: what to break, when, and how to heal it — as data (:mod:`.schedule`), drawn at random
(:mod:`.plan`) or written by hand, made into actions (:mod:`.actions`) that cluster backends
execute."""

from kvcheck.nemesis.actions import (
    HEAL_ALL,
    KINDS,
    Action,
    ClearPackets,
    CutLinks,
    Fault,
    HealLinks,
    JoinNode,
    KillNodes,
    LeaveNode,
    NemesisError,
    PacketFault,
    PacketSupport,
    PauseNodes,
    ResetClocks,
    RestartNodes,
    ResumeNodes,
    SetClocks,
    StrobeClocks,
)
from kvcheck.nemesis.plan import Nemesis, parse_kinds, usable_topologies
from kvcheck.nemesis.schedule import (
    Planned,
    check_nodes,
    fault_of,
    planned_from_json,
    read_schedule,
    write_schedule,
)
from kvcheck.nemesis.topology import TOPOLOGIES, Link, Partition

__all__ = [
    "HEAL_ALL",
    "KINDS",
    "TOPOLOGIES",
    "Action",
    "ClearPackets",
    "CutLinks",
    "Fault",
    "HealLinks",
    "JoinNode",
    "KillNodes",
    "LeaveNode",
    "Link",
    "Nemesis",
    "NemesisError",
    "PacketFault",
    "PacketSupport",
    "Partition",
    "PauseNodes",
    "Planned",
    "ResetClocks",
    "RestartNodes",
    "ResumeNodes",
    "SetClocks",
    "StrobeClocks",
    "check_nodes",
    "fault_of",
    "parse_kinds",
    "planned_from_json",
    "read_schedule",
    "usable_topologies",
    "write_schedule",
]
