"""kvcheck's Debian base image, and building images through the Docker SDK without a registry.

``kvcheck-base:<hash12>``, labelled ``org.kvcheck=1`` and ``org.kvcheck.role=base``: Debian with
python3 (3.11), iptables, iproute2 (``ip``, ``tc``), libfaketime and procps — what every node
image (:mod:`kvcheck.harness.image`) is built on, whatever database it runs.
``Base.DEBOOTSTRAP`` (the default where ``python:3.11-slim`` is not present locally): the harness
runs ``debootstrap --variant=minbase`` for bookworm into a temporary directory, from the Debian
mirror the host's apt uses, and imports the tree into Docker (needs root and a Debian host;
debootstrap is installed with apt if missing). ``Base.SLIM``: ``python:3.11-slim`` (pulled if
missing: only where a registry is reachable) plus those tools from apt. The hash is of the recipe
(suite, packages, architecture), not of the mirror's current contents. Its apt sources are the
mirror's, so images built on it can install Debian packages.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from enum import StrEnum
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

Progress = Callable[[str], None]

BASE_REPOSITORY = "kvcheck-base"
LABEL = "org.kvcheck"
ROLE_LABEL = "org.kvcheck.role"

SLIM_IMAGE = "python:3.11-slim"
DEBIAN_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
TOOLS = ("iptables", "iproute2", "libfaketime", "procps")
DEBOOTSTRAP_PACKAGES = ("python3", "python3-venv", *TOOLS)

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_BUILD_TIMEOUT = 1800  # seconds a docker build step may stay silent (the API read timeout)


class Base(StrEnum):
    """Where the base image's operating system comes from."""

    AUTO = "auto"  # SLIM if python:3.11-slim is present locally, else DEBOOTSTRAP
    DEBOOTSTRAP = "debootstrap"
    SLIM = "slim"


class ImageError(RuntimeError):
    """An image could not be built; the message is one paragraph saying what to do."""


class BootstrapError(ImageError):
    """The Debian base could not be bootstrapped (debootstrap missing, not root, or it failed)."""


class BuildError(ImageError):
    """Docker refused to import or build an image, or a base image could not be had."""


# --- the recipe (its text is what the tag hashes) ---------------------------------------------

def base_recipe(base: Base) -> str:
    """The text that defines a base image of the kind ``base`` (DEBOOTSTRAP or SLIM).

    Raises ValueError for ``Base.AUTO``, which is not a recipe: resolve it first.
    """
    if base is Base.DEBOOTSTRAP:
        return (f"debootstrap --variant=minbase --include={','.join(DEBOOTSTRAP_PACKAGES)} "
                f"{DEBIAN_SUITE} (arch {_debian_arch()}); apt lists, caches and docs removed\n")
    if base is Base.SLIM:
        return (f"FROM {SLIM_IMAGE}\n"
                "RUN apt-get update \\\n"
                " && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
                f"{' '.join(TOOLS)} \\\n"
                " && rm -rf /var/lib/apt/lists/*\n")
    raise ValueError(f"no recipe for base {base!r}: resolve Base.AUTO first")


def base_tag(base: Base) -> str:
    """``kvcheck-base:<hash12>`` for the base image of the kind ``base`` (not AUTO)."""
    return f"{BASE_REPOSITORY}:{content_hash([('recipe', base_recipe(base).encode())])[:12]}"


def content_hash(parts: Iterable[tuple[str, bytes]]) -> str:
    """SHA-256 (hex) of named byte strings, each framed by its name and length."""
    h = hashlib.sha256()
    for name, data in parts:
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


# --- building ------------------------------------------------------------------------------------

def resolve_base(client: docker.DockerClient, base: Base) -> Base:
    """``base`` itself, or for AUTO: SLIM if ``python:3.11-slim`` is present locally, else
    DEBOOTSTRAP. Sends nothing over the network (registry reachability is not probed)."""
    if base is not Base.AUTO:
        return base
    return Base.SLIM if has_image(client, SLIM_IMAGE) else Base.DEBOOTSTRAP


def ensure_base(client: docker.DockerClient, base: Base, *,
                progress: Progress | None = None) -> str:
    """The tag of the base image of kind ``base``, made if missing.

    Raises BootstrapError (debootstrap) or BuildError (import, slim image unavailable).
    """
    say = progress or quiet
    kind = resolve_base(client, base)
    tag = base_tag(kind)
    if has_image(client, tag):
        return tag
    if kind is Base.SLIM:
        _build_slim_base(client, tag, say)
    else:
        _build_debootstrap_base(client, tag, say)
    return tag


def _build_slim_base(client: docker.DockerClient, tag: str, say: Progress) -> None:
    if not has_image(client, SLIM_IMAGE):
        say(f"pulling {SLIM_IMAGE}")
        repository, _, version = SLIM_IMAGE.partition(":")
        try:
            client.images.pull(repository, tag=version)
        except docker.errors.APIError as error:
            raise BuildError(
                f"cannot pull {SLIM_IMAGE} ({error.explanation or error}): no registry seems "
                "reachable from the Docker engine. Build on the bootstrapped Debian base "
                "instead (base 'debootstrap', as root).") from error
    with tempfile.TemporaryDirectory(prefix="kvcheck-base-") as tmp:
        (Path(tmp) / "Dockerfile").write_text(base_recipe(Base.SLIM))
        say(f"building {tag} from {SLIM_IMAGE} (installs {', '.join(TOOLS)} with apt)")
        docker_build(client, Path(tmp), tag, role="base", progress=say)


def _build_debootstrap_base(client: docker.DockerClient, tag: str, say: Progress) -> None:
    if os.geteuid() != 0:
        raise BootstrapError(
            "building the Debian base image runs debootstrap, which needs root: run "
            "`kvcheck image build` as root once (later builds reuse the base), or make "
            f"{SLIM_IMAGE} available to the engine and use base 'slim'.")
    debootstrap = _debootstrap_command(say)
    mirror = debian_mirror()
    with tempfile.TemporaryDirectory(prefix="kvcheck-base-") as tmp:
        root = Path(tmp) / "root"
        try:
            say(f"bootstrapping Debian {DEBIAN_SUITE} from {mirror} (debootstrap, a minute "
                "or more)")
            _run_streaming([debootstrap, "--variant=minbase",
                            f"--include={','.join(DEBOOTSTRAP_PACKAGES)}",
                            DEBIAN_SUITE, str(root), mirror], say, BootstrapError,
                           what="debootstrap",
                           advice=f"Check that {mirror} is reachable (set KVCHECK_DEBIAN_MIRROR "
                           "to use another mirror) and that there is free space in "
                           f"{tempfile.gettempdir()}.")
            for junk in ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc",
                         "usr/share/man", "usr/share/info"):
                _empty_dir(root / junk)
            tarball = Path(tmp) / "rootfs.tar"
            say(f"importing the tree into Docker as {tag}")
            tar = subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-cf",
                                  str(tarball), "."], capture_output=True, text=True)
            if tar.returncode != 0:
                raise BootstrapError(f"packing the Debian tree failed ({tar.stderr.strip()}); "
                                     f"check free space in {tempfile.gettempdir()}.")
            repository, _, version = tag.partition(":")
            try:
                client.api.import_image_from_file(
                    str(tarball), repository=repository, tag=version,
                    changes=[f"LABEL {LABEL}=1 {ROLE_LABEL}=base", f"ENV PATH={SYSTEM_PATH}",
                             'CMD ["/bin/bash"]'])
            except (docker.errors.APIError, requests.exceptions.RequestException) as error:
                raise BuildError(f"the Docker engine refused to import the Debian tree as {tag} "
                                 f"({error}); check the engine's log and free space under "
                                 "/var/lib/docker, then build again.") from error
        finally:
            _unmount_below(root)


def _debootstrap_command(say: Progress) -> str:
    """Path of debootstrap, installed with apt-get if missing."""
    found = shutil.which("debootstrap")
    if found:
        return found
    if shutil.which("apt-get"):
        say("installing debootstrap with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "debootstrap"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(install, env=env, capture_output=True)
        found = shutil.which("debootstrap")
    if not found:
        raise BootstrapError(
            "debootstrap is not installed and could not be installed with apt-get: on Debian "
            "run `apt-get install debootstrap` as root, then build again.")
    return found


def debian_mirror() -> str:
    """The Debian archive the host's apt uses (``$KVCHECK_DEBIAN_MIRROR`` if set), falling
    back to deb.debian.org."""
    if mirror := os.environ.get("KVCHECK_DEBIAN_MIRROR"):
        return mirror
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        targets = subprocess.run(
            ["apt-get", "indextargets", "--format", "$(ORIGIN)|$(RELEASE)|$(REPO_URI)"],
            capture_output=True, text=True, timeout=30, check=True).stdout
        for line in targets.splitlines():
            origin, _, rest = line.partition("|")
            release, _, uri = rest.partition("|")
            # The main archive (not -security, -updates, -backports) of Debian itself.
            if origin == "Debian" and release and "-" not in release and uri:
                return uri.rstrip("/")
    return DEFAULT_MIRROR


def docker_build(client: docker.DockerClient, context: Path, tag: str, *, role: str,
                 progress: Progress, labels: dict[str, str] | None = None,
                 host_network: bool = False) -> None:
    """``docker build`` of ``context`` through the API, streaming its output to ``progress``,
    labelled with ``role`` (and ``labels``). ``host_network``: its steps use the host's network
    (to reach the Debian mirror as the host does, whether or not the engine gives containers a
    route out)."""
    last: list[str] = []
    try:
        for chunk in client.api.build(path=str(context), tag=tag, rm=True, forcerm=True,
                                      pull=False, decode=True, timeout=_BUILD_TIMEOUT,
                                      labels={LABEL: "1", ROLE_LABEL: role, **(labels or {})},
                                      network_mode="host" if host_network else None):
            if "error" in chunk:
                tail = "\n".join(last[-10:])
                raise BuildError(
                    f"docker build of {tag} failed: {_ANSI.sub('', str(chunk['error'])).strip()}"
                    ". The step's output (last lines below) says why; fix that and build "
                    f"again.\n{tail}")
            for line in _ANSI.sub("", str(chunk.get("stream", ""))).splitlines():
                if line.strip():
                    last.append(line)
                    progress(line)
    except (docker.errors.APIError, requests.exceptions.RequestException) as error:
        raise BuildError(f"the Docker engine failed while building {tag} ({error}); check "
                         "that it still runs (scripts/docker-engine) and has free space, then "
                         "build again.") from error


def _run_streaming(command: list[str], progress: Progress, error: type[ImageError], *,
                   what: str, advice: str) -> None:
    """Run ``command``, passing each output line to ``progress``; raise ``error`` (with the
    last lines and ``advice``) if it fails."""
    last: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            last = [*last[-11:], line.rstrip()]
            progress(line.rstrip())
    if proc.returncode != 0:
        tail = "\n".join(last)
        raise error(f"{what} failed (exit {proc.returncode}). {advice} Its last lines:\n{tail}")


def _empty_dir(path: Path) -> None:
    """Remove everything inside ``path`` (kept itself), if it exists."""
    if path.is_dir():
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()


def _unmount_below(root: Path) -> None:
    """Unmount whatever a debootstrap that died left mounted under ``root`` (``/proc``,
    bind-mounted devices), deepest first, so that deleting the tree can't reach the host's."""
    prefix = f"{root.resolve()}/"
    with contextlib.suppress(OSError):
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)


def has_image(client: docker.DockerClient, name: str) -> bool:
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colours in a build step's stderr


def _debian_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def quiet(_line: str) -> None:
    """A progress callback that says nothing."""
