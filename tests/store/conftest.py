"""Fixtures of the store's tests: a local cluster of real ``kvstore serve`` processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from local_cluster import LocalCluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path, 3)
    for node in local.ids:
        local.start(node)
    local.wait_ready()
    yield local
    local.stop_all()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


os.environ.setdefault("PYTHONUNBUFFERED", "1")
