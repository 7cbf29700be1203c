"""Hosts for the SSH tests: containers that run an SSH server and nothing of kvcheck's, on an
internal network of their own (the control node reaches them; they reach nothing beyond it, no
package index either), reached with a key made for the test — as real hosts are.

The image is built like a node image, offline but for Debian's packages (kvcheck's Debian base,
``openssh-server`` and ``sudo``); each container runs ``sshd -D`` with ``NET_ADMIN`` (for
iptables and tc, as a real host's root has). ``root`` logs in with the key; so does ``plain``,
a user that may not sudo.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.models.containers import Container

from kvcheck.harness.databases import Database, NodeImage
from kvcheck.harness.engine import connect
from kvcheck.harness.image import ensure_image
from kvcheck.harness.ssh import SshOptions

LABEL = "org.kvcheck.test-ssh-hosts"
#: What every node image holds of kvcheck's (the clock wrapper and its files): not on a host.
_NODE_IMAGE_BITS = "/var/lib/kvcheck /usr/local/lib/kvcheck /usr/local/bin/kvcheck-faketime"
_SSHD_CONFIG = """PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AuthorizedKeysFile /etc/ssh/authorized_keys/%u
MaxStartups 100
MaxSessions 100
"""


class SshHostImage(Database):
    """Not a database: the image of a host that serves SSH."""

    name = "ssh-host"
    description = "a host reached over SSH"
    image = NodeImage(packages=("openssh-server", "sudo"),
                      files={"/etc/ssh/sshd_config.d/kvcheck-test.conf": _SSHD_CONFIG})


@dataclass
class Hosts:
    """Running hosts: their addresses, and SSH options that reach them as root."""

    addresses: list[str]
    containers: list[Container]
    options: SshOptions
    key: Path

    def exec(self, index: int, command: str) -> str:
        """Run ``command`` in host ``index`` directly (not over SSH): the test's own look."""
        code, output = self.containers[index].exec_run(["sh", "-c", command])
        assert isinstance(output, bytes)
        if code != 0:
            raise RuntimeError(f"`{command}` failed with {code}: {output.decode()}")
        return output.decode().strip()


def _await_port(address: str, port: int, limit: float = 30.0) -> None:
    """Return once ``address`` accepts connections on ``port``; raise after ``limit`` s."""
    deadline = time.monotonic() + limit
    while True:
        try:
            socket.create_connection((address, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextlib.contextmanager
def ssh_hosts(directory: Path, count: int) -> Iterator[Hosts]:
    """Start ``count`` hosts; remove them, and their network, on the way out."""
    client = connect()
    image = ensure_image(client, SshHostImage())
    key = directory / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    public = key.with_suffix(".pub").read_text()
    config = directory / "ssh_config"
    config.write_text(f"Host *\n  User root\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
                      "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
                      "  LogLevel ERROR\n")
    run = secrets.token_hex(4)
    network = client.networks.create(f"kvcheck-ssh-{run}", driver="bridge", internal=True,
                                     labels={LABEL: run})
    containers: list[Container] = []
    try:
        for index in range(count):
            container = client.containers.run(
                image, ["sh", "-c", f"rm -rf {_NODE_IMAGE_BITS} && mkdir -p /run/sshd && "
                               "ssh-keygen -A && exec /usr/sbin/sshd -D -e"],
                name=f"kvcheck-ssh-{run}-{index + 1}", hostname=f"host{index + 1}",
                network=network.name, cap_add=["NET_ADMIN"], labels={LABEL: run},
                detach=True, init=True)
            containers.append(container)
            container.exec_run(["sh", "-c",
                                "mkdir -p /etc/ssh/authorized_keys && "
                                f"echo '{public.strip()}' > /etc/ssh/authorized_keys/root && "
                                "useradd -m -p '*' plain && cp /etc/ssh/authorized_keys/root "
                                "/etc/ssh/authorized_keys/plain && "
                                "chmod 644 /etc/ssh/authorized_keys/*"])
            container.reload()
        addresses = [c.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
                     for c in containers]
        for address in addresses:
            _await_port(address, 22)
        yield Hosts(addresses, containers, SshOptions(config=config), key)
    finally:
        for container in containers:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        network.remove()
