"""A cluster of any database adapter's real processes on this machine, for integration tests.

:class:`LoopbackCluster` implements the :class:`~kvcheck.harness.databases.interface.Cluster`
protocol the way the Docker backend does, without containers: node ``nI`` is reached at
``127.A.B.I`` (Linux routes all of 127.0.0.0/8 to the loopback interface, so every node can
listen on the database's usual ports; ``A.B`` is drawn per cluster, so clusters of concurrent
tests, or a database already serving on 127.0.0.1, do not collide), and each of the adapter's
:class:`~kvcheck.harness.databases.interface.Process` es runs as a subprocess, its output in
``<root>/<node>/<process>.log``. Where the adapter names its :attr:`Database.data_dir` in an
argument or an environment value, the node's own ``<root>/<node>/data`` stands in for it; where
it names a file of its image (:attr:`NodeImage.files`), a copy in ``<root>/image/`` does.

Faults act as the backend's do, on the processes marked ``faults``: :meth:`kill` (SIGKILL),
:meth:`pause` and :meth:`resume` (SIGSTOP, SIGCONT); :meth:`start` starts a node again on its
data. :meth:`close` kills everything; :meth:`leftovers` finds any process still running with the
cluster's directory in its command line.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import trio

from kvcheck.harness.databases.interface import Database, Process
from kvcheck.harness.spec import TestSpec, Workload


class LoopbackCluster:
    """``size`` nodes of the database ``db`` (as ``--db`` names it) with ``options`` (its
    defaults filled in), under ``root``."""

    def __init__(self, db: str, root: Path, size: int = 3, *, workload: Workload = "register",
                 options: Mapping[str, str] | None = None) -> None:
        self.root = root
        quorum = min(2, size)
        self.spec = TestSpec(name="loopback", db=db, db_options=tuple((options or {}).items()),
                             nodes=size, n=min(3, size), w=quorum, r=quorum, nemesis=(),
                             workload=workload)
        self.options = dict(self.spec.db_options)
        self.database: Database = self.spec.database
        self.run_id = f"loopback-{os.getpid()}-{random.randrange(1 << 32):08x}"
        subnet = f"127.{random.randrange(1, 255)}.{random.randrange(0, 256)}"
        self._hosts = {node: f"{subnet}.{i}" for i, node in enumerate(self.spec.node_ids, 1)}
        self._processes: dict[str, list[tuple[Process, subprocess.Popen[bytes]]]] = {}
        self._down: set[str] = set()
        self._files = {path: root / "image" / path.lstrip("/")
                       for path in self.database.image.files}

    # -- the Cluster protocol ----------------------------------------------------------------

    @property
    def members(self) -> Sequence[str]:
        return self.spec.node_ids

    @property
    def down(self) -> frozenset[str]:
        return frozenset(self._down)

    def host(self, node: str) -> str:
        return self._hosts[node]

    # -- running and breaking nodes ----------------------------------------------------------

    def start(self, *nodes: str) -> None:
        """Start ``nodes`` (all of them if none are named) on their data directories. Raises
        ``FileNotFoundError`` naming the Debian packages of the database's image when a
        program is not installed."""
        for path, copy in self._files.items():
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text(self.database.image.files[path])
        for node in nodes or self.members:
            directory = self.root / node
            (directory / "data").mkdir(parents=True, exist_ok=True)
            started = []
            for process in self.database.processes(node, self):
                argv = [self._localize(node, arg) for arg in process.argv]
                if shutil.which(argv[0]) is None:
                    packages = " ".join(self.database.image.packages)
                    raise FileNotFoundError(
                        f"{argv[0]} is not installed: {self.database.name} needs the Debian "
                        f"package(s) {packages} (apt-get install {packages})")
                environment = {k: self._localize(node, v) for k, v in process.environment.items()}
                with (directory / f"{process.name}.log").open("ab") as log:
                    popen = subprocess.Popen(argv, env={**os.environ, **environment},
                                             stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)
                started.append((process, popen))
            running = [(p, popen) for p, popen in self._processes.get(node, [])
                       if popen.poll() is None]
            self._processes[node] = running + started
            self._down.discard(node)

    def kill(self, node: str) -> None:
        """SIGKILL the node's processes that undergo faults, and wait for them to die."""
        for process, popen in self._processes.get(node, []):
            if process.faults:
                popen.send_signal(signal.SIGCONT)
                popen.kill()
                popen.wait()
        self._down.add(node)

    def pause(self, node: str) -> None:
        self._signal(node, signal.SIGSTOP)

    def resume(self, node: str) -> None:
        self._signal(node, signal.SIGCONT)

    def close(self) -> None:
        """Kill every process the cluster started, and wait for each."""
        for started in self._processes.values():
            for _, popen in started:
                if popen.poll() is None:
                    popen.send_signal(signal.SIGCONT)
                    popen.kill()
                popen.wait()
        self._processes.clear()

    def leftovers(self) -> list[str]:
        """Processes still running with this cluster's directory in their command line."""
        found = subprocess.run(["pgrep", "-a", "-f", "--", str(self.root)],
                               capture_output=True, text=True)
        return found.stdout.splitlines()

    # -- waiting ----------------------------------------------------------------------------

    async def wait_ready(self, limit: float = 30.0, nodes: Sequence[str] = ()) -> None:
        """Wait until ``nodes`` (every running node if none are named) are ready and the
        cluster has settled, as the backend does; fail with the logs of what is not, or at
        once if a process exits."""
        waiting = list(nodes) or [n for n in self.members if n not in self._down]
        deadline = trio.current_time() + limit
        while True:
            self._check_alive()
            ready = [await self.database.ready(n, self) for n in waiting]
            if all(ready) and await self.database.settled(self):
                return
            if trio.current_time() > deadline:
                late = [n for n, r in zip(waiting, ready, strict=True) if not r] or waiting
                raise AssertionError(f"not ready after {limit} s: {', '.join(late)}\n"
                                     + self._tails(late))
            await trio.sleep(0.1)  # polling a condition under a deadline

    def _check_alive(self) -> None:
        for node, started in self._processes.items():
            for process, popen in started:
                if node not in self._down and popen.poll() is not None:
                    raise AssertionError(f"{node}'s {process.name} exited with "
                                         f"{popen.returncode}\n" + self._tails([node]))

    def _tails(self, nodes: Sequence[str], lines: int = 15) -> str:
        tails = []
        for node in nodes:
            for log in sorted((self.root / node).glob("*.log")):
                text = log.read_text(errors="replace").splitlines()[-lines:]
                tails.append(f"--- {log}\n" + "\n".join(text))
        return "\n".join(tails)

    def _signal(self, node: str, signum: signal.Signals) -> None:
        for process, popen in self._processes.get(node, []):
            if process.faults:
                popen.send_signal(signum)

    def _localize(self, node: str, text: str) -> str:
        for path, copy in self._files.items():
            text = text.replace(path, str(copy))
        return text.replace(self.database.data_dir, str(self.root / node / "data"))

