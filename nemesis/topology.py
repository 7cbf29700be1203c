"""Network partitions as graphs: who can still hear whom.

A topology is an undirected graph on the nodes (networkx): an edge means the two nodes can talk.
The links to cut are the complement's edges, in both directions. Each topology is a function
``(nodes, rng) -> Partition`` — or, for those built around the current primary,
``(nodes, rng, primary) -> Partition``; the names are those of Jepsen's partition nemeses.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import networkx as nx

Link = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Partition:
    """A topology applied to a set of nodes."""

    name: str
    graph: nx.Graph[str]

    @property
    def cut(self) -> frozenset[Link]:
        """Directed pairs ``(src, dst)`` whose packets are dropped: both ways of every non-edge."""
        missing = nx.complement(self.graph).edges
        return frozenset({(a, b) for a, b in missing} | {(b, a) for a, b in missing})

    @property
    def components(self) -> list[list[str]]:
        """Groups of nodes that can reach each other (possibly through others), sorted."""
        return sorted(sorted(c) for c in nx.connected_components(self.graph))

    def describe(self) -> dict[str, object]:
        return {
            "topology": self.name,
            "components": self.components,
            "cut": sorted([a, b] for a, b in self.cut),
        }


def _graph(nodes: Sequence[str], groups: Sequence[Sequence[str]]) -> nx.Graph[str]:
    graph: nx.Graph[str] = nx.Graph()
    graph.add_nodes_from(nodes)
    for group in groups:
        graph.add_edges_from((a, b) for i, a in enumerate(group) for b in group[i + 1:])
    return graph


def halves(nodes: Sequence[str], rng: random.Random) -> Partition:
    """The first half of the nodes (in the order given) against the rest (the bigger half)."""
    cut = len(nodes) // 2
    return Partition("halves", _graph(nodes, [nodes[:cut], nodes[cut:]]))


def random_halves(nodes: Sequence[str], rng: random.Random) -> Partition:
    """Like :func:`halves`, on a random shuffle of the nodes."""
    shuffled = list(nodes)
    rng.shuffle(shuffled)
    return Partition("random-halves", halves(shuffled, rng).graph)


def isolate_one(nodes: Sequence[str], rng: random.Random) -> Partition:
    """One random node can talk to nobody; the others talk freely."""
    lonely = rng.choice(list(nodes))
    return Partition("isolate-one", _graph(nodes, [[n for n in nodes if n != lonely]]))


def majorities_ring(nodes: Sequence[str], rng: random.Random) -> Partition:
    """Every node sees a majority (itself and its nearest ring neighbours), but no two nodes see
    the same majority: each believes it is in the majority. Needs at least 4 nodes (with 3,
    symmetric links would leave everyone seeing everyone)."""
    if len(nodes) < 4:
        raise ValueError("a majorities ring needs at least 4 nodes")
    ring = list(nodes)
    rng.shuffle(ring)
    reach = (len(ring) // 2 + 1) // 2  # neighbours on each side, so that 2*reach+1 > n/2
    graph: nx.Graph[str] = nx.Graph()
    graph.add_nodes_from(ring)
    for i, node in enumerate(ring):
        for step in range(1, reach + 1):
            graph.add_edge(node, ring[(i + step) % len(ring)])
    return Partition("majorities-ring", graph)


def bridge(nodes: Sequence[str], rng: random.Random) -> Partition:
    """Two halves that cannot talk, except through one bridge node that hears both.
    Needs at least 3 nodes."""
    if len(nodes) < 3:
        raise ValueError("a bridge needs at least 3 nodes")
    shuffled = list(nodes)
    rng.shuffle(shuffled)
    middle = len(shuffled) // 2
    left, hub, right = shuffled[:middle], shuffled[middle], shuffled[middle + 1:]
    return Partition("bridge", _graph(nodes, [[*left, hub], [hub, *right]]))


def isolate_primary(nodes: Sequence[str], rng: random.Random, primary: str) -> Partition:
    """The primary (a leader, or a replication primary), alone or with a random minority of
    the others, cut off from the rest: the majority side can elect or promote a new one while
    the old one may still serve the clients on its side."""
    others = [n for n in nodes if n != primary]
    companions = rng.sample(others, rng.randint(0, max(0, (len(nodes) - 1) // 2 - 1)))
    side = [primary, *companions]
    return Partition("isolate-primary",
                     _graph(nodes, [side, [n for n in nodes if n not in side]]))


TOPOLOGIES: dict[str, Callable[[Sequence[str], random.Random], Partition]] = {
    "halves": halves,
    "random-halves": random_halves,
    "isolate-one": isolate_one,
    "majorities-ring": majorities_ring,
    "bridge": bridge,
}

#: Topologies built around the node that leads now (a database that can name it:
#: :attr:`~kvcheck.harness.databases.Capability.PRIMARY`).
PRIMARY_TOPOLOGIES: dict[str, Callable[[Sequence[str], random.Random, str], Partition]] = {
    "isolate-primary": isolate_primary,
}

#: How many nodes each topology needs at least.
MIN_NODES = {"majorities-ring": 4, "bridge": 3}
