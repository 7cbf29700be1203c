"""A local cluster of real ``kvstore serve`` processes on 127.0.0.1, and free ports, for the
store's integration tests (imported by name: ``conftest`` is not, as other test folders have
one too)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import trio

from kvcheck.store.client import StoreClient, StoreError
from kvcheck.store.peer_auth import new_secret, write_secret


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def free_port_block(count: int) -> int:
    """The first of ``count`` consecutive ports that are free now, below the kernel's ephemeral
    range so that no outgoing connection takes one of them before the test binds it."""
    for base in range(20000, 32000 - count, 97):
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
        return base
    raise RuntimeError(f"no {count} consecutive free ports in 20000-32000")


class LocalCluster:
    """Node processes n1..nK with their own data directories and log files, and the cluster's
    secret in ``root/secret``."""

    def __init__(self, root: Path, size: int, **settings: object) -> None:
        self.root = root
        self.ids = [f"n{i}" for i in range(1, size + 1)]
        self.ports = dict(zip(self.ids, free_ports(size), strict=True))
        self.settings = {"n": min(3, size), "w": 2, "r": 2, **settings}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.secret_file = root / "secret"
        write_secret(self.secret_file, new_secret())

    def command(self, node: str) -> list[str]:
        peers = ",".join(f"{p}=127.0.0.1:{port}" for p, port in self.ports.items() if p != node)
        return [sys.executable, "-m", "kvcheck.store", "serve", "--node-id", node,
                "--listen", f"127.0.0.1:{self.ports[node]}", "--peers", peers,
                "--data-dir", str(self.root / node), *self._flags()]

    def _flags(self) -> list[str]:
        return [*(f"--{k.replace('_', '-')}={v}" for k, v in self.settings.items()),
                "--secret-file", str(self.secret_file)]

    def start(self, node: str) -> None:
        self._spawn(node, self.command(node))

    def join(self, node: str, via: str) -> None:
        """Start a new node ``node`` that joins the running cluster through ``via``."""
        self.ids.append(node)
        self.ports[node] = free_ports(1)[0]
        self._spawn(node, [sys.executable, "-m", "kvcheck.store", "serve", "--node-id", node,
                           "--listen", f"127.0.0.1:{self.ports[node]}",
                           "--join", f"127.0.0.1:{self.ports[via]}",
                           "--data-dir", str(self.root / node), *self._flags()])

    def _spawn(self, node: str, command: list[str]) -> None:
        log = (self.root / f"{node}.log").open("ab")
        self.processes[node] = subprocess.Popen(command, stdout=log, stderr=log)

    def kill(self, node: str) -> None:
        """SIGKILL the node's process and reap it."""
        process = self.processes.pop(node)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def client(self, node: str, timeout: float = 5.0) -> StoreClient:
        return StoreClient("127.0.0.1", self.ports[node], timeout=timeout)

    def wait_ready(self, nodes: list[str] | None = None, limit: float = 30) -> None:
        """Block until every given node answers /ready with 200."""
        nodes = nodes or list(self.processes)

        async def ready(node: str) -> bool:
            try:
                async with self.client(node, timeout=1) as client:
                    return not await client.ready()
            except StoreError:
                return False

        deadline = time.monotonic() + limit
        for node in nodes:
            while not trio.run(ready, node):
                if self.processes[node].poll() is not None:
                    log = (self.root / f"{node}.log").read_text()
                    raise RuntimeError(f"{node} exited:\n{log}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{node} not ready in {limit} s")
                time.sleep(0.05)  # polling a condition with a deadline, not synchronising
