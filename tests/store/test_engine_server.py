"""The engine inside a real ``kvstore serve``: it flushes, reports, and restarts after kill -9."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from local_cluster import LocalCluster

pytestmark = pytest.mark.integration


def test_a_node_flushes_to_sstables_and_keeps_them_across_kill_9(tmp_path: Path) -> None:
    local = LocalCluster(tmp_path, 1, n=1, w=1, r=1, memtable_bytes=4096)
    local.start("n1")
    local.wait_ready()
    try:
        async def write() -> dict[str, object]:
            async with local.client("n1") as client:
                for i in range(400):
                    await client.put(f"key-{i}", b"v" * 100 + b"%d" % i)
                status = await client.status()
                return dict(status["storage"])

        storage = trio.run(write)
        assert storage["engine"] == "lsm" and storage["flushes"] >= 1
        assert storage["sstable_count"] >= 1
        local.kill("n1")
        local.start("n1")
        local.wait_ready()

        async def read_back() -> None:
            async with local.client("n1") as client:
                for i in range(400):
                    assert (await client.get(f"key-{i}")).values == (b"v" * 100 + b"%d" % i,)

        trio.run(read_back)
    finally:
        local.stop_all()
