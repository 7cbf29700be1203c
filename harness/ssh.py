"""Commands on a real host over SSH, as Jepsen's control node runs them.

A :class:`Host` runs each command through the system's OpenSSH client, so the user's
``~/.ssh/config``, SSH agent and known hosts apply exactly as they do to ``ssh`` itself;
``--ssh-user``, ``--ssh-key`` and ``--ssh-port`` (:class:`SshOptions`) only add to them. The
first command opens one master connection per host (``ControlMaster``, its socket in a private
directory of the caller's, kept open by ``ControlPersist``), and every later command rides on
it: no handshake per command. :meth:`Host.close` ends it.

Every command has a timeout, enforced twice: on the host, ``timeout`` (coreutils) kills the
command (and, a second later, anything it left); here, the client is killed a few seconds
after. Commands run as root — directly when the user is root, else through ``sudo -n`` —
because the faults need it (iptables, tc, signals, files under ``/var/lib``);
:meth:`Host.check` says plainly what is missing on a host that cannot.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import trio

#: Seconds the client waits beyond a command's own timeout before it gives up on the host.
_GRACE_S = 5.0
#: What OpenSSH says when it could not run a command at all (it exits 255 then, as a command
#: may too).
_SSH_FAILURES = re.compile(r"^ssh: |Permission denied|Host key verification failed|"
                           r"kex_exchange_identification|Connection closed by|"
                           r"Connection timed out|No route to host", re.MULTILINE)


class SshError(Exception):
    """A host could not be reached, refused, or a command on it failed or timed out; the
    message names the host and says what to do."""


@dataclass(frozen=True, slots=True)
class SshOptions:
    """How to reach the hosts, on top of the user's own SSH configuration: ``user``, ``key``
    (an identity file), ``port``; ``config`` replaces ``~/.ssh/config`` (``ssh -F``)."""

    user: str | None = None
    key: Path | None = None
    port: int | None = None
    config: Path | None = None
    connect_timeout: float = 10.0

    @classmethod
    def given(cls, user: str = "", key: str = "", port: int = 0, config: str = ""
              ) -> SshOptions:
        """The options as the command line gives them (empty, 0: not given)."""
        return cls(user=user or None, key=Path(key) if key else None, port=port or None,
                   config=Path(config) if config else None)


class Host:
    """One host, reached as ``address`` (a name, an address, or a ``~/.ssh/config`` alias).

    The master connection's socket lives in a private directory of its own under ``/tmp``
    (a Unix socket's path is limited to about 100 bytes), removed by :meth:`close`.
    """

    def __init__(self, address: str, options: SshOptions) -> None:
        if not address or address.startswith("-") or any(c.isspace() for c in address):
            raise SshError(f"{address!r} is not a host name or address")
        self.address = address
        self.options = options
        self.control_dir = Path(tempfile.mkdtemp(
            prefix="kvcheck-ssh-", dir="/tmp" if os.path.isdir("/tmp") else None))
        self._root: bool | None = None  # whether the user is root (None: not checked yet)

    def argv(self, *remote: str) -> list[str]:
        """The ``ssh`` command line that runs ``remote`` on this host, multiplexed."""
        return ["ssh", *self._options(), "--", self.address, *remote]

    def _options(self) -> list[str]:
        options = self.options
        argv = ["-o", "BatchMode=yes", "-o", "ControlMaster=auto",
                "-o", f"ControlPath={self.control_dir}/%C", "-o", "ControlPersist=600",
                "-o", f"ConnectTimeout={math.ceil(options.connect_timeout)}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
        if options.config is not None:
            argv += ["-F", str(options.config)]
        if options.user:
            argv += ["-l", options.user]
        if options.port:
            argv += ["-p", str(options.port)]
        if options.key is not None:
            argv += ["-i", str(options.key), "-o", "IdentitiesOnly=yes"]
        return argv

    def hostname(self) -> str:
        """The name or address the host is reached at, as the SSH configuration resolves
        ``address`` (an alias's ``HostName``): ``ssh -G``."""
        shown = subprocess.run(["ssh", *self._options(), "-G", "--", self.address],
                               capture_output=True, text=True, check=False).stdout
        names = [line.split()[1] for line in shown.splitlines() if line.startswith("hostname ")]
        return names[0] if names else self.address

    async def run(self, command: str, *, timeout: float = 60.0, stdin: bytes = b"",
                  check: bool = True) -> str:
        """Run the shell ``command`` on the host as root; return its output (stdout, stripped).

        Raises SshError when the host cannot be reached, when the command does not finish
        within ``timeout`` seconds (it is killed there), or — with ``check`` — when it exits
        with another status than 0 (the message has its status and output).
        """
        if self._root is None:
            await self.check()
        code, out, err = await self._ssh(self._as_root(command), timeout, stdin)
        if code == 124:
            raise SshError(f"{self.address}: `{command}` did not finish within {timeout:g} s; "
                           "it was killed")
        if check and code != 0:
            detail = (err or out).strip()[-2000:]
            raise SshError(f"{self.address}: `{command}` failed with status {code}: {detail}")
        return out.strip()

    async def put(self, path: str, data: bytes, *, mode: int = 0o644,
                  timeout: float = 60.0) -> None:
        """Write ``data`` to ``path`` on the host (its directory made), replacing it at once
        (a temporary file renamed). Raises SshError."""
        target = shlex.quote(path)
        temporary = shlex.quote(f"{path}.kvcheck-tmp")
        await self.run(f"mkdir -p $(dirname {target}) && cat > {temporary} && "
                       f"chmod {mode:o} {temporary} && mv -f {temporary} {target}",
                       timeout=timeout, stdin=data)

    async def check(self) -> None:
        """Connect, and find out how commands get root: the user is root, or may ``sudo``
        without a password. Raises SshError naming the host and what is missing."""
        code, out, err = await self._ssh("id -u", self.options.connect_timeout + 10, b"")
        if code != 0:  # every command runs under `timeout`: a host without it fails here
            problem = (err or out).strip().splitlines()[-1:] or ["no answer"]
            if "not found" in problem[0]:
                raise SshError(f"{self.address}: the host has no `timeout` command "
                               "(coreutils): kvcheck needs it to bound every command")
            raise SshError(f"{self.address}: cannot run a command over SSH: {problem[0]}")
        self._root = out.strip() == "0"
        if not self._root:
            code, _, err = await self._ssh("sudo -n true", 30.0, b"")
            if code != 0:
                raise SshError(f"{self.address}: the user is not root and cannot sudo without "
                               f"a password ({err.strip() or 'sudo failed'}); kvcheck needs "
                               "root on each host for iptables, tc, signals and its files: "
                               "log in as root (--ssh-user root) or allow passwordless sudo")

    async def close(self) -> None:
        """End the master connection, if one is open, and remove its directory."""
        with trio.move_on_after(10):
            await trio.run_process(["ssh", *self._options(), "-O", "exit", "--", self.address],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   check=False)
        shutil.rmtree(self.control_dir, ignore_errors=True)

    def _as_root(self, command: str) -> str:
        prefix = "" if self._root else "sudo -n "
        return f"{prefix}sh -c {shlex.quote(command)}"

    async def _ssh(self, command: str, timeout: float, stdin: bytes) -> tuple[int, str, str]:
        """Run ``command`` under ``timeout`` on the host; return status, output and errors.
        Raises SshError when the host cannot be reached or does not answer in time."""
        remote = f"timeout --kill-after=1 {timeout:g} sh -c {shlex.quote(command)}"
        with trio.move_on_after(timeout + _GRACE_S):
            done = await trio.run_process(self.argv(remote), stdin=stdin, capture_stdout=True,
                                          capture_stderr=True, check=False)
            out = done.stdout.decode(errors="replace")
            err = done.stderr.decode(errors="replace")
            if done.returncode == 255 and _SSH_FAILURES.search(err):  # it never ran
                reason = err.strip().splitlines()[-1]
                raise SshError(f"{self.address}: cannot connect over SSH: {reason}")
            return done.returncode, out, err
        raise SshError(f"{self.address}: no answer over SSH within {timeout + _GRACE_S:g} s")
