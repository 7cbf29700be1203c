"""What a real host needs to run a database's node, put there over SSH from the control node
alone: a host may reach no package index at all.

Everything kvcheck makes on a host lives under :data:`ROOT`, so that removing it
(:func:`remove`) leaves the host as it was.

- Debian packages: those every node needs (python3 with venv, iptables, iproute2, libfaketime,
  procps — the node image's base) and those the database's image names. Those a host lacks
  are resolved by the control node's own apt against the host's dpkg status — so exactly what
  ``apt-get install`` would install there, dependencies the host lacks included — downloaded
  into the user's cache, copied over and installed with ``dpkg -i``
  (:func:`install_packages`). That needs a Debian control node of the hosts'
  release; elsewhere a host that lacks a package is refused, naming it. Packages installed so
  stay installed (as in Jepsen): they are the host's, not the run's.
- kvcheck: where the database runs kvcheck's own package (the reference store), the very
  wheels the node image gets — kvcheck's, built from the running package, and its pinned
  dependencies' for CPython 3.11 (:func:`kvcheck.harness.image.make_wheels`) — are made once
  on the control node and kept under the user's cache, by the package's content hash
  (:func:`cached_wheels`); each host gets them as one tar stream and installs them with
  ``pip install --no-index`` into ``ROOT/venv`` (:func:`install_kvcheck`).
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import unquote

import trio

from kvcheck.harness.base_image import DEBOOTSTRAP_PACKAGES, content_hash
from kvcheck.harness.image import PYTHON_VERSION, make_wheels
from kvcheck.harness.package import Package
from kvcheck.harness.ssh import Host, SshError

#: The one directory kvcheck owns on a host.
ROOT = "/var/lib/kvcheck"
VENV = f"{ROOT}/venv"
_WHEELS = f"{ROOT}/wheels"
_DEBS = f"{ROOT}/debs"
#: Seconds installing the wheels on one host may take.
_INSTALL_TIMEOUT = 600.0
#: Held while this process downloads Debian packages into the cache.
_DOWNLOADING = threading.Lock()


def required_packages(database_packages: Sequence[str]) -> list[str]:
    """The Debian packages a node of a database whose image names ``database_packages`` needs
    on a host."""
    return list(dict.fromkeys([*DEBOOTSTRAP_PACKAGES, *database_packages]))


async def install_packages(host: Host, packages: Sequence[str],
                           say: Callable[[str], None]) -> None:
    """Install on ``host`` those of ``packages`` it lacks, from the control node (module
    docstring). Raises SshError naming the host, the packages and what to do."""
    missing = await _lacking(host, packages)
    if not missing:
        return
    theirs = await host.run(". /etc/os-release && echo \"$VERSION_CODENAME\"")
    ours = _release()
    if theirs != ours or shutil.which("apt-get") is None:
        here = f"Debian {ours}" if ours else "not Debian"
        raise SshError(f"{host.address}: the Debian packages {', '.join(missing)} are not "
                       f"installed, and this control node ({here}) cannot fetch them for "
                       f"{theirs or 'its release'}: install them (apt-get install "
                       f"{' '.join(missing)})")
    status = (await host.run("cat /var/lib/dpkg/status")).encode()
    debs = await trio.to_thread.run_sync(_download, missing, status, ours, say)
    say(f"{host.address}: installing {', '.join(deb.name.split('_')[0] for deb in debs)}")
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for deb in debs:
            tar.add(deb, arcname=deb.name)
    await host.run(f"rm -rf {_DEBS} && mkdir -p {_DEBS} && tar -x -C {_DEBS} && "
                   f"DEBIAN_FRONTEND=noninteractive dpkg -i {_DEBS}/*.deb; status=$?; "
                   f"rm -rf {_DEBS}; exit $status", stdin=archive.getvalue(),
                   timeout=_INSTALL_TIMEOUT)
    if still := await _lacking(host, missing):
        raise SshError(f"{host.address}: dpkg did not install {', '.join(still)}")


async def _lacking(host: Host, packages: Sequence[str]) -> list[str]:
    """Those of ``packages`` that are not installed on ``host``."""
    names = " ".join(shlex.quote(p) for p in packages)
    return (await host.run(
        f"for p in {names}; do dpkg-query -W -f='${{Status}}\\n' \"$p\" 2>/dev/null "
        "| grep -q '^install ok installed' || echo \"$p\"; done")).split()


def _release() -> str:
    """This machine's Debian release (``bookworm``), or empty elsewhere."""
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return ""
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    if fields.get("ID", "").strip('"') != "debian":
        return ""
    return fields.get("VERSION_CODENAME", "").strip('"')


def _download(packages: Sequence[str], status: bytes, release: str,
              say: Callable[[str], None]) -> list[Path]:
    """The ``.deb`` files that install ``packages`` on a host whose dpkg status is ``status``:
    what this machine's apt would install there (dependencies resolved against what the host
    has), downloaded into the user's cache (those there already are kept) — by one thread at
    a time, each file put in place whole. Raises SshError when apt cannot."""
    cache = _cache() / "debs" / release
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kvcheck-apt-") as tmp:
        host_status = Path(tmp) / "status"
        host_status.write_bytes(status)
        (Path(tmp) / "archives" / "partial").mkdir(parents=True)  # empty: every file is named
        planned = _apt(["apt-get", "install", "--print-uris", "-qq", "--no-install-recommends",
                        "-o", f"Dir::State::status={host_status}",
                        "-o", f"Dir::Cache::archives={tmp}/archives",
                        "-o", "Debug::NoLocking=1", *packages], cache,
                       f"find {', '.join(packages)}")
    files = [line.split()[1] for line in planned.splitlines() if line.startswith("'")]
    with _DOWNLOADING:  # hosts install at once: the first downloads, the others wait for it
        if fetch := [f for f in files if not (cache / f).exists()]:
            say(f"downloading {len(fetch)} Debian package(s) for the hosts into {cache}")
            wanted = [f"{name}={unquote(version)}" for name, version, _ in
                      (f.removesuffix(".deb").split("_") for f in fetch)]
            with tempfile.TemporaryDirectory(prefix=".downloading-", dir=cache) as partial:
                _apt(["apt-get", "download", *wanted], Path(partial),
                     f"download {', '.join(wanted)}")
                for f in fetch:  # whole, or not there: another process may be reading
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(Path(partial) / f, cache / f)
    if absent := [f for f in files if not (cache / f).exists()]:
        raise SshError(f"apt downloaded no {', '.join(absent)}")
    return [cache / f for f in files]


def _apt(argv: list[str], cwd: Path, doing: str) -> str:
    """Run apt's ``argv`` in ``cwd``; its output. Raises SshError saying what it was
    ``doing``."""
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SshError(f"this control node's apt could not {doing}: "
                       f"{done.stderr.strip()[-500:]} (its package lists may need "
                       "`apt-get update`)")
    return done.stdout


def _cache() -> Path:
    """kvcheck's cache directory on this machine."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kvcheck"


def cached_wheels(package: Package, say: Callable[[str], None]) -> Path:
    """The directory of ``package``'s wheels and its dependencies' (module docstring), made
    now unless the cache holds them. Raises PackageError when they cannot be made."""
    target = _cache() / "wheels" / content_hash(package.hash_parts())
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

