"""Throughput and latency of a local 3-node cluster; prints JSON.

    python benchmarks/store_bench.py [--seconds 20] [--clients 32] [--fsync always]

Starts ``kvstore serve`` processes on 127.0.0.1 (N=3, W=2, R=2), preloads the keys, then runs
``--clients`` concurrent clients — spread over ``--client-processes`` processes, each client
bound to one node round-robin — issuing 50% gets and 50% puts of 100-byte values over 10,000
keys for ``--seconds`` seconds. Puts carry the context of the client's last read of the key.
Reports ops/s and latency quantiles per operation, and the CPU time each process used.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from kvcheck.checkers.stats import nearest_rank
from kvcheck.store.client import StoreClient, StoreError


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_cluster(root: Path, fsync: str) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    ports = free_ports(3)
    ids = ["n1", "n2", "n3"]
    processes = []
    for node, port in zip(ids, ports, strict=True):
        peers = ",".join(f"{p}=127.0.0.1:{q}" for p, q in zip(ids, ports, strict=True) if p != node)
        log = (root / f"{node}.log").open("ab")
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "kvcheck.store", "serve", "--node-id", node,
             "--listen", f"127.0.0.1:{port}", "--peers", peers, "--data-dir", str(root / node),
             "--n", "3", "--w", "2", "--r", "2", "--fsync", fsync, "--log-level", "warning"],
            stdout=log, stderr=log))
    return processes, ports


async def wait_ready(ports: list[int]) -> None:
    with trio.fail_after(30):
        for port in ports:
            while True:
                try:
                    async with StoreClient("127.0.0.1", port, timeout=1) as client:
                        status = await client.status()
                    if all(m["connected"] for m in status["membership"]):
                        break
                except StoreError:
                    pass
                await trio.sleep(0.05)


async def preload(ports: list[int], keys: int, value: bytes) -> None:
    async def load(worker: int) -> None:
        async with StoreClient("127.0.0.1", ports[worker % len(ports)]) as client:
            for k in range(worker, keys, 16):
                await client.put(f"key-{k}", value)

    async with trio.open_nursery() as nursery:
        for worker in range(16):
            nursery.start_soon(load, worker)


def client_process(ports: list[int], clients: range, keys: int, seconds: float,
                   value: bytes, seed: int, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    latencies: dict[str, list[float]] = {"get": [], "put": []}
    errors = {"get": 0, "put": 0}

    async def worker(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        contexts: dict[str, str] = {}
        async with StoreClient("127.0.0.1", ports[index % len(ports)]) as client:
            while time.monotonic() < deadline:
                key = f"key-{rng.randrange(keys)}"
                kind = "get" if rng.random() < 0.5 else "put"
                start = time.perf_counter()
                try:
                    if kind == "get":
                        contexts[key] = (await client.get(key)).context
                    else:
                        await client.put(key, value, contexts.get(key, ""))
                except StoreError:
                    errors[kind] += 1
                    continue
                latencies[kind].append(time.perf_counter() - start)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            for index in clients:
                nursery.start_soon(worker, index)

    deadline = time.monotonic() + seconds
    trio.run(run)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    queue.put((latencies, errors, usage.ru_utime + usage.ru_stime))


def quantile(sorted_values: list[float], q: float) -> float:
    """The checkers' quantile (:func:`~kvcheck.checkers.stats.nearest_rank`); NaN if empty."""
    return nearest_rank(sorted_values, q) if sorted_values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--client-processes", type=int, default=1)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--fsync", default="always", choices=["always", "interval", "never"])
    args = parser.parse_args()
    value = os.urandom(args.value_bytes // 2).hex().encode()[: args.value_bytes]

    with tempfile.TemporaryDirectory(prefix="kvstore-bench-") as tmp:
        root = Path(tmp)
        nodes, ports = start_cluster(root, args.fsync)
        try:
            trio.run(wait_ready, ports)
            trio.run(preload, ports, args.keys, value)
            queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
            share = -(-args.clients // args.client_processes)
            workers = [
                multiprocessing.Process(target=client_process, args=(
                    ports, range(i * share, min(args.clients, (i + 1) * share)), args.keys,
                    args.seconds, value, i, queue))
                for i in range(args.client_processes)
            ]
            node_cpu_before = [_cpu_seconds(p.pid) for p in nodes]
            started = time.monotonic()
            for w in workers:
                w.start()
            results = [queue.get() for _ in workers]
            elapsed = time.monotonic() - started
            node_cpu = [_cpu_seconds(p.pid) - b for p, b in zip(nodes, node_cpu_before,
                                                                 strict=True)]
            for w in workers:
                w.join()
        finally:
            for p in nodes:
                p.send_signal(signal.SIGTERM)
            for p in nodes:
                p.wait(timeout=30)

    report: dict[str, object] = {
        "benchmark": "store", "nodes": 3, "n": 3, "w": 2, "r": 2, "fsync": args.fsync,
        "clients": args.clients, "client_processes": args.client_processes, "keys": args.keys,
        "value_bytes": args.value_bytes, "seconds": round(elapsed, 2), "cpus": os.cpu_count(),
    }
    total = 0
    for kind in ("get", "put"):
        values = sorted(v for latencies, _, _ in results for v in latencies[kind])
        total += len(values)
        report[kind] = {
            "ops": len(values),
            "errors": sum(errors[kind] for _, errors, _ in results),
            "p50_ms": round(quantile(values, 0.50) * 1000, 3),
            "p99_ms": round(quantile(values, 0.99) * 1000, 3),
            "p999_ms": round(quantile(values, 0.999) * 1000, 3),
        }
    report["ops_per_s"] = round(total / elapsed, 1)
    report["cpu_seconds"] = {
        "nodes": [round(c, 2) for c in node_cpu],
        "clients": [round(c, 2) for _, _, c in results],
    }
    print(json.dumps(report, indent=2))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
