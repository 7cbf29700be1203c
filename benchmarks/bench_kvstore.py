"""The reference store's side of the store benchmark: a local 3-node cluster and its clients.

Three ``kvstore serve`` processes on 127.0.0.1 (free ports), N=3, W=2, R=2, the store's other
settings its defaults, ``--fsync`` as asked (``always``: each replica syncs its commit log
before it acknowledges a write, with group commit). Clients speak the store's HTTP interface
through :class:`~kvcheck.store.client.StoreClient` (one keep-alive connection over trio):
``GET /kv/<key>`` with the cluster's R, ``PUT /kv/<key>`` with the cluster's W, carrying the
causal context of the worker's last read of the key.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import trio
from bench_processes import LocalProcesses

from kvcheck.store.client import StoreClient, StoreError
from kvcheck.store.peer_auth import new_secret, write_secret

NODES = ("n1", "n2", "n3")
N, W, R = 3, 2, 2
#: How long a cluster may take to start before the benchmark gives up.
READY_LIMIT = 30.0


def free_ports(count: int) -> list[int]:
    """``count`` TCP ports of 127.0.0.1 nobody listens on now."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def secret_file(servers: LocalProcesses) -> Path:
    """The cluster's secret file, under ``servers``' root (made on the first call)."""
    path = servers.root / "secret"
    if not path.exists():
        write_secret(path, new_secret())
    return path


def start_cluster(servers: LocalProcesses, fsync: str) -> list[int]:
    """Start the 3 nodes under ``servers`` (data in ``<root>/<node>``, peers authenticated
    with :func:`secret_file`); return their ports."""
    ports = free_ports(len(NODES))
    for node, port in zip(NODES, ports, strict=True):
        peers = ",".join(f"{p}=127.0.0.1:{q}" for p, q in zip(NODES, ports, strict=True)
                         if p != node)
        servers.start(node, [
            sys.executable, "-m", "kvcheck.store", "serve", "--node-id", node,
            "--listen", f"127.0.0.1:{port}", "--peers", peers,
            "--data-dir", str(servers.root / node), "--n", str(N), "--w", str(W), "--r", str(R),
            "--fsync", fsync, "--secret-file", str(secret_file(servers)),
            "--log-level", "warning"])
    return ports


async def wait_ready(ports: list[int], servers: LocalProcesses) -> None:
    """Return once every node answers ``/ready``. Raises ``RuntimeError`` with the logs' ends
    if a node exits, or after :data:`READY_LIMIT`."""
    with trio.move_on_after(READY_LIMIT):
        for port in ports:
            while not await _ready(port):
                servers.check_running()
                await trio.sleep(0.05)  # polling a condition under a deadline
        return
    raise RuntimeError(f"the store's nodes were not ready after {READY_LIMIT:.0f} s:\n"
                       + "\n".join(servers.tail(node) for node in NODES))


async def _ready(port: int) -> bool:
    try:
        async with StoreClient("127.0.0.1", port, timeout=1) as client:
            return not await client.ready()
    except StoreError:
        return False


def describe(fsync: str) -> dict[str, object]:
    """What the report says of this side: the server, its durability, the client."""
    return {
        "server": f"kvcheck {version('kvcheck')} reference store",
        "configuration": {"nodes": len(NODES), "n": N, "w": W, "r": R},
        "durability": {
            "fsync": fsync,
            "policy": {"always": "each replica fdatasyncs its commit log before it "
                                 "acknowledges a write (group commit); a put is acknowledged "
                                 f"once W={W} of N={N} replicas have",
                       "interval": "the commit log is synced every --fsync-interval-ms",
                       "never": "the operating system decides when to write"}[fsync],
        },
        "client": {
            "protocol": "HTTP/1.1, kvstore HTTP API (GET and PUT /kv/<key>)",
            "library": f"kvcheck.store.client.StoreClient (kvcheck {version('kvcheck')}, httptools "
                       f"{version('httptools')}, trio {trio.__version__}), one keep-alive "
                       "connection per client",
            "reads": f"quorum reads, R={R} of N={N}",
        },
    }


@dataclass(frozen=True, slots=True)
class KvStoreClients:
    """:class:`bench_load.Clients` of the nodes at ``ports`` of 127.0.0.1."""

    ports: tuple[int, ...]

    @property
    def nodes(self) -> int:
        return len(self.ports)

    @property
    def failures(self) -> tuple[type[Exception], ...]:
        return (StoreError,)

    def connect(self, node: int) -> KvStoreDriver:
        return KvStoreDriver(StoreClient("127.0.0.1", self.ports[node]))


class KvStoreDriver:
    """A :class:`bench_load.Driver`: a put carries the context of the last read of the key."""

    def __init__(self, client: StoreClient) -> None:
        self._client = client
        self._contexts: dict[str, str] = {}

    async def get(self, key: str) -> None:
        self._contexts[key] = (await self._client.get(key)).context

    async def put(self, key: str, value: bytes) -> None:
        await self._client.put(key, value, self._contexts.get(key, ""))

    async def aclose(self) -> None:
        await self._client.aclose()
