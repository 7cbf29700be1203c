"""Server processes a benchmark starts on this machine, and ends whatever happens.

Each process runs in a session of its own (a process group: a signal reaches whatever it
forks too, and a Ctrl-C meant for the benchmark does not stop it half-way), its output in
``<root>/<name>.log``. :meth:`LocalProcesses.close` SIGKILLs every group and reaps each
process, then lists what still runs in those groups; a ``with`` block closes on the way out,
whether the benchmark finished, failed or was interrupted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self


class LocalProcesses:
    """The processes started under ``root`` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        self.leftovers: list[str] = []

    def start(self, name: str, argv: Sequence[str],
              environment: Mapping[str, str] | None = None) -> None:
        """Start ``argv`` as ``name``, with ``environment`` added to this process's. Raises
        ``RuntimeError`` if the program is not installed."""
        with (self.root / f"{name}.log").open("ab") as log:
            try:
                self._running[name] = subprocess.Popen(
                    list(argv), env={**os.environ, **(environment or {})}, cwd=self.root,
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True)
            except FileNotFoundError:
                raise RuntimeError(f"{argv[0]} is not installed") from None

    def pid(self, name: str) -> int:
        """The process id of ``name``."""
        return self._running[name].pid

    def cpu_seconds(self) -> list[float]:
        """The CPU time (user + system, every thread) each process has used so far, in the
        order they were started."""
        return [_cpu_seconds(p.pid) for p in self._running.values()]

    def check_running(self) -> None:
        """Raise ``RuntimeError`` with the end of its log if a process has exited."""
        for name, popen in self._running.items():
            if popen.poll() is not None:
                raise RuntimeError(f"{name} exited with {popen.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 20) -> str:
        """The last ``lines`` lines of ``name``'s log."""
        log = (self.root / f"{name}.log").read_text(errors="replace")
        return "\n".join(log.splitlines()[-lines:])

    def close(self) -> None:
        """SIGKILL every process group started, reap each process, and record in
        :attr:`leftovers` what still runs in those groups (``pgrep -g``), saying so on stderr.
        Safe to repeat."""
        groups = [popen.pid for popen in self._running.values()]
        for popen in self._running.values():
            if popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):  # it ended in between
                    os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
        self._running.clear()
        if groups:
            found = subprocess.run(["pgrep", "-a", "-g", ",".join(map(str, groups))],
                                   capture_output=True, text=True)
            left = found.stdout.splitlines()
            if left:
                print("processes left behind:", *left, sep="\n  ", file=sys.stderr)
            self.leftovers += left

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


#: The flag of a kernel thread in ``/proc/<pid>/stat`` (``PF_KTHREAD``).
KERNEL_THREAD = 0x00200000


def machine_cpu() -> dict[int, tuple[str, float]]:
    """Every process of the machine: what kind it is, and the CPU seconds it used so far
    (:func:`cpu_used` compares two readings). The kinds: ``benchmark``, this process and its
    children (the servers, the client processes); ``kernel_threads`` (such as the writeback
    and filesystem workers that carry out the servers' writes and syncs, or anyone's);
    ``other_processes``, the rest."""
    found: dict[int, tuple[str, float]] = {}
    ours = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended in between
            continue
        pid = int(entry.name)
        if ours in (pid, int(fields[1])):
            kind = "benchmark"
        elif int(fields[6]) & KERNEL_THREAD:
            kind = "kernel_threads"
        else:
            kind = "other_processes"
        found[pid] = kind, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


def cpu_used(before: dict[int, tuple[str, float]],
             after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """The CPU seconds each kind of process used between two :func:`machine_cpu` readings.
    A process that ended in between is missing what it used since the first (an
    underestimate); one that started counts whole."""
    used = {"benchmark": 0.0, "kernel_threads": 0.0, "other_processes": 0.0}
    for pid, (kind, seconds) in after.items():
        used[kind] += seconds - before.get(pid, (kind, 0.0))[1]
    return used


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
