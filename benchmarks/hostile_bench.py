"""What hostile clients and strangers can do to a node of the reference store; prints JSON.

    python benchmarks/hostile_bench.py [--blind-writes 400] [--strangers 200]
        [--stalled 300] [--slow-clients 1200]

A 3-node cluster of local processes (N=3, W=2, R=2, fsync always, peers authenticated:
:mod:`bench_kvstore`), then, one after another against node n1:

- ``siblings``: ``--blind-writes`` writes of 1,000 bytes to one key, each without a context (so
  each would add a sibling): how many were taken and refused (``409``), the read's size and
  sibling count after, n1's commit-log growth, and the median latency of each kind of answer;
- ``strangers``: ``--strangers`` connections to the peer port that each declare a 16 MiB frame
  and send 60 KB of it without a handshake: n1's resident memory before and after, and how
  many it closed;
- ``stalled_handshakes``: ``--stalled`` connections that send the peer preamble and nothing
  more: how many n1 closed, and how long the last took;
- ``slow_clients``: ``--slow-clients`` HTTP requests that declare a 5,000-byte body and send 2
  bytes of it: how each ended (``408``, ``503``, closed unanswered), how long the last took,
  n1's memory meanwhile, and whether an ordinary request is served once they are gone.
"""

from __future__ import annotations

import argparse
import glob
import json
import resource
import socket
import statistics
import struct
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import bench_kvstore
import trio
from bench_processes import LocalProcesses
from machine import machine

from kvcheck.store.client import StoreClient, StoreError
from kvcheck.store.messages import PREAMBLE

VALUE = b"v" * 1000


def rss_mb(servers: LocalProcesses, node: str) -> float:
    """The resident memory of ``node``'s process, in MB."""
    pid = servers.pid(node)
    status = Path(f"/proc/{pid}/status").read_text()
    return round(int(status.split("VmRSS:")[1].split()[0]) / 1024, 1)


async def siblings(port: int, writes: int, data_dir: Path) -> dict[str, Any]:
    def log_bytes() -> int:
        return sum(Path(p).stat().st_size for p in glob.glob(str(data_dir / "wal-*.log")))

    before = log_bytes()
    taken: list[float] = []
    refused: list[float] = []
    async with StoreClient("127.0.0.1", port) as client:
        for _ in range(writes):
            started = time.perf_counter()
            try:
                await client.put("hot", VALUE)
                taken.append(time.perf_counter() - started)
            except StoreError as exc:
                if exc.status != 409:
                    raise
                refused.append(time.perf_counter() - started)
        read = await client.get("hot")
    return {"writes": writes, "taken": len(taken), "refused_409": len(refused),
            "siblings_read": len(read.values),
            "read_bytes": sum(len(v or b"") for v in read.values),
            "commit_log_growth_bytes": log_bytes() - before,
            "taken_p50_ms": _ms(taken), "refused_p50_ms": _ms(refused)}


def _ms(latencies: list[float]) -> float | None:
    return round(1000 * statistics.median(latencies), 2) if latencies else None


def _wait_closed(sockets: list[socket.socket], limit: float) -> tuple[list[bytes], float]:
    """What each socket received until the node closed it (or ``limit`` seconds passed), and
    the seconds until the last was closed."""
    started = time.monotonic()
    received = []
    for sock in sockets:
        sock.settimeout(max(0.1, limit - (time.monotonic() - started)))
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except OSError:
            data += b"<still open>"
        received.append(data)
        sock.close()
    return received, round(time.monotonic() - started, 2)


def strangers(servers: LocalProcesses, port: int, count: int) -> dict[str, Any]:
    before = rss_mb(servers, "n1")
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(PREAMBLE + struct.pack(">I", 16 * 1024 * 1024 - 1) + b"x" * 60_000)
        sockets.append(sock)
    during = rss_mb(servers, "n1")
    received, _ = _wait_closed(sockets, 30)
    return {"connections": count, "rss_before_mb": before, "rss_with_them_mb": during,
            "closed_by_node": sum(not r.endswith(b"<still open>") for r in received)}


def stalled(port: int, count: int) -> dict[str, Any]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(PREAMBLE)
        sockets.append(sock)
    received, seconds = _wait_closed(sockets, 30)
    return {"connections": count,
            "closed_by_node": sum(not r.endswith(b"<still open>") for r in received),
            "last_closed_after_s": seconds}


def slow_clients(servers: LocalProcesses, port: int, count: int) -> dict[str, Any]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"PUT /kv/slow HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\nab")
        sockets.append(sock)
    during = rss_mb(servers, "n1")
    received, seconds = _wait_closed(sockets, 60)
    endings = Counter(r[9:12].decode() if r.startswith(b"HTTP/1.1 ") else
                      "still open" if r.endswith(b"<still open>") else "closed unanswered"
                      for r in received)

    async def ordinary() -> bool:
        async with StoreClient("127.0.0.1", port) as client:
            await client.put("after", b"ok")
            return (await client.get("after")).values == (b"ok",)

    return {"connections": count, "endings": dict(sorted(endings.items())),
            "last_closed_after_s": seconds, "rss_meanwhile_mb": during,
            "ordinary_request_served_after": trio.run(ordinary)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blind-writes", type=int, default=400)
    parser.add_argument("--strangers", type=int, default=200)
    parser.add_argument("--stalled", type=int, default=300)
    parser.add_argument("--slow-clients", type=int, default=1200)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this process's many sockets
    with tempfile.TemporaryDirectory() as root, LocalProcesses(Path(root)) as servers:
        ports = bench_kvstore.start_cluster(servers, "always")
        trio.run(bench_kvstore.wait_ready, ports, servers)
        report = {
            "benchmark": "hostile", **machine(),
            "cluster": bench_kvstore.describe("always")["configuration"],
            "siblings": trio.run(siblings, ports[0], args.blind_writes, Path(root) / "n1"),
            "strangers": strangers(servers, ports[0], args.strangers),
            "stalled_handshakes": stalled(ports[0], args.stalled),
            "slow_clients": slow_clients(servers, ports[0], args.slow_clients),
        }
        servers.check_running()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
