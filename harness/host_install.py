"""What a real host needs to run a database's node, put there over SSH from the control node
alone: a host may reach no package index at all.

Everything kvcheck makes on a host lives under :data:`ROOT`, so that removing it
(:func:`remove`) leaves the host as it was.

- Debian packages: those every node needs (python3 with venv, iptables, iproute2, libfaketime,
  procps — the node image's base) and those the database's image names must be installed;
  a host without them is refused, naming them (:func:`check_packages`).
- kvcheck: where the database runs kvcheck's own package (the reference store), the very
  wheels the node image gets — kvcheck's, built from the running package, and its pinned
  dependencies' for CPython 3.11 (:func:`kvcheck.harness.image.make_wheels`) — are made once
  on the control node and kept under the user's cache, by the package's content hash
  (:func:`cached_wheels`); each host gets them as one tar stream and installs them with
  ``pip install --no-index`` into ``ROOT/venv`` (:func:`install_kvcheck`).
"""

from __future__ import annotations

import io
import os
import shlex
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from kvcheck.harness.base_image import DEBOOTSTRAP_PACKAGES, content_hash
from kvcheck.harness.image import PYTHON_VERSION, make_wheels
from kvcheck.harness.package import Package
from kvcheck.harness.ssh import Host, SshError

#: The one directory kvcheck owns on a host.
ROOT = "/var/lib/kvcheck"
VENV = f"{ROOT}/venv"
_WHEELS = f"{ROOT}/wheels"
#: Seconds installing the wheels on one host may take.
_INSTALL_TIMEOUT = 600.0


def required_packages(database_packages: Sequence[str]) -> list[str]:
    """The Debian packages a node of a database whose image names ``database_packages`` needs
    on a host."""
    return list(dict.fromkeys([*DEBOOTSTRAP_PACKAGES, *database_packages]))


async def check_packages(host: Host, packages: Sequence[str]) -> None:
    """Raise SshError naming the ``packages`` that are not installed on ``host``."""
    names = " ".join(shlex.quote(p) for p in packages)
    missing = (await host.run(
        f"for p in {names}; do dpkg-query -W -f='${{Status}}\\n' \"$p\" 2>/dev/null "
        "| grep -q '^install ok installed' || echo \"$p\"; done")).split()
    if missing:
        raise SshError(f"{host.address}: the Debian packages {', '.join(missing)} are not "
                       f"installed; install them (apt-get install {' '.join(missing)})")


def cached_wheels(package: Package, say: Callable[[str], None]) -> Path:
    """The directory of ``package``'s wheels and its dependencies' (module docstring), made
    now unless the cache holds them. Raises PackageError when they cannot be made."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    target = cache / "kvcheck" / "wheels" / content_hash(package.hash_parts())
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    say(f"making the wheels of kvcheck and its dependencies into {target}")
    with tempfile.TemporaryDirectory(prefix="kvcheck-wheels-", dir=target.parent) as tmp:
        made = Path(tmp) / "wheels"
        make_wheels(package, made)
        made.rename(target)  # whole or not at all
    return target


async def install_kvcheck(host: Host, wheels: Path, version: str) -> None:
    """Install kvcheck ``version`` from the wheels in ``wheels`` into ``VENV`` on ``host``.
    Raises SshError when its Python is not the wheels' or pip fails."""
    found = await host.run("python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'")
    if found != PYTHON_VERSION:
        raise SshError(f"{host.address}: python3 is {found}, and kvcheck's wheels are for "
                       f"{PYTHON_VERSION} (Debian bookworm's): give the host a python3 "
                       f"{PYTHON_VERSION}")
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for wheel in sorted(wheels.iterdir()):
            tar.add(wheel, arcname=wheel.name)
    await host.run(f"rm -rf {_WHEELS} && mkdir -p {_WHEELS} && tar -x -C {_WHEELS}",
                   stdin=archive.getvalue(), timeout=_INSTALL_TIMEOUT)
    await host.run(f"python3 -m venv {VENV} && {VENV}/bin/pip install --quiet --no-index "
                   f"--find-links {_WHEELS} 'kvcheck=={version}'", timeout=_INSTALL_TIMEOUT)


async def remove(host: Host) -> None:
    """Remove everything kvcheck put on ``host`` (all of :data:`ROOT`). Raises SshError."""
    await host.run(f"rm -rf {ROOT}")

