"""The SSH backend: each node a real host, driven from this control node over SSH, as in Jepsen.

Hosts are given in order (``--node HOST``, or ``--nodes-file``); node ``n1`` is the first,
and hosts beyond the cluster size are spares for the membership nemesis. Each host is reached
through :class:`~kvcheck.harness.ssh.Host` (the user's own OpenSSH: one multiplexed connection
per host, every command bounded in time, root directly or by ``sudo -n``), and gets what its node
needs from the control node alone (:mod:`kvcheck.harness.host_install`). A node's address is
the one the user's SSH configuration resolves the host to (``ssh -G``).

Everything kvcheck makes on a host lives under ``/var/lib/kvcheck`` (:data:`ROOT`): the venv,
the run's directory (``run/``: each process's pid file and log, the clock offset file), and
the node's data (``data/``). A path the database needs elsewhere — its data directory, a
file of a process (a secret, a configuration) — is made only where nothing is, recorded in
``ROOT/created`` (a symbolic link into ``data/`` for a data directory), and removed with the
rest; a host that already has one is refused. The faults are those of the Docker backend,
made the same way on the host:

- partition: ``iptables`` rules in chains of kvcheck's own (``KVCHECK``, ``KVCHECK-OUT``)
  jumped from INPUT and OUTPUT; each fault's heal deletes its own rules;
- kill / pause: signals to the pids in the pid files;
- clock: processes that faults apply to run under libfaketime, reading ``run/faketime``;
- packets: ``tc netem`` on the interface that reaches the other nodes where the kernel has it,
  else loss through the ``statistic`` match and bandwidth through ``tbf``;
- membership: a node joins on an empty data directory, and leaves as the database says.

Teardown — also on failure and Ctrl-C — stops every process kvcheck started, copies the logs
into the run directory (``nodes/<node>/<process>.log``), deletes the chains and queueing
disciplines it added, removes what ``ROOT/created`` lists and ``ROOT`` itself, and closes the
connections. :func:`cleanup` does the same for the hosts of an earlier run.
"""

from __future__ import annotations

import secrets
import shlex
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import trio

from kvcheck.harness.backend import BackendError
from kvcheck.harness.databases import Database, DatabaseError, Process, guard
from kvcheck.harness.docker_cluster import READY_LIMIT
from kvcheck.harness.host_install import (
    ROOT,
    VENV,
    cached_wheels,
    install_kvcheck,
    install_packages,
    required_packages,
)
from kvcheck.harness.package import Package
from kvcheck.harness.shell_faults import CHAINS, ShellFaults
from kvcheck.harness.spec import TestSpec
from kvcheck.harness.ssh import Host, SshError, SshOptions
from kvcheck.nemesis import SIMULATED_ONLY

RUN = f"{ROOT}/run"
DATA = f"{ROOT}/data"
CREATED = f"{ROOT}/created"
#: Removes what kvcheck made on a host, whatever state a run left it in.
_CLEAN = (
    f"for pid in $(cat {RUN}/*.pid 2>/dev/null); do kill -KILL $pid 2>/dev/null; done; "
    "iptables -D INPUT -j KVCHECK 2>/dev/null; iptables -F KVCHECK 2>/dev/null; "
    "iptables -X KVCHECK 2>/dev/null; iptables -D OUTPUT -j KVCHECK-OUT 2>/dev/null; "
    "iptables -F KVCHECK-OUT 2>/dev/null; iptables -X KVCHECK-OUT 2>/dev/null; "
    f"if [ -f {ROOT}/qdisc ]; then tc qdisc del dev $(cat {ROOT}/qdisc) root 2>/dev/null; fi; "
    f"if [ -f {CREATED} ]; then while read -r path; do rm -rf \"$path\"; done < {CREATED}; fi; "
    f"rm -rf {ROOT}")


class SshCluster(ShellFaults):
    """The nodes of one run of ``spec`` on ``hosts`` (module docstring)."""

    def __init__(self, spec: TestSpec, database: Database, run_id: str, run_dir: Path,
                 hosts: Sequence[str], options: SshOptions,
                 say: Callable[[str], None] = lambda line: None) -> None:
        if len(hosts) < spec.nodes:
            raise BackendError(f"{spec.nodes} nodes need as many hosts; {len(hosts)} given")
        self.spec = spec
        self.database = database
        self.run_id = run_id
        self.run_dir = run_dir
        self.options: Mapping[str, str] = dict(spec.db_options)
        self.secret = secrets.token_hex(32)
        self.nodes = list(spec.node_ids)
        self.joined: list[str] = []
        self.notes: list[str] = []
        self.say = say
        self._hosts = {f"n{i}": Host(address, options) for i, address in enumerate(hosts, 1)}
        self._ips: dict[str, str] = {}
        self._touched: set[str] = set()  # hosts kvcheck may have changed
        self._down: set[str] = set()
        self._running: dict[str, list[Process]] = {}
        self._cut_on: set[str] = set()
        self._packets_on: set[str] = set()
        self._qdisc_on: set[str] = set()
        self._delayed: set[str] = set()
        self._netem = False
        self._interface: dict[str, str] = {}
        self._faketime_lib = ""

    # -- the cluster, as the database sees it --

    @property
    def members(self) -> list[str]:
        return [*self.nodes, *self.joined]

    @property
    def down(self) -> frozenset[str]:
        return frozenset(self._down)

    def host(self, node: str) -> str:
        return self._ips[node]

    def address(self, node: str) -> str:
        """The host ``node`` runs on, as given."""
        return self._hosts[node].address

    # -- lifecycle --

    async def setup(self) -> None:
        """Prepare every host (the spares too), then start the nodes; return once they are
        ready and the cluster has settled."""
        package = Package.running() if self.database.image.kvcheck else None
        wheels = (await trio.to_thread.run_sync(cached_wheels, package, self.say)
                  if package is not None else None)
        async with trio.open_nursery() as nursery:
            for node in self._hosts:
                nursery.start_soon(self._prepare, node, wheels,
                                   package.version if package else "")
        self._netem = await self._probe_netem(self.nodes[0])
        await self._delay_between_zones(list(self._hosts))
        for node in self.nodes:
            await self._start(node)
        await self.wait_ready(self.nodes)

    async def _prepare(self, node: str, wheels: Path | None, version: str) -> None:
        host = self._hosts[node]
        try:
            await host.check()
            if await host.run(f"test -e {ROOT} && echo left || true"):
                raise SshError(f"{host.address}: {ROOT} is there from an earlier run; remove "
                               "it with kvcheck cleanup --backend ssh")
            self._touched.add(node)  # from now on, teardown cleans it
            await install_packages(host, required_packages(self.database.image.packages),
                                   self.say)
            if wheels is not None:
                await install_kvcheck(host, wheels, version)
            await host.run(f"mkdir -p {RUN} {DATA} && touch {CREATED} && echo +0 > "
                           f"{RUN}/faketime && {CHAINS}")
            for path, text in self.database.image.files.items():
                await self._claim(node, path)
                mode = 0o755 if "bin" in Path(path).parent.parts else 0o644
                await host.put(path, text.encode(), mode=mode)
            self._faketime_lib = await host.run(
                "ls /usr/lib/*/faketime/libfaketimeMT.so.1 | head -1")
            name = await trio.to_thread.run_sync(host.hostname)
            try:
                ip = (await trio.to_thread.run_sync(socket.gethostbyname, name))
            except OSError as exc:
                raise SshError(f"{host.address}: cannot resolve {name}: {exc}") from None
            self._ips[node] = ip
            self._interface[node] = await host.run(
                f"ip -o -4 addr show | awk '$4 ~ /^{ip}\\// {{print $2}}'")
            if not self._interface[node]:
                raise SshError(f"{host.address}: no interface of the host has {ip}, the "
                               "address the control node reaches it at")
            data = self.database.data_dir
            await self._claim(node, data)
            await host.run(f"mkdir -p {DATA}/{node} && ln -s {DATA}/{node} "
                           f"{shlex.quote(data)}")
        except SshError as exc:
            raise BackendError(str(exc)) from None

    async def teardown(self) -> None:
        """Stop everything, collect the logs, remove what kvcheck made on every host."""
        async with trio.open_nursery() as nursery:
            for node in list(self._hosts):
                nursery.start_soon(self._tear_down, node)

    async def _tear_down(self, node: str) -> None:
        host = self._hosts[node]
        with trio.CancelScope(shield=True):
            try:
                if node in self._touched:
                    try:
                        await self._collect_logs(node)
                    except BackendError as exc:
                        self.notes.append(f"the logs of {node} could not be copied: {exc}")
                    await host.run(_CLEAN, timeout=120)
            except SshError as exc:
                self.notes.append(f"{host.address} was not cleaned up: {exc}; run kvcheck "
                                  "cleanup --backend ssh")
            finally:
                self._touched.discard(node)
                await host.close()

    async def _collect_logs(self, node: str) -> None:
        target = self.run_dir / "nodes" / node
        target.mkdir(parents=True, exist_ok=True)
        for name in (await self._run(node, f"cd {RUN} && ls *.log 2>/dev/null || true")).split():
            (target / name).write_text(await self._run(node, f"cat {RUN}/{name}") + "\n")

    # -- the database's processes --

    async def _start(self, node: str, join: str | None = None, *,
                     only_faulty: bool = False) -> None:
        with guard(f"processes({node!r})"):
            processes = self.database.processes(node, self, join)
        self._running[node] = processes
        for process in processes:
            if only_faulty and not process.faults:
                continue
            for path, text in process.files.items():
                await self._claim(node, path)
                await self._put(node, path, text.encode(), 0o600)
            environment = {"PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                                   "/usr/bin:/sbin:/bin", **process.environment}
            if process.faults and "clock" in self.spec.nemesis:
                environment.update(LD_PRELOAD=self._faketime_lib, FAKETIME_NO_CACHE="1",
                                   FAKETIME_DONT_FAKE_MONOTONIC="1",
                                   FAKETIME_TIMESTAMP_FILE=f"{RUN}/faketime")
            pid = f"{RUN}/{process.name}.pid"
            inner = (f"echo $$ > {pid} && exec env "
                     + " ".join(shlex.quote(f"{k}={v}") for k, v in environment.items())
                     + f" {shlex.join(process.argv)} >> {RUN}/{process.name}.log 2>&1")
            await self._run(node, f"rm -f {pid}; cd {RUN} && setsid sh -c "
                                  f"{shlex.quote(inner)} < /dev/null > /dev/null 2>&1 &")
            await self._run(node, f"for i in $(seq 100); do [ -s {pid} ] && break; "
                                  "sleep 0.1; done")

    async def _claim(self, node: str, path: str) -> None:
        """Record ``path`` (outside ROOT) as kvcheck's, refusing one that is there already
        and is not; its directory is claimed too when kvcheck makes it."""
        quoted = shlex.quote(path)
        if await self._run(node, f"grep -qxF {quoted} {CREATED} && echo ours || true"):
            return
        parent = shlex.quote(str(Path(path).parent))
        refusal = f"{self.address(node)} already has {path}, which kvcheck did not make"
        await self._run(node, f"if [ -e {quoted} ] || [ -L {quoted} ]; then echo "
                              f"{shlex.quote(refusal)} >&2; exit 1; fi; [ -d {parent} ] || "
                              f"echo {parent} >> {CREATED}; echo {quoted} >> {CREATED}")

    async def wait_ready(self, nodes: Sequence[str], limit: float = READY_LIMIT) -> None:
        """Until each node is ready and the cluster has settled, as the database says."""
        with trio.move_on_after(limit):
            for node in nodes:
                while True:
                    with guard(f"ready({node!r})"):
                        if await self.database.ready(node, self):
                            break
                    if node in await self.crashed():
                        await self._collect_logs(node)
                        raise BackendError(f"a process of {node} ({self.address(node)}) exited "
                                           f"while it was starting; its log is in "
                                           f"{self.run_dir / 'nodes' / node}")
                    await trio.sleep(0.1)
            while True:
                with guard("settled()"):
                    if await self.database.settled(self):
                        return
                await trio.sleep(0.1)
        raise BackendError(f"nodes {', '.join(nodes)} did not become ready (and the cluster "
                           f"settle) in {limit:.0f} s; their logs are collected at teardown")

    async def restart(self, node: str) -> None:
        await self._start(node, only_faulty=True)
        self._down.discard(node)

    async def join(self, node: str, via: str) -> None:
        if node not in self._hosts:
            raise BackendError(f"{node} has no host: give one more host than nodes for the "
                               "membership nemesis")
        await self._run(node, f"rm -rf {DATA}/{node} && mkdir -p {DATA}/{node}")
        await self._start(node, join=via)
        self._down.discard(node)
        if node not in self.nodes and node not in self.joined:
            self.joined.append(node)
        await self.wait_ready([node])

    async def leave(self, node: str) -> None:
        try:
            await self.database.leave(node, self)
        except DatabaseError as exc:
            raise BackendError(str(exc)) from None
        await self._stop(node, "TERM", self._running.get(node, []))
        if node in self.joined:
            self.joined.remove(node)

    async def crashed(self) -> list[str]:
        crashed = []
        for node in self.members:
            if node in self._down:
                continue
            for process in self._running.get(node, []):
                code = await self._run(node, f"kill -0 $(cat {RUN}/{process.name}.pid) "
                                             "2>/dev/null && echo up || echo gone")
                if code == "gone":
                    crashed.append(node)
                    break
        return crashed

    # -- faults --

    async def set_clock(self, offsets: Mapping[str, float]) -> None:
        for node, seconds in offsets.items():
            if node in self._touched:
                await self._put(node, f"{RUN}/faketime", f"{seconds:+.3f}s\n".encode(), 0o644)

    async def fail_disks(self, nodes: Sequence[str], error: str) -> None:
        raise BackendError(f"--backend ssh cannot fail disks: {SIMULATED_ONLY['disk']}")

    async def heal_disks(self) -> None:
        """Nothing to heal: this backend never fails a disk."""

    async def cut_power(self, node: str) -> None:
        raise BackendError(f"--backend ssh cannot cut power: {SIMULATED_ONLY['power']}")

    _kernel = "a host's kernel"

    async def _shell(self, node: str, script: str) -> str:
        return await self._run(node, script)

    def _device(self, node: str) -> str:
        return self._interface[node]

    def _pid_path(self, process: Process) -> str:
        return f"{RUN}/{process.name}.pid"

    async def _qdisc_added(self, node: str) -> None:
        """Remember the interface, so that a cleanup after a crash removes the qdisc."""
        await self._run(node, f"echo {self._interface[node]} > {ROOT}/qdisc")

    async def _run(self, node: str, command: str) -> str:
        """Run ``command`` on ``node``'s host as root. Raises BackendError."""
        try:
            return await self._hosts[node].run(command)
        except SshError as exc:
            raise BackendError(str(exc)) from None

    async def _put(self, node: str, path: str, data: bytes, mode: int) -> None:
        """Write ``data`` to ``path`` on ``node``'s host. Raises BackendError."""
        try:
            await self._hosts[node].put(path, data, mode=mode)
        except SshError as exc:
            raise BackendError(str(exc)) from None


async def cleanup(hosts: Sequence[str], options: SshOptions) -> list[str]:
    """Remove what runs left on ``hosts`` (module docstring): processes, chains, queueing
    disciplines, the paths kvcheck made and ``ROOT``. Returns the hosts that had some; raises
    BackendError naming a host that cannot be reached or lacks root."""
    cleaned = []
    for address in hosts:
        host = Host(address, options)
        try:
            if await host.run(f"test -e {ROOT} && echo left || true"):
                cleaned.append(address)
            await host.run(_CLEAN, timeout=120)
        except SshError as exc:
            raise BackendError(str(exc)) from None
        finally:
            await host.close()
    return cleaned
