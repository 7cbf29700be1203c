"""The interface every cluster backend offers, and how nemesis plans run on it.

A backend owns the nodes of one run of one database: it starts the database's processes on
them, is the database's view of the cluster (:class:`~kvcheck.harness.databases.Cluster`: where
each node is, which are down), and breaks and heals them when the nemesis says so. Lifecycle as
in Jepsen: ``setup`` / use / ``teardown``; ``teardown`` must leave nothing behind, whatever
happened before it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import trio

from kvcheck.harness.databases import Cluster, Database
from kvcheck.nemesis import (
    Action,
    ClearPackets,
    CutLinks,
    CutPower,
    FailDisks,
    HealDisks,
    HealLinks,
    JoinNode,
    KillNodes,
    LeaveNode,
    PacketFault,
    PacketSupport,
    PauseNodes,
    ResetClocks,
    RestartNodes,
    ResumeNodes,
    SetClocks,
    StrobeClocks,
)
from kvcheck.nemesis.topology import Link


class BackendError(Exception):
    """The backend could not do what was asked (the message says what to do about it)."""


class Backend(Cluster, Protocol):
    #: The initial nodes (members also counts those that joined since).
    nodes: list[str]
    database: Database
    #: What the run could not do as asked, in a sentence each: ``test.json`` keeps them.
    notes: list[str]

    async def setup(self) -> None:
        """Create and start every node; return when each is ready and the cluster settled."""
        ...

    async def teardown(self) -> None:
        """Remove everything ``setup`` and the faults created. Safe to call more than once."""
        ...

    async def kill(self, node: str) -> None: ...

    async def restart(self, node: str) -> None:
        """Start a killed node's processes again on its data."""
        ...

    async def wait_ready(self, nodes: Sequence[str]) -> None:
        """Return once each node is ready and the cluster has settled (as the database says)."""
        ...

    async def pause(self, node: str) -> None: ...
    async def resume(self, node: str) -> None: ...

    async def cut(self, links: frozenset[Link]) -> None:
        """Drop every packet from ``src`` to ``dst`` for each pair, silently."""
        ...

    async def heal(self, links: frozenset[Link] | None = None) -> None:
        """Undo one :meth:`cut` of ``links`` (a link two cuts dropped stays cut until both
        are undone), or every cut (``None``)."""
        ...

    async def set_clock(self, offsets: Mapping[str, float]) -> None:
        """Set wall-clock offsets in seconds (nodes not named keep theirs)."""
        ...

    def packet_support(self) -> PacketSupport: ...

    async def packet_fault(self, fault: PacketFault) -> None: ...

    async def clear_packets(self) -> None: ...

    async def join(self, node: str, via: str) -> None:
        """Start ``node`` on an empty disk, joining the cluster through member ``via``;
        return once it is ready."""
        ...

    async def leave(self, node: str) -> None:
        """Decommission ``node`` as the database does, then stop its processes."""
        ...

    async def fail_disks(self, nodes: Sequence[str], error: str) -> None:
        """Make the nodes' disks fail every ``error`` operation (simulator only)."""
        ...

    async def heal_disks(self) -> None:
        """Every disk works again; nodes a failed sync stopped start again on their data."""
        ...

    async def cut_power(self, node: str) -> None:
        """Stop the node as a power loss does: what it had not synced may be lost (simulator
        only). :meth:`restart` brings it back."""
        ...

    async def crashed(self) -> list[str]:
        """The nodes with a process that exited by itself (not stopped by a fault or a
        leave)."""
        ...


async def execute(backend: Backend, action: Action) -> None:
    """Carry out one nemesis action. A strobe runs for its whole duration."""
    match action:
        case CutLinks(links):
            await backend.cut(links)
        case HealLinks(links):
            await backend.heal(links)
        case KillNodes(nodes):
            for node in nodes:
                await backend.kill(node)
        case RestartNodes(nodes, wait):
            for node in nodes:
                await backend.restart(node)
            if wait:
                await backend.wait_ready(nodes)
        case PauseNodes(nodes):
            for node in nodes:
                await backend.pause(node)
        case ResumeNodes(nodes):
            for node in nodes:
                await backend.resume(node)
        case SetClocks(offsets):
            await backend.set_clock(offsets)
        case StrobeClocks(nodes, delta, period, duration):
            deadline = trio.current_time() + duration
            ahead = False
            while trio.current_time() < deadline:
                ahead = not ahead
                await backend.set_clock(dict.fromkeys(nodes, delta if ahead else 0.0))
                await trio.sleep(period)
        case ResetClocks():
            await backend.set_clock(dict.fromkeys(backend.nodes, 0.0))
        case PacketFault():
            await backend.packet_fault(action)
        case ClearPackets():
            await backend.clear_packets()
        case JoinNode(node, via):
            await backend.join(node, via)
        case LeaveNode(node):
            await backend.leave(node)
        case FailDisks(nodes, error):
            await backend.fail_disks(nodes, error)
        case HealDisks():
            await backend.heal_disks()
        case CutPower(nodes):
            for node in nodes:
                await backend.cut_power(node)
