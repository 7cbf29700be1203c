"""Partition topologies: who hears whom, for any cluster size."""

from __future__ import annotations

import random

import networkx as nx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvcheck.nemesis.topology import (
    TOPOLOGIES,
    bridge,
    halves,
    isolate_one,
    isolate_primary,
    majorities_ring,
)

NODES = ["n1", "n2", "n3", "n4", "n5"]


def test_halves_cut_every_link_across_and_none_within() -> None:
    p = halves(NODES, random.Random(0))
    assert p.components == [["n1", "n2"], ["n3", "n4", "n5"]]
    assert ("n1", "n3") in p.cut and ("n3", "n1") in p.cut
    assert ("n1", "n2") not in p.cut and ("n4", "n5") not in p.cut
    assert len(p.cut) == 2 * 2 * 3


def test_isolate_one_cuts_exactly_one_node_off() -> None:
    p = isolate_one(NODES, random.Random(1))
    (lonely,) = [c[0] for c in p.components if len(c) == 1]
    assert p.cut == {(lonely, n) for n in NODES if n != lonely} | {
        (n, lonely) for n in NODES if n != lonely}


@given(st.integers(4, 9), st.integers(0, 1000))
def test_in_a_majorities_ring_each_node_sees_a_distinct_majority(size: int, seed: int) -> None:
    nodes = [f"n{i}" for i in range(1, size + 1)]
    p = majorities_ring(nodes, random.Random(seed))
    views = [frozenset([n, *p.graph.neighbors(n)]) for n in nodes]
    assert all(len(v) > size / 2 for v in views)
    assert len(set(views)) == size


@given(st.integers(3, 9), st.integers(0, 1000))
def test_a_bridge_connects_two_halves_through_one_node(size: int, seed: int) -> None:
    nodes = [f"n{i}" for i in range(1, size + 1)]
    p = bridge(nodes, random.Random(seed))
    assert nx.is_connected(p.graph)
    cut_vertices = list(nx.articulation_points(p.graph))
    assert len(cut_vertices) == 1
    hub = cut_vertices[0]
    assert p.graph.degree(hub) == size - 1


@given(st.sampled_from(sorted(TOPOLOGIES)), st.integers(4, 9), st.integers(0, 1000))
def test_every_topology_cuts_links_in_both_directions_and_never_a_self_link(
    name: str, size: int, seed: int
) -> None:
    nodes = [f"n{i}" for i in range(1, size + 1)]
    p = TOPOLOGIES[name](nodes, random.Random(seed))
    assert p.cut, "a partition cuts something"
    assert all((b, a) in p.cut for a, b in p.cut)
    assert all(a != b for a, b in p.cut)
    assert set(p.graph.nodes) == set(nodes)


@pytest.mark.parametrize(("topology", "minimum"), [(majorities_ring, 4), (bridge, 3)])
def test_topologies_that_need_more_nodes_say_so(topology, minimum: int) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=f"at least {minimum} nodes"):
        topology([f"n{i}" for i in range(1, minimum)], random.Random(0))


@given(st.integers(2, 9), st.integers(0, 2**32 - 1))
def test_isolate_primary_cuts_the_primary_off_from_a_majority(size: int, seed: int) -> None:
    nodes = [f"n{i}" for i in range(1, size + 1)]
    primary = random.Random(seed).choice(nodes)
    partition = isolate_primary(nodes, random.Random(seed), primary)
    side = next(c for c in partition.components if primary in c)
    rest = [n for n in nodes if n not in side]
    assert len(side) <= (size - 1) // 2 or side == [primary]  # a minority, or alone
    assert partition.components == sorted([side, rest])
    assert all((primary, other) in partition.cut for other in rest)
