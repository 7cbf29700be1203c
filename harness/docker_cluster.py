"""The Docker backend: one bridge network and one container per node, per run, for any database.

Each container runs an idle init process; the database's processes
(:class:`~kvcheck.harness.databases.Process`) are started with ``docker exec``, each writing its
pid to ``<name>.pid`` and its output to ``<name>.log`` in the node's run directory (mounted at
``/kvcheck``), so that killing them (SIGKILL) and starting them again keeps the container — its
data directory, its network namespace and any iptables rules. Everything is named and labelled
with the run id (``org.kvcheck.run``), so runs never collide and :func:`cleanup` finds the
leftovers of any run. The backend is also the database's view of the cluster
(:class:`~kvcheck.harness.databases.Cluster`).

How each fault is made (``docs/nemesis.md`` has the why):

- partition (and a zone's network outage): in the receiving node's namespace, ``iptables -A
  KVCHECK -s <peer> -j DROP`` in a chain of our own jumped from INPUT; a fault's heal deletes
  its own rules (``-D``), the final heal flushes that chain;
- kill / pause: ``kill -KILL`` / ``-STOP`` / ``-CONT`` of the pids of the node's processes that
  faults apply to (``Process.faults``);
- clock: those processes run under libfaketime (where the database can undergo clock faults),
  reading their offset from a file on the host that is bind-mounted into the container
  (``FAKETIME_NO_CACHE=1``), so a write takes effect at once and the host's clock is never
  touched;
- packets: ``tc ... netem`` where the kernel has netem; otherwise loss through iptables'
  ``statistic`` match in an OUTPUT chain of our own, and bandwidth through ``tc tbf``;
- distance between zones (``--zone-latency-ms``): where the kernel has netem, a ``prio`` root
  queueing discipline whose netem band the packets to other zones' nodes are filtered into
  (:func:`~kvcheck.harness.shell_faults.zone_delay_script`); elsewhere the run notes that
  there is no such delay;
- membership: a node joins with the processes the database gives for a joining node, on an
  emptied data directory (its container is created when first needed), and leaves as the
  database says (:meth:`~kvcheck.harness.databases.Database.leave`); once it has left, its
  processes are stopped with SIGTERM.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import secrets
import shlex
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import docker
import docker.errors
import trio
from docker.models.containers import Container
from docker.models.networks import Network

from kvcheck.harness.backend import BackendError
from kvcheck.harness.databases import Database, DatabaseError, Process, guard
from kvcheck.harness.image import faketime_env
from kvcheck.harness.shell_faults import CHAINS, ShellFaults
from kvcheck.harness.spec import TestSpec
from kvcheck.nemesis import SIMULATED_ONLY

log = logging.getLogger(__name__)

LABEL = "org.kvcheck"
RUN_LABEL = "org.kvcheck.run"
#: Inside every container: the run's per-node directory (logs, pids, clock offset).
MOUNT = "/kvcheck"
FAKETIME_FILE = f"{MOUNT}/faketime"
#: Seconds nodes may take to become ready (and the cluster to settle) before the run stops.
READY_LIMIT = 60.0



class DockerCluster(ShellFaults):
    """A cluster of ``database`` containers for one run of ``spec``. See the module docstring.

    ``image`` is the database's node image (:mod:`kvcheck.harness.image`).
    """

    def __init__(self, client: docker.DockerClient, image: str, run_id: str, spec: TestSpec,
                 database: Database, run_dir: Path) -> None:
        self.client = client
        self.image = image
        self.run_id = run_id
        self.secret = secrets.token_hex(32)
        self.spec = spec
        self.database = database
        self.options: Mapping[str, str] = dict(spec.db_options)
        self.nodes = list(spec.node_ids)
        #: Nodes that joined after setup and have not left.
        self.joined: list[str] = []
        self.run_dir = run_dir
        self.labels = {LABEL: "1", RUN_LABEL: run_id}
        self._clock = "clock" in spec.nemesis  # processes run under libfaketime only then
        self._network: Network | None = None
        self._containers: dict[str, Container] = {}
        self._ips: dict[str, str] = {}
        self._cut_on: set[str] = set()
        self._packets_on: set[str] = set()
        self._qdisc_on: set[str] = set()
        self._netem = False
        self._down: set[str] = set()  # nodes whose processes are stopped (killed, left)
        self._delayed: set[str] = set()  # nodes whose packets to other zones are delayed
        #: What the run could not do as asked, in a sentence each (the run reports them).
        self.notes: list[str] = []
        self._running: dict[str, list[Process]] = {}  # what was started on each node

    # -- the cluster, as the database sees it --

    @property
    def members(self) -> list[str]:
        return [*self.nodes, *self.joined]

    @property
    def down(self) -> frozenset[str]:
        return frozenset(self._down)

    def host(self, node: str) -> str:
        return self._ips[node]

    # -- lifecycle --

    async def setup(self) -> None:
        await trio.to_thread.run_sync(self._create)
        self._netem = await self._probe_netem(self.nodes[0])
        await self._delay_between_zones(self.nodes)
        for node in self.nodes:
            await self._start(node)
        await self.wait_ready(self.nodes)

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
        self.exec(node, CHAINS)

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
            for pid in self.node_dir(node).glob("*.pid"):
                pid.unlink()

    @property
    def created(self) -> list[str]:
        """Every node that has a container, whether its processes run or not."""
        return list(self._ips)

    def node_dir(self, node: str) -> Path:
        return self.run_dir / "nodes" / node

    # -- the database's processes --

    async def _start(self, node: str, join: str | None = None, *,
                     only_faulty: bool = False) -> None:
        """Start ``node``'s processes (a restart: only those faults apply to)."""
        with guard(f"processes({node!r})"):
            processes = self.database.processes(node, self, join)
        self._running[node] = processes
        for process in processes:
            if only_faulty and not process.faults:
                continue
            if process.files:
                await trio.to_thread.run_sync(self._write_files, node, process.files)
            environment = dict(process.environment)
            if process.faults and self._clock:
                environment.update(faketime_env(FAKETIME_FILE))
            command = (f"echo $$ > {_pid_file(process)} && exec {shlex.join(process.argv)} "
                       f">> {MOUNT}/{process.name}.log 2>&1")
            pid = self.node_dir(node) / f"{process.name}.pid"  # the same file, seen from here
            pid.unlink(missing_ok=True)
            await trio.to_thread.run_sync(functools.partial(
                self._containers[node].exec_run, ["sh", "-c", command], detach=True,
                environment=environment))
            with trio.move_on_after(10):  # so that a process that exits is told from one
                while not pid.exists():   # that has not started yet
                    await trio.sleep(0.01)

    def _write_files(self, node: str, files: Mapping[str, str]) -> None:
        """Write ``files`` (absolute path → content) into the node's container, mode 0600."""
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            for path, content in files.items():
                data = content.encode()
                info = tarfile.TarInfo(path.lstrip("/"))
                info.size, info.mode = len(data), 0o600
                tar.addfile(info, io.BytesIO(data))
        if not self._containers[node].put_archive("/", archive.getvalue()):
            raise BackendError(f"{node}: could not write {', '.join(files)}")

    async def wait_ready(self, nodes: Sequence[str], limit: float = READY_LIMIT) -> None:
        """Until each node is ready and the cluster has settled, as the database says.

        Raises BackendError, with the end of each node's logs, after ``limit`` seconds.
        """
        what = "did not become ready"
        with trio.move_on_after(limit):
            for node in nodes:
                while not await self._ready(node):
                    await self._check_running(nodes)
                    await trio.sleep(0.1)
            what = "became ready, but the cluster did not settle"
            while True:
                with guard("settled()"):
                    if await self.database.settled(self):
                        return
                await trio.sleep(0.1)
        tails = "\n".join(f"--- {n} ---\n{self._log_tails(n)}" for n in nodes)
        raise BackendError(f"nodes {', '.join(nodes)} {what} in {limit:.0f} s; their logs end "
                           f"with:\n{tails}")

    async def _ready(self, node: str) -> bool:
        with guard(f"ready({node!r})"):
            return bool(await self.database.ready(node, self))

    async def _check_running(self, nodes: Sequence[str]) -> None:
        """Raise BackendError, with the logs, if a process of ``nodes`` that should be
        running has exited (a bad flag, a missing program): waiting longer would not help."""
        if stopped := [n for n in await self.crashed() if n in nodes]:
            tails = "\n".join(f"--- {n} ---\n{self._log_tails(n)}" for n in stopped)
            raise BackendError(f"a process of {', '.join(stopped)} exited while it was "
                               f"starting; the logs end with:\n{tails}")

    def _log_tails(self, node: str, lines: int = 15) -> str:
        logs = sorted(self.node_dir(node).glob("*.log"))
        if not logs:
            return "(no log)"
        return "\n".join(f"{log.name}:\n" + "\n".join(
            log.read_text(errors="replace").splitlines()[-lines:]) for log in logs)

    async def restart(self, node: str) -> None:
        """Start the node's processes that faults apply to again, on the same data (see
        :meth:`wait_ready`)."""
        await self._start(node, only_faulty=True)
        self._down.discard(node)

    async def join(self, node: str, via: str) -> None:
        """Start ``node`` on an empty data directory, joining through ``via`` (its container is
        created the first time); return once it is ready."""
        if node not in self._containers:
            await trio.to_thread.run_sync(self._create_container, node)
            await self._delay_between_zones([node])
        await self._exec_async(node, f"rm -rf {shlex.quote(self.database.data_dir)}")
        await self._start(node, join=via)
        self._down.discard(node)
        if node not in self.nodes and node not in self.joined:
            self.joined.append(node)
        await self.wait_ready([node])

    async def leave(self, node: str) -> None:
        """Decommission ``node`` as the database says, then stop its processes. Raises
        BackendError when the database cannot."""
        try:
            await self.database.leave(node, self)
        except DatabaseError as exc:
            raise BackendError(f"{exc}; its logs end with:\n{self._log_tails(node)}") from None
        await self._stop(node, "TERM", self._running.get(node, []))
        if node in self.joined:
            self.joined.remove(node)

    async def crashed(self) -> list[str]:
        """The nodes with a process that should be running (the nemesis did not stop it, the
        node has not left) but is not: it exited by itself."""
        def running(node: str, process: Process) -> bool:
            code, _ = self._containers[node].exec_run(
                ["sh", "-c", f"kill -0 $(cat {_pid_file(process)})"])
            return code == 0

        crashed = []
        for node in self.members:
            if node in self._down:
                continue
            for process in self._running.get(node, []):
                if not await trio.to_thread.run_sync(running, node, process):
                    crashed.append(node)
                    break
        return crashed

    async def set_clock(self, offsets: Mapping[str, float]) -> None:
        for node, seconds in offsets.items():
            self._write_offset(node, seconds)

    def _write_offset(self, node: str, seconds: float) -> None:
        path = self.node_dir(node) / "faketime"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(f"{seconds:+.3f}s\n")
        os.replace(temporary, path)

    async def fail_disks(self, nodes: Sequence[str], error: str) -> None:
        raise BackendError(f"--backend docker cannot fail disks: {SIMULATED_ONLY['disk']}")

    async def heal_disks(self) -> None:
        """Nothing to heal: this backend never fails a disk."""

    async def cut_power(self, node: str) -> None:
        raise BackendError(f"--backend docker cannot cut power: {SIMULATED_ONLY['power']}")

    # -- running commands in a node --

    async def _shell(self, node: str, script: str) -> str:
        return await self._exec_async(node, script)

    def _device(self, node: str) -> str:
        return "eth0"

    def _pid_path(self, process: Process) -> str:
        return _pid_file(process)

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


def _pid_file(process: Process) -> str:
    return f"{MOUNT}/{process.name}.pid"


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

