"""A join and a leave with real node processes, under concurrent writes: nothing acknowledged
is lost, and ``kvstore leave --wait`` reports the node gone."""

from __future__ import annotations

import subprocess
import sys

import trio
from local_cluster import LocalCluster, free_ports

from kvcheck.store.client import StoreClient, StoreError

#: Seconds a join or leave of a small, lightly loaded cluster may take, at most.
CHANGE_LIMIT = 60


async def member_status(client: StoreClient, member: str) -> tuple[str, bool]:
    """What the node says of ``member``: its status, and whether a change is in progress."""
    status = await client.status()
    records = {r["node_id"]: r for r in status["node"]["placement"]["records"]}
    in_transition = status["node"]["placement"]["in_transition"]
    return records.get(member, {"status": "unknown"})["status"], in_transition


async def settled(cluster: LocalCluster, nodes: list[str], member: str, want: str) -> None:
    """Poll until every node in ``nodes`` sees ``member`` as ``want``, with no change going."""
    with trio.fail_after(CHANGE_LIMIT):
        for node in nodes:
            while True:
                try:
                    async with cluster.client(node, timeout=2) as client:
                        if await member_status(client, member) == (want, False):
                            break
                except StoreError:
                    pass
                await trio.sleep(0.2)  # polling a condition under a deadline


def test_a_join_and_a_leave_under_concurrent_writes_lose_nothing(
        cluster: LocalCluster) -> None:
    acked: list[str] = []
    failures: list[str] = []

    async def write(stop: trio.Event) -> None:
        i = 0
        while not stop.is_set():
            node = ["n1", "n3"][i % 2]
            key = f"key-{i}"
            try:
                async with cluster.client(node) as client:
                    await client.put(key, key.encode())
                acked.append(key)
            except StoreError as exc:
                failures.append(f"{key}: {exc}")
            i += 1

    async def scenario() -> None:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write, stop)
            while len(acked) < 200:
                await trio.sleep(0.05)
            cluster.join("n4", via="n2")
            await settled(cluster, ["n1", "n2", "n3", "n4"], "n4", "normal")
            joined_at = len(acked)
            leave = await trio.run_process(
                [sys.executable, "-m", "kvcheck.store", "leave", "--wait",
                 "--node", f"127.0.0.1:{cluster.ports['n2']}"],
                capture_stderr=True, check=False)
            assert leave.returncode == 0, leave.stderr.decode()
            assert "has left the cluster" in leave.stderr.decode()
            await settled(cluster, ["n1", "n3", "n4"], "n2", "left")
            while len(acked) < joined_at + 200:
                await trio.sleep(0.05)
            stop.set()
        cluster.kill("n2")
        async with cluster.client("n4") as client:
            stored = await client.status()
            assert stored["node"]["counters"]["stream_keys_received"] > 0
            for key in acked:
                read = await client.get(key)
                assert read.values == (key.encode(),), key

    trio.run(scenario)
    assert not failures, failures[:5]


def test_joining_with_an_id_already_in_the_cluster_is_refused(cluster: LocalCluster) -> None:
    port = free_ports(1)[0]
    node = subprocess.run(
        [sys.executable, "-m", "kvcheck.store", "serve", "--node-id", "n2", "--listen",
         f"127.0.0.1:{port}",
         "--join", f"127.0.0.1:{cluster.ports['n1']}", "--data-dir",
         str(cluster.root / "another-n2")],
        capture_output=True, text=True, timeout=30)
    assert node.returncode != 0
    assert "n2 is already a member" in node.stderr


def test_joining_with_other_cluster_settings_is_refused_naming_them(
        cluster: LocalCluster) -> None:
    port = free_ports(1)[0]
    node = subprocess.run(
        [sys.executable, "-m", "kvcheck.store", "serve", "--node-id", "n9", "--listen",
         f"127.0.0.1:{port}", "--join", f"127.0.0.1:{cluster.ports['n1']}", "--data-dir",
         str(cluster.root / "n9"), "--n=3", "--w=2", "--r=1"],
        capture_output=True, text=True, timeout=30)
    assert node.returncode != 0
    assert "r is 1 here, 2 there" in node.stderr
    assert not (cluster.root / "n9" / "placement.json").exists()
