"""What a join and a leave cost; prints JSON.

    python benchmarks/rebalance_bench.py [--keys 100000] [--nodes 5]
    python benchmarks/rebalance_bench.py --processes [--keys 20000]

In the simulator (the default): loads ``--keys`` keys (one 100-byte version each) onto their N=3
replicas of a ``--nodes`` cluster, lets a new node join, then has it leave again, and reports for
each change: the virtual seconds from the request to the switch (gossip rounds of 500 ms
included), the keys streamed (sent by sources, received by gainers: a key a gainer receives from
two sources counts twice), the keys the changed node ends up replicating, and the CPU this
process spent (the simulator runs every node).

With ``--processes``: a local cluster of 3 ``kvstore serve`` processes (fsync ``always``) is
loaded through its HTTP interface, then n4 joins and leaves again while a client writes new
keys at about 100 per second; reported per change: wall seconds until every node sees it
complete, keys streamed, and the writes made meanwhile (acknowledged, failed, p99 latency).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import bench_kvstore
import trio
from bench_load import preload, quantile
from bench_processes import LocalProcesses
from machine import machine

from kvcheck.store.client import StoreClient, StoreError
from kvcheck.store.config import ClusterConfig
from kvcheck.store.sim import Simulation
from kvcheck.store.versions import stamp


def loaded(nodes: int, keys: int) -> Simulation:
    sim = Simulation([f"n{i}" for i in range(1, nodes + 1)], ClusterConfig(), seed=1)
    for i in range(keys):
        key = b"key-%09d" % i
        replicas = sim.ring.preference_list(key, 3)
        _, versions = stamp(f"{replicas[0]}.1", [], {}, b"x" * 100, 1, 10)
        for node in replicas:
            sim.nodes[node].disk.put(key, versions)
    return sim


def counter(sim: Simulation, name: str) -> int:
    return sum(node.logic.counters.get(name, 0) for node in sim.nodes.values())


def measure(sim: Simulation, member: str, status: str,
            change: Callable[[], object]) -> dict[str, float]:
    sent, received = counter(sim, "stream_keys_sent"), counter(sim, "stream_keys_received")
    started, cpu = sim.now, time.process_time()
    change()
    while any(node.logic.placement.records.get(member) is None
              or node.logic.placement.records[member].status != status
              or node.logic.placement.in_transition
              for node in sim.nodes.values() if node.node_id != member or status != "left"):
        sim.run_for(0.1)
    placement = sim.nodes["n1"].logic.placement
    return {
        "virtual_s": round(sim.now - started, 2),
        "cpu_s": round(time.process_time() - cpu, 2),
        "keys_sent": counter(sim, "stream_keys_sent") - sent,
        "keys_received": counter(sim, "stream_keys_received") - received,
        "members_after": len(placement.current),
    }


async def processes(keys: int) -> dict[str, object]:
    """The ``--processes`` measurement (see the module docstring)."""
    with tempfile.TemporaryDirectory() as directory, LocalProcesses(Path(directory)) as servers:
        ports = bench_kvstore.start_cluster(servers, "always")
        await bench_kvstore.wait_ready(ports, servers)
        await preload(bench_kvstore.KvStoreClients(tuple(ports)), keys, b"x" * 100)
        port = bench_kvstore.free_ports(1)[0]
        writes: dict[str, list[float]] = {"ok": [], "failed": []}

        async def write(stop: trio.Event) -> None:
            async with StoreClient("127.0.0.1", ports[0]) as client:
                i = 0
                while not stop.is_set():
                    started = time.perf_counter()
                    try:
                        await client.put(f"during-{i}", b"y" * 100)
                        writes["ok"].append(time.perf_counter() - started)
                    except StoreError:
                        writes["failed"].append(time.perf_counter() - started)
                    i += 1
                    await trio.sleep(0.01)  # pacing: about 100 writes a second

        async def change(start: Callable[[], Awaitable[None]], member: str,
                         status: str, watch: list[int]) -> dict[str, object]:
            writes["ok"].clear()
            writes["failed"].clear()
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(write, stop)
                began = time.monotonic()
                await start()
                await until_settled(watch, member, status)
                elapsed = time.monotonic() - began
                stop.set()
            latencies = sorted(writes["ok"])
            return {"wall_s": round(elapsed, 2), "writes_acked": len(latencies),
                    "writes_failed": len(writes["failed"]),
                    "write_p99_ms": round(1000 * quantile(latencies, 0.99), 1)}

        async def join() -> None:
            servers.start("n4", [
                sys.executable, "-m", "kvcheck.store", "serve", "--node-id", "n4", "--listen",
                f"127.0.0.1:{port}", "--join", f"127.0.0.1:{ports[0]}", "--data-dir",
                str(servers.root / "n4"), "--n", "3", "--w", "2", "--r", "2", "--fsync", "always",
                "--secret-file", str(bench_kvstore.secret_file(servers)), "--log-level", "warning"])

        async def leave() -> None:
            async with StoreClient("127.0.0.1", port) as client:
                await client.leave()

        joined = await change(join, "n4", "normal", [*ports, port])
        async with StoreClient("127.0.0.1", port) as client:
            counters = (await client.status())["node"]["counters"]
        joined["keys_received"] = counters.get("stream_keys_received", 0)
        joined["sources_failed"] = {why: counters.get(f"stream_sources_{why}", 0)
                                    for why in ("refused", "unreachable", "silent")}
        left = await change(leave, "n4", "left", ports)
        return {"join": joined, "leave": left}


async def until_settled(ports: list[int], member: str, status: str) -> None:
    """Poll every node until it sees ``member`` as ``status`` and no change in progress."""
    for port in ports:
        while True:
            try:
                async with StoreClient("127.0.0.1", port, timeout=2) as client:
                    layout = (await client.status())["node"]["placement"]
                records = {r["node_id"]: r for r in layout["records"]}
                if member in records and records[member]["status"] == status \
                        and not layout["in_transition"]:
                    break
            except StoreError:
                pass
            await trio.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--processes", action="store_true",
                        help="real node processes instead of the simulator")
    args = parser.parse_args()
    if args.processes:
        keys = args.keys or 20_000
        print(json.dumps({"benchmark": "rebalance-processes", **machine(), "keys": keys,
                          **trio.run(processes, keys)}, indent=2))
        return
    args.keys = args.keys or 100_000
    sim = loaded(args.nodes, args.keys)
    sim.run_for(3)  # gossip settles, anti-entropy trees built
    newcomer = f"n{args.nodes + 1}"
    join = measure(sim, newcomer, "normal", lambda: sim.join(newcomer, via="n1"))
    join["keys_replicated_by_newcomer"] = sim.nodes[newcomer].disk.stats()["keys"]
    leave = measure(sim, newcomer, "left", lambda: sim.leave(newcomer))
    print(json.dumps({"benchmark": "rebalance", **machine(), "keys": args.keys, "nodes": args.nodes,
                      "join": join, "leave": leave}, indent=2))


if __name__ == "__main__":
    main()
