"""A real ``kvstore serve`` on a full or failing disk.

On a tmpfs filled to the last byte while it compacts (then by its own writes), the node stays
up, refuses writes with a 503 whose ``X-Kv-Applied`` is true (a single node: "no", nothing
stored), serves reads, and once space returns takes writes again and finishes its background
work with no acknowledged write lost; restarted on a full disk, it serves reads. Through the
storage fault hook, a failed fsync stops its writes until a restart, in both fsync modes that
sync, and a failed read fails that read only.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from local_cluster import LocalCluster
from tinyfs import fill, tiny_fs

from kvcheck.store.client import StoreClient, Unavailable
from kvcheck.store.storage import faults

pytestmark = pytest.mark.integration

VALUE = b"x" * 600
BIG = b"x" * 8000
COMPACTING = re.compile(r"sst-(\d{8})-(\d{8})\.sst\.tmp")
#: Refusals in a row after which the disk is taken to be full.
REFUSALS = 10


def single(root: Path, **settings: object) -> LocalCluster:
    """One node n1 (data in ``root/n1``), flushing every 4 KiB."""
    return LocalCluster(root, 1, n=1, w=1, r=1, memtable_bytes=4096, **settings)


def run(local: LocalCluster, work: Callable[[StoreClient], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with local.client("n1") as client:
            return await work(client)
    return trio.run(main)


async def write(client: StoreClient, acked: dict[str, bytes], refused: list[str],
                value: bytes = VALUE) -> bool:
    """Write a new key; return whether it was acknowledged. A refusal must be a 503 saying the
    write was not applied (one node: a refused write was stored nowhere)."""
    key = f"key-{len(acked) + len(refused):05d}"
    try:
        await client.put(key, value + key.encode())
    except Unavailable as exc:
        assert exc.status == 503 and exc.applied == "no", exc
        refused.append(key)
        return False
    acked[key] = value + key.encode()
    return True


async def write_until_refused(client: StoreClient, acked: dict[str, bytes],
                              refused: list[str]) -> None:
    """Write new keys until REFUSALS in a row are refused."""
    streak = 0
    for _ in range(20_000):
        streak = 0 if await write(client, acked, refused) else streak + 1
        if streak == REFUSALS:
            return
    raise AssertionError("the disk never filled up")


async def check_reads(client: StoreClient, acked: dict[str, bytes], refused: list[str]) -> None:
    """Every acknowledged write is there, and no refused one."""
    for key, value in acked.items():
        assert (await client.get(key)).values == (value,), key
    for key in refused:
        assert (await client.get(key)).values == (), key


async def poll(check: Callable[[], Awaitable[bool]], what: str, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not await check():
        assert time.monotonic() < deadline, what
        await trio.sleep(0.1)  # polling a condition under a deadline, not synchronising


async def write_works(client: StoreClient, key: str) -> bool:
    try:
        await client.put(key, b"back")
    except Unavailable:
        return False
    return True


def compacting(directory: Path) -> bool:
    """Whether a compaction's output is being written in ``directory``."""
    return any(int(m[1]) < int(m[2]) for path in directory.glob("sst-*.sst.tmp")
               if (m := COMPACTING.fullmatch(path.name)))


async def storage(client: StoreClient) -> dict[str, Any]:
    return dict((await client.status())["storage"])


def test_a_node_filled_while_it_compacts_stays_up_and_recovers_losing_nothing(
        tmp_path: Path) -> None:
    with tiny_fs(tmp_path / "n1", "32m") as disk:
        # 1 MiB memtables: the first compaction (3 tables) takes a dozen 256 KiB slices.
        local = LocalCluster(tmp_path, 1, n=1, w=1, r=1, memtable_bytes=1 << 20)
        local.start("n1")
        local.wait_ready()
        try:
            acked: dict[str, bytes] = {}
            refused: list[str] = []

            def fill_once_compacting() -> None:
                """Fill the disk between two slices of a compaction: once its output appears
                (a flush's covers one segment, a compaction's several), stop the node, and fill
                if the output is still there; then let the node go on."""
                pid = local.processes["n1"].pid
                deadline = time.monotonic() + 120
                while True:
                    if compacting(disk):
                        os.kill(pid, signal.SIGSTOP)
                        try:
                            if compacting(disk):
                                fill(disk)
                                return
                        finally:
                            os.kill(pid, signal.SIGCONT)
                    assert time.monotonic() < deadline, "no compaction seen running"
                    time.sleep(0.001)  # polling a condition under a deadline

            async def fill_while_compacting(client: StoreClient) -> dict[str, Any]:
                before = await storage(client)
                filled = trio.Event()

                async def fill_in_a_thread() -> None:
                    await trio.to_thread.run_sync(fill_once_compacting)
                    filled.set()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(fill_in_a_thread)
                    while not filled.is_set():
                        await write(client, acked, refused, BIG)
                await write_until_refused(client, acked, refused)
                await check_reads(client, acked, refused)  # reads go on on the full disk
                full = await storage(client)
                assert full["background_errors"] > before["background_errors"]
                return full

            full = run(local, fill_while_compacting)
            assert local.processes["n1"].poll() is None  # still up
            assert full["write_errors"] >= REFUSALS
            assert full["fail_stopped"] is None  # a full disk stops no writes for good
            (disk / "filler").unlink()

            async def recover(client: StoreClient) -> dict[str, Any]:
                await poll(lambda: write_works(client, "after"), "writes never came back")
                await poll(lambda: settled(client), "background work never finished")
                await check_reads(client, acked, refused)
                return await storage(client)

            async def settled(client: StoreClient) -> bool:
                now = await storage(client)
                return now["background_error"] is None and not now["background_work_pending"]

            recovered = run(local, recover)
            assert recovered["compactions"] > full["compactions"]
            assert not list(disk.glob("*.tmp"))
        finally:
            local.stop_all()


def test_a_node_restarted_on_a_full_disk_serves_reads(tmp_path: Path) -> None:
    with tiny_fs(tmp_path / "n1", "2m") as disk:
        reserve = disk / "reserve"
        reserve.write_bytes(b"\0" * (1 << 20))
        local = single(tmp_path)
        local.start("n1")
        local.wait_ready()
        try:
            acked: dict[str, bytes] = {}
            refused: list[str] = []
            run(local, lambda client: write_until_refused(client, acked, refused))
            local.kill("n1")
            for temporary in disk.glob("*.tmp"):  # what start-up would delete, freeing space
                temporary.unlink()
            filler = fill(disk)
            local.start("n1")
            local.wait_ready()

            async def read_on_full_disk(client: StoreClient) -> None:
                await check_reads(client, acked, refused)
                await write_until_refused(client, acked, refused)  # the log's last page, if any
                await check_reads(client, acked, refused)

            run(local, read_on_full_disk)
            filler.unlink()
            reserve.unlink()
            run(local, lambda client: poll(lambda: write_works(client, "after"),
                                           "writes never came back"))
        finally:
            local.stop_all()


@pytest.mark.parametrize("fsync", ["always", "interval"])
def test_a_failed_fsync_stops_writes_until_a_restart_and_reads_go_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: str) -> None:
    fault_file = tmp_path / "faults"
    fault_file.write_text("")
    monkeypatch.setenv(faults.ENV, str(fault_file))
    local = single(tmp_path, fsync=fsync)
    local.start("n1")
    local.wait_ready()
    try:
        async def fail_a_sync(client: StoreClient) -> dict[str, Any]:
            await client.put("before", b"1")
            fault_file.write_text("fsync")
            if fsync == "always":  # its acknowledgement waited for the sync that failed
                with pytest.raises(Unavailable, match="sync failed") as failed:
                    await client.put("during", b"2")
                assert failed.value.applied == "unknown"  # it may be on disk, or not
            else:  # acknowledged before its sync, which fails on the timer
                await client.put("during", b"2")
            await poll(lambda: stopped(client), "the node never stopped its writes")
            fault_file.write_text("")  # the device works again; the node stays stopped
            with pytest.raises(Unavailable, match="refused until the node restarts") as refused:
                await client.put("after", b"3")
            assert refused.value.applied == "no"
            assert (await client.get("before")).values == (b"1",)
            return await storage(client)

        async def stopped(client: StoreClient) -> bool:
            return (await storage(client))["fail_stopped"] is not None

        status = run(local, fail_a_sync)
        assert status["fail_stopped"].startswith("commit log sync failed: [Errno 5]")
        assert status["test_fault_file"] == str(fault_file)
        local.kill("n1")
        local.start("n1")
        local.wait_ready()

        async def after_restart(client: StoreClient) -> None:
            await client.put("after", b"3")
            assert (await client.get("before")).values == (b"1",)
            if fsync == "interval":  # acknowledged: the restart replayed it
                assert (await client.get("during")).values == (b"2",)

        run(local, after_restart)
    finally:
        local.stop_all()


def test_a_failed_read_fails_that_read_and_the_node_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fault_file = tmp_path / "faults"
    fault_file.write_text("")
    monkeypatch.setenv(faults.ENV, str(fault_file))
    local = single(tmp_path)
    local.start("n1")
    local.wait_ready()
    try:
        async def read_through_failures(client: StoreClient) -> None:
            for i in range(20):  # past a memtable: the first keys go to a table
                await client.put(f"old-{i}", VALUE)

            async def flushed() -> bool:
                now = await storage(client)
                return now["sstable_count"] > 0 and not now["frozen_memtable_bytes"]

            await poll(flushed, "the memtable was never flushed")
            await client.put("new", b"in the memtable")
            fault_file.write_text("read")
            with pytest.raises(Unavailable) as failed:
                await client.get("old-0")
            assert failed.value.applied == "no"
            with pytest.raises(Unavailable, match="cannot read the key"):
                await client.replica("old-0")  # this node's own copy: a 503 too
            assert (await client.get("new")).values == (b"in the memtable",)
            fault_file.write_text("")
            assert (await client.get("old-0")).values == (VALUE,)

        run(local, read_through_failures)
        assert local.processes["n1"].poll() is None
    finally:
        local.stop_all()
