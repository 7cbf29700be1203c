"""The Docker backend: one bridge network and one container per node, per run.

Each container runs an idle init process; the store itself is started with ``docker exec`` so
that killing it (SIGKILL) and starting it again keeps the container — its data directory, its
network namespace and any iptables rules. Everything is named and labelled with the run id
(``org.kvcheck.run``), so runs never collide and :func:`cleanup` finds the leftovers of any run.

How each fault is made (``docs/nemesis.md`` has the why):

- partition: in the receiving node's namespace, ``iptables -A KVCHECK -s <peer> -j DROP`` in a
  chain of our own jumped from INPUT; healing flushes that chain only;
- kill / pause: ``kill -KILL`` / ``-STOP`` / ``-CONT`` of the store's pid;
- clock: the store runs under libfaketime, reading its offset from a file on the host that is
  bind-mounted into the container (``FAKETIME_NO_CACHE=1``), so a write takes effect at once and
  the host's clock is never touched;
- packets: ``tc ... netem`` where the kernel has netem; otherwise loss through iptables'
  ``statistic`` match in an OUTPUT chain of our own, and bandwidth through ``tc tbf``;
- membership: a node joins with ``kvstore serve --join`` on an emptied data directory (its
  container is created when first needed), and leaves through ``POST /leave``; once it has
  left, its store is stopped with SIGTERM.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

import docker
import docker.errors
import trio
from docker.models.containers import Container
from docker.models.networks import Network

from kvcheck.harness.backend import BackendError
from kvcheck.harness.image import faketime_env
from kvcheck.nemesis import PacketFault, PacketSupport
from kvcheck.nemesis.topology import Link
from kvcheck.store.client import RequestRejected, StoreClient, StoreError

log = logging.getLogger(__name__)

LABEL = "org.kvcheck"
RUN_LABEL = "org.kvcheck.run"
STORE_PORT = 7000
#: Inside every container: the run's per-node directory (log, pid, clock offset).
MOUNT = "/kvcheck"
DATA_DIR = "/var/lib/kvstore"
FAKETIME_FILE = f"{MOUNT}/faketime"
#: Seconds a join or a leave may take before the backend gives up on it.
CHANGE_LIMIT = 180.0
PID_FILE = f"{MOUNT}/kvstore.pid"
LOG_FILE = f"{MOUNT}/kvstore.log"

_CHAINS = (
    "iptables -N KVCHECK && iptables -I INPUT -j KVCHECK && "
    "iptables -N KVCHECK-OUT && iptables -I OUTPUT -j KVCHECK-OUT"
)


class DockerCluster:
    """A cluster of store containers for one run. See the module docstring.

    ``store_flags`` are the cluster settings passed to every ``kvstore serve``; the image is
    the store image of :mod:`kvcheck.harness.image`.
    """

    def __init__(self, client: docker.DockerClient, image: str, run_id: str,
                 nodes: Sequence[str], store_flags: Sequence[str], run_dir: Path) -> None:
        self.client = client
        self.image = image
        self.run_id = run_id
        self.nodes = list(nodes)
        #: Nodes that joined after setup and have not left.
        self.joined: list[str] = []
        self.store_flags = list(store_flags)
        self.run_dir = run_dir
        self.faketime_env = faketime_env(FAKETIME_FILE)
        self.labels = {LABEL: "1", RUN_LABEL: run_id}
        self._network: Network | None = None
        self._containers: dict[str, Container] = {}
        self._ips: dict[str, str] = {}
        self._cut_on: set[str] = set()
        self._packets_on: set[str] = set()
        self._qdisc_on: set[str] = set()
        self._netem = False
        self._down: set[str] = set()  # nodes whose store is killed

    # -- lifecycle --

    async def setup(self) -> None:
        await trio.to_thread.run_sync(self._create)
        for node in self.nodes:
            await self._start_store(node)
        await self.wait_ready(self.nodes)
        self._netem = await trio.to_thread.run_sync(self._probe_netem)

    def _create(self) -> None:
        self._network = self.client.networks.create(
            f"kvcheck-{self.run_id}", driver="bridge", labels=self.labels)
        for node in self.nodes:
            self._create_container(node)

    def _create_container(self, node: str) -> None:
        assert self._network is not None
        node_dir = self.node_dir(node)
        node_dir.mkdir(parents=True, exist_ok=True)
        self._write_offset(node, 0.0)
        container = self.client.containers.run(
            self.image, name=f"kvcheck-{self.run_id}-{node}", init=True,
            hostname=node, network=self._network.name, cap_add=["NET_ADMIN"],
            labels={**self.labels, "org.kvcheck.node": node}, detach=True,
            volumes={str(node_dir.resolve()): {"bind": MOUNT, "mode": "rw"}})
        self._containers[node] = container
        container.reload()
        self._ips[node] = container.attrs["NetworkSettings"]["Networks"][
            self._network.name]["IPAddress"]
        self.exec(node, _CHAINS)

    async def teardown(self) -> None:
        await trio.to_thread.run_sync(self._remove)

    def _remove(self) -> None:
        for node, container in list(self._containers.items()):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
            del self._containers[node]
        if self._network is not None:
            with contextlib.suppress(docker.errors.NotFound):
                self._network.remove()
            self._network = None
        for node in self._ips:
            (self.node_dir(node) / "faketime").unlink(missing_ok=True)
            (self.node_dir(node) / "kvstore.pid").unlink(missing_ok=True)

    @property
    def created(self) -> list[str]:
        """Every node that has a container, whether its store runs or not."""
        return list(self._ips)

    def node_dir(self, node: str) -> Path:
        return self.run_dir / "nodes" / node

    def address(self, node: str) -> tuple[str, int]:
        return self._ips[node], STORE_PORT

    # -- the store process --

    def _serve_command(self, node: str, join: str | None) -> str:
        """The store's command line: a new cluster of ``self.nodes``, or joining through
        ``join``. A node restarted on its data directory follows the layout saved there."""
        if join is not None:
            peering = ["--join", f"{self._ips[join]}:{STORE_PORT}"]
        else:
            peers = ",".join(f"{p}={self._ips[p]}:{STORE_PORT}" for p in self.nodes if p != node)
            peering = ["--peers", peers] if peers else []
        args = ["kvstore", "serve", "--node-id", node, "--listen", f"{self._ips[node]}:"
                f"{STORE_PORT}", "--data-dir", DATA_DIR, *peering, *self.store_flags]
        return (f"echo $$ > {PID_FILE} && exec {shlex.join(args)} >> {LOG_FILE} 2>&1")

    async def _start_store(self, node: str, join: str | None = None) -> None:
        command = self._serve_command(node, join)
        await trio.to_thread.run_sync(lambda: self._containers[node].exec_run(
            ["sh", "-c", command], detach=True, environment=self.faketime_env))

    async def wait_ready(self, nodes: Sequence[str], limit: float = 60.0) -> None:
        """Until each node answers ``/status`` and is connected to every peer whose store runs.

        Raises BackendError, with the end of each node's log, after ``limit`` seconds.
        """
        with trio.move_on_after(limit):
            for node in nodes:
                while not await self._ready(node):
                    await trio.sleep(0.1)
            return
        tails = "\n".join(f"--- {n} ---\n{self._log_tail(n)}" for n in nodes)
        raise BackendError(f"nodes {', '.join(nodes)} did not become ready in {limit:.0f} s; "
                           f"their logs end with:\n{tails}")

    async def _ready(self, node: str) -> bool:
        try:
            async with StoreClient(*self.address(node), timeout=1) as client:
                status = await client.status()
        except StoreError:
            return False
        return all(m["connected"] for m in status["membership"]
                   if m["node_id"] not in self._down and m["status"] != "left")

    def _log_tail(self, node: str, lines: int = 15) -> str:
        path = self.node_dir(node) / "kvstore.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    async def kill(self, node: str) -> None:
        await self._stop_store(node, "KILL")

    async def _stop_store(self, node: str, signal: str) -> None:
        """Send the store ``signal`` and wait until its process is gone; the node counts as
        down (its peers need not answer for it, and it has not crashed)."""
        self._down.add(node)
        await self._signal(node, signal)
        await self._exec_async(node, f"while kill -0 $(cat {PID_FILE}) 2>/dev/null; "
                                     "do sleep 0.05; done")

    async def restart(self, node: str) -> None:
        """Start the store again on the same data (see :meth:`wait_ready`)."""
        await self._start_store(node)
        self._down.discard(node)

    async def join(self, node: str, via: str) -> None:
        """Start ``node`` on an empty data directory, joining through ``via`` (its container is
        created the first time); return once it answers and reaches its peers."""
        if node not in self._containers:
            await trio.to_thread.run_sync(self._create_container, node)
        await self._exec_async(node, f"rm -rf {DATA_DIR}")
        await self._start_store(node, join=via)
        self._down.discard(node)
        await self.wait_ready([node])
        if node not in self.nodes and node not in self.joined:
            self.joined.append(node)

    async def leave(self, node: str) -> None:
        """Decommission ``node`` and stop its store once it has left. While another change is
        in progress the node refuses; ask again until it accepts. Raises BackendError after
        :data:`CHANGE_LIMIT` seconds."""
        with trio.move_on_after(CHANGE_LIMIT):
            async with StoreClient(*self.address(node), timeout=10) as client:
                while not await self._accepted_leave(node, client):
                    await trio.sleep(0.5)
                while not await self._has_left(client):
                    await trio.sleep(0.5)
            await self._stop_store(node, "TERM")
            if node in self.joined:
                self.joined.remove(node)
            return
        raise BackendError(f"{node} did not leave the cluster within {CHANGE_LIMIT:.0f} s; its "
                           f"log ends with:\n{self._log_tail(node)}")

    @staticmethod
    async def _accepted_leave(node: str, client: StoreClient) -> bool:
        """Ask ``node`` to leave: True once it accepted, False while it answers "not now"
        (409: another change is going on) or not at all. Raises BackendError when it never
        can."""
        try:
            await client.leave()
        except RequestRejected as exc:
            if exc.status != 409:
                raise BackendError(f"{node} cannot leave: {exc}") from None
            return False
        except StoreError:
            return False
        return True

    @staticmethod
    async def _has_left(client: StoreClient) -> bool:
        try:
            status = await client.status()
        except StoreError:
            return False
        me = next(m for m in status["membership"] if m["node_id"] == status["node_id"])
        return bool(me["status"] == "left")

    async def crashed(self) -> list[str]:
        """The nodes whose store should be running (the nemesis did not kill it, it has not
        left) but is not: it exited by itself."""
        def running(node: str) -> bool:
            code, _ = self._containers[node].exec_run(
                ["sh", "-c", f"kill -0 $(cat {PID_FILE})"])
            return code == 0

        return [node for node in [*self.nodes, *self.joined]
                if node not in self._down and not await trio.to_thread.run_sync(running, node)]

    async def pause(self, node: str) -> None:
        await self._signal(node, "STOP")

    async def resume(self, node: str) -> None:
        await self._signal(node, "CONT")

    async def _signal(self, node: str, signal: str) -> None:
        await self._exec_async(node, f"kill -{signal} $(cat {PID_FILE})")

    # -- faults --

    async def cut(self, links: frozenset[Link]) -> None:
        by_receiver: dict[str, list[str]] = {}
        for src, dst in sorted(links):
            by_receiver.setdefault(dst, []).append(self._ips[src])
        for node, sources in by_receiver.items():
            self._cut_on.add(node)
            await self._exec_async(node, " && ".join(
                f"iptables -A KVCHECK -s {ip} -j DROP" for ip in sources))

    async def heal(self) -> None:
        for node in sorted(self._cut_on):
            await self._exec_async(node, "iptables -F KVCHECK")
        self._cut_on.clear()

    async def set_clock(self, offsets: Mapping[str, float]) -> None:
        for node, seconds in offsets.items():
            self._write_offset(node, seconds)

    def _write_offset(self, node: str, seconds: float) -> None:
        path = self.node_dir(node) / "faketime"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(f"{seconds:+.3f}s\n")
        os.replace(temporary, path)

    def packet_support(self) -> PacketSupport:
        if self._netem:
            return PacketSupport(frozenset({"delay", "loss", "duplicate", "reorder", "rate"}))
        return PacketSupport(frozenset({"loss", "rate"}),
                             "this kernel has no netem qdisc, so packet delay, duplication and "
                             "reordering are not possible here (loss uses iptables' statistic "
                             "match, bandwidth uses tc tbf)")

    def _probe_netem(self) -> bool:
        node = self.nodes[0]
        code, _ = self._containers[node].exec_run(
            ["sh", "-c", "tc qdisc add dev eth0 root netem delay 1ms && "
                         "tc qdisc del dev eth0 root"])
        return code == 0

    async def packet_fault(self, fault: PacketFault) -> None:
        unsupported = fault.effects - self.packet_support().effects
        if unsupported:
            raise BackendError(f"cannot {', '.join(sorted(unsupported))} packets: "
                               + self.packet_support().missing_reason)
        for node in fault.nodes:
            if self._netem:
                await self._exec_async(node, f"tc qdisc add dev eth0 root {_netem(fault)}")
                self._qdisc_on.add(node)
                continue
            if fault.loss:
                await self._exec_async(node, "iptables -A KVCHECK-OUT -m statistic --mode "
                                             f"random --probability {fault.loss} -j DROP")
                self._packets_on.add(node)
            if fault.rate_kbit:
                await self._exec_async(node, f"tc qdisc add dev eth0 root tbf rate "
                                             f"{fault.rate_kbit}kbit burst 32kbit latency 400ms")
                self._qdisc_on.add(node)

    async def clear_packets(self) -> None:
        for node in sorted(self._packets_on):
            await self._exec_async(node, "iptables -F KVCHECK-OUT")
        for node in sorted(self._qdisc_on):
            await self._exec_async(node, "tc qdisc del dev eth0 root")
        self._packets_on.clear()
        self._qdisc_on.clear()

    # -- running commands in a node --

    def exec(self, node: str, script: str) -> str:
        """Run a shell command in ``node``'s container; return its output. Raises
        BackendError when it fails."""
        code, output = self._containers[node].exec_run(["sh", "-c", script])
        assert isinstance(output, bytes)  # not streamed: the whole output at once
        text = output.decode(errors="replace").strip()
        if code != 0:
            raise BackendError(f"{node}: `{script}` failed with status {code}: {text}")
        return text

    async def _exec_async(self, node: str, script: str) -> str:
        return await trio.to_thread.run_sync(self.exec, node, script)


def _netem(fault: PacketFault) -> str:
    parts = ["netem"]
    if fault.delay_ms:
        parts.append(f"delay {fault.delay_ms:.0f}ms")
        if fault.jitter_ms:
            parts.append(f"{fault.jitter_ms:.0f}ms")
    if fault.loss:
        parts.append(f"loss {fault.loss * 100:.1f}%")
    if fault.duplicate:
        parts.append(f"duplicate {fault.duplicate * 100:.1f}%")
    if fault.reorder:
        parts.append(f"reorder {fault.reorder * 100:.1f}%")
    if fault.rate_kbit:
        parts.append(f"rate {fault.rate_kbit}kbit")
    return " ".join(parts)


def cleanup(client: docker.DockerClient) -> dict[str, list[str]]:
    """Remove the containers and networks of every kvcheck run. Returns what was removed."""
    removed: dict[str, list[str]] = {"containers": [], "networks": []}
    for container in client.containers.list(all=True, filters={"label": RUN_LABEL}):
        container.remove(force=True)
        removed["containers"].append(container.name or container.short_id)
    for network in client.networks.list(filters={"label": RUN_LABEL}):
        try:
            network.remove()
        except docker.errors.APIError as exc:
            log.warning("could not remove network %s: %s", network.name, exc)
            continue
        removed["networks"].append(network.name or network.short_id)
    return removed

