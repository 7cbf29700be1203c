"""A cluster of any database adapter's real processes on this machine, for integration tests.

:class:`LoopbackCluster` implements the :class:`~kvcheck.harness.databases.interface.Cluster`
protocol as the Docker backend does, without containers. Node ``nI`` is reached at
``127.A.B.I``: Linux routes all of 127.0.0.0/8 to the loopback interface, so every node listens
on the database's usual ports, and ``A.B`` is drawn per cluster so that clusters of concurrent
tests (or a server already on 127.0.0.1) do not collide. Each of the adapter's
:class:`~kvcheck.harness.databases.interface.Process` es runs as a subprocess in a session of
its own (a process group: a signal reaches the children it forks too), its output in
``<root>/<node>/<process>.log``; wherever the adapter names :attr:`Database.data_dir` in an
argument or an environment value, the node's own ``<root>/<node>/data`` stands in for it, and
where it names a file of its image (:attr:`NodeImage.files`), a copy in ``<root>/image/`` does,
and where it names a file of the process (:attr:`Process.files`), the node's copy in
``<root>/<node>/files/`` (mode 0600) does.

Faults act as the backend's do, on the processes marked ``faults``: :meth:`kill` (SIGKILL),
:meth:`pause` and :meth:`resume` (SIGSTOP, SIGCONT); :meth:`start` starts a node again on its
data. :meth:`close` kills every process group the cluster started and waits for each;
:meth:`leftovers` lists what still runs in those groups (found by group, since a program may
rewrite its command line, as Redis does).
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from kvcheck.harness.databases.interface import Database, Process
from kvcheck.harness.spec import TestSpec


class LoopbackCluster:
    """``size`` nodes of the database ``db`` (as ``--db`` names it) with ``options`` (its
    defaults filled in), under ``root``; ``settings`` are the test's (:class:`TestSpec`
    fields, such as ``workload`` or ``op_timeout``)."""

    def __init__(self, db: str, root: Path, size: int = 3, *,
                 options: Mapping[str, str] | None = None, **settings: Any) -> None:
        self.root = root
        self.spec = TestSpec(**{"name": "loopback", "db": db,
                                "db_options": tuple((options or {}).items()), "nodes": size,
                                "n": min(3, size), "w": min(2, size), "r": min(2, size),
                                "nemesis": (), **settings})
        self.options: Mapping[str, str] = dict(self.spec.db_options)
        self.database: Database = self.spec.database
        self.run_id = f"loopback-{os.getpid()}-{random.randrange(1 << 32):08x}"
        self.secret = secrets.token_hex(32)
        subnet = f"127.{random.randrange(1, 255)}.{random.randrange(256)}"
        self._hosts = {node: f"{subnet}.{i}" for i, node in enumerate(self.spec.node_ids, 1)}
        self._running: dict[str, list[tuple[Process, subprocess.Popen[bytes]]]] = {}
        self._groups: list[int] = []
        self._down: set[str] = set()
        self._files = {path: root / "image" / path.lstrip("/")
                       for path in self.database.image.files}

    # -- the Cluster protocol --

    @property
    def members(self) -> Sequence[str]:
        return self.spec.node_ids

    @property
    def down(self) -> frozenset[str]:
        return frozenset(self._down)

    def host(self, node: str) -> str:
        return self._hosts[node]

    # -- running and breaking nodes --

    def start(self, *nodes: str) -> None:
        """Start the processes of ``nodes`` (every node if none is named) that do not run, on
        their data. Fails the test, naming the Debian packages of the database's image, when
        a program is not installed."""
        for path, copy in self._files.items():
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text(self.database.image.files[path])
        for node in nodes or self.members:
            folder = self.root / node
            (folder / "data").mkdir(parents=True, exist_ok=True)
            running = [(p, popen) for p, popen in self._running.get(node, [])
                       if popen.poll() is None]
            names = {p.name for p, _ in running}
            for process in self.database.processes(node, self):
                if process.name not in names:
                    running.append((process, self._spawn(node, process)))
            self._running[node] = running
            self._down.discard(node)

    def _spawn(self, node: str, process: Process) -> subprocess.Popen[bytes]:
        for path, content in process.files.items():
            copy = self._process_file(node, path)
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.touch(mode=0o600)
            copy.write_text(content)
        argv = [self._localize(node, arg, process) for arg in process.argv]
        if shutil.which(argv[0]) is None:
            pytest.fail(f"{argv[0]} is not installed{self._packages_hint()}")
        environment = {k: self._localize(node, v, process)
                       for k, v in process.environment.items()}
        with (self.root / node / f"{process.name}.log").open("ab") as log:
            popen = subprocess.Popen(argv, env={**os.environ, **environment},
                                     cwd=self.root / node, stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self._groups.append(popen.pid)
        return popen

    def pids(self, node: str, *, faults: bool = True) -> list[int]:
        """The running processes of ``node`` that undergo faults (or those that do not)."""
        return [popen.pid for process, popen in self._running.get(node, [])
                if process.faults == faults and popen.poll() is None]

    def kill(self, node: str) -> None:
        """SIGKILL the node's processes that undergo faults, and wait for them to die."""
        for process, popen in self._running.get(node, []):
            if process.faults:
                self._end(popen)
        self._down.add(node)

    def pause(self, node: str) -> None:
        """SIGSTOP the node's processes that undergo faults."""
        self._signal(node, signal.SIGSTOP)

    def resume(self, node: str) -> None:
        """SIGCONT the node's processes that undergo faults."""
        self._signal(node, signal.SIGCONT)

    def close(self) -> None:
        """Kill every process the cluster started, and wait for each. Safe to repeat."""
        for running in self._running.values():
            for _, popen in running:
                self._end(popen)
        self._running.clear()

    def leftovers(self) -> list[str]:
        """What still runs in the process groups the cluster started (``pgrep -g``). Zombies
        do not count: a child a killed server had forked (Redis forks to write its files) is
        dead, and waits for init to reap it."""
        if not self._groups:
            return []
        found = subprocess.run(["pgrep", "-a", "--runstates", "D,I,R,S,T,t",
                                "-g", ",".join(map(str, self._groups))],
                               capture_output=True, text=True)
        return found.stdout.splitlines()

    # -- waiting --

    async def wait_ready(self, limit: float = 60.0, nodes: Sequence[str] = ()) -> None:
        """Wait until ``nodes`` (every running node if none is named) are ready and the
        cluster has settled, as the backend does; fail with the logs of what is not, or at once
        if a process exits."""
        waiting = list(nodes) or [n for n in self.members if n not in self._down]
        with trio.move_on_after(limit):
            while True:
                self._check_alive()
                ready = [await self.database.ready(n, self) for n in waiting]
                if all(ready) and await self.database.settled(self):
                    return
                await trio.sleep(0.2)  # polling a condition under a deadline
        late = [n for n, r in zip(waiting, ready, strict=True) if not r] or waiting
        raise AssertionError(f"not ready after {limit} s: {', '.join(late)}\n"
                             + self.tails(late))

    def tails(self, nodes: Sequence[str] = (), lines: int = 20) -> str:
        """The last lines of the logs of ``nodes`` (every node if none is named)."""
        parts = []
        for node in nodes or self.members:
            for log in sorted((self.root / node).glob("*.log")):
                text = log.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {log}\n" + "\n".join(text))
        return "\n".join(parts)

    def _check_alive(self) -> None:
        for node, running in self._running.items():
            for process, popen in running:
                if node not in self._down and popen.poll() is not None:
                    # 127: the shell found no such program
                    hint = self._packages_hint() if popen.returncode == 127 else ""
                    raise AssertionError(f"{node}'s {process.name} exited with "
                                         f"{popen.returncode}{hint}\n" + self.tails([node]))

    def _packages_hint(self) -> str:
        packages = " ".join(self.database.image.packages)
        return (f": {self.database.name} needs the Debian packages {packages} "
                f"(apt-get install {packages})")

    def _signal(self, node: str, signum: signal.Signals) -> None:
        for process, popen in self._running.get(node, []):
            if process.faults and popen.poll() is None:
                os.killpg(popen.pid, signum)

    @staticmethod
    def _end(popen: subprocess.Popen[bytes]) -> None:
        """SIGKILL the process's whole group (a stopped process dies too) and reap it."""
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it ended in between
                os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()

    def _localize(self, node: str, text: str, process: Process) -> str:
        for path, copy in self._files.items():
            text = text.replace(path, str(copy))
        for path in process.files:
            text = text.replace(path, str(self._process_file(node, path)))
        return text.replace(self.database.data_dir, str(self.root / node / "data"))

    def _process_file(self, node: str, path: str) -> Path:
        return self.root / node / "files" / path.lstrip("/")


@contextmanager
def loopback_cluster(db: str, root: Path, size: int = 3,
                     **kwargs: Any) -> Iterator[LoopbackCluster]:
    """A started :class:`LoopbackCluster`; on exit, every process it started is killed, and
    the test fails if any is left."""
    cluster = LoopbackCluster(db, root, size, **kwargs)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
        left = cluster.leftovers()
        assert not left, f"processes left behind: {left}"
