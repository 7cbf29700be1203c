"""Fixtures for adapter tests: clusters of a database's real processes on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from loopback import LoopbackCluster


@pytest.fixture
def loopback(tmp_path: Path) -> Iterator[Callable[..., LoopbackCluster]]:
    """Make :class:`LoopbackCluster` s (``loopback(db, size, **kwargs)``), each under its
    own directory; at teardown, kill every process they started and check none is left."""
    clusters: list[LoopbackCluster] = []

    def make(db: str, size: int = 3, **kwargs: Any) -> LoopbackCluster:
        cluster = LoopbackCluster(db, tmp_path / f"cluster{len(clusters)}", size, **kwargs)
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        cluster.close()
    left = [line for cluster in clusters for line in cluster.leftovers()]
    assert not left, f"processes left behind: {left}"
