"""The store image: built through the Docker SDK, without a registry, tagged by its inputs.

Two images, both labelled ``org.kvcheck=1`` (``org.kvcheck.role`` is ``base`` or ``store``) so
that cleanup can find them:

``kvcheck-base:<hash12>``
    Debian with python3 (3.11), iptables, iproute2 (``ip``, ``tc``), libfaketime and procps.
    ``Base.DEBOOTSTRAP`` (the default where ``python:3.11-slim`` is not present locally): the
    harness runs ``debootstrap --variant=minbase`` for bookworm into a temporary directory, from
    the Debian mirror the host's apt uses, and imports the tree into Docker (needs root and a
    Debian host; debootstrap is installed with apt if missing). ``Base.SLIM``: ``python:3.11-slim``
    (pulled if missing: only where a registry is reachable) plus those tools from apt. The hash
    is of the recipe (suite, packages, architecture), not of the mirror's current contents.
``kvcheck-store:<hash12>``
    The base plus a venv at ``/opt/kvcheck`` holding kvcheck and its runtime dependencies, from
    wheels made on the host (kvcheck's from the running package's own files, see
    :mod:`kvcheck.harness.package`; the dependencies downloaded from the package index as CPython
    3.11 manylinux wheels, at the versions installed in the running environment) and installed
    with ``pip install --no-index``: nothing is downloaded inside the build. The hash covers the
    package's files and generated build configuration, the pinned dependency set, the Dockerfile
    and the base's tag: an unchanged package never rebuilds.

What a container from the store image offers (nothing in it is a node's command line):

- ``PATH`` starts with ``/opt/kvcheck/bin``: ``kvstore`` and ``python3`` are the venv's.
- The default command is ``sleep infinity``: the container idles and the harness either
  gives its own command (e.g. ``kvcheck-faketime kvstore serve ...``) or execs the store into it.
  Run it with ``init=True`` so that signals are forwarded and orphans are reaped.
- ``kvcheck-faketime COMMAND...`` runs COMMAND under libfaketime: the environment of
  :func:`faketime_env` (``LD_PRELOAD`` of ``libfaketimeMT.so.1``, linked at
  :data:`FAKETIME_LIB` from the architecture's ``/usr/lib/<triplet>/faketime/``;
  ``FAKETIME_NO_CACHE=1``; ``FAKETIME_DONT_FAKE_MONOTONIC=1``), with
  ``FAKETIME_TIMESTAMP_FILE`` taken from the environment (one file per node), by default
  :data:`FAKETIME_FILE`, which holds ``+0``. The file holds an offset such as ``+2.5s``, ``-30s``,
  ``+1h`` or ``+3600`` (seconds) and is re-read at every clock call; a missing file means no
  offset. Only that process is faked: ``iptables``, ``tc`` and ``ps`` exec'd beside it run on the
  real clock. Monotonic clocks are never faked (Python hangs at start-up if they are).
- ``iptables`` and ``tc`` work with ``cap_add=["NET_ADMIN"]``; nothing needs ``privileged``.
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

from kvcheck.harness.package import Package, pip

Progress = Callable[[str], None]

STORE_REPOSITORY = "kvcheck-store"
BASE_REPOSITORY = "kvcheck-base"
LABEL = "org.kvcheck"
ROLE_LABEL = "org.kvcheck.role"

SLIM_IMAGE = "python:3.11-slim"
DEBIAN_SUITE = "bookworm"
PYTHON_VERSION = "3.11"  # bookworm's python3, and the slim image's
GLIBC_MINOR = 36  # bookworm's glibc is 2.36: the newest manylinux tag its wheels may carry
DEFAULT_MIRROR = "http://deb.debian.org/debian"
TOOLS = ("iptables", "iproute2", "libfaketime", "procps")
DEBOOTSTRAP_PACKAGES = ("python3", "python3-venv", *TOOLS)

VENV = "/opt/kvcheck"
FAKETIME_LIB = "/usr/local/lib/kvcheck/libfaketimeMT.so.1"
FAKETIME_FILE = "/var/lib/kvcheck/faketime"
FAKETIME_WRAPPER = "kvcheck-faketime"

_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_BUILD_TIMEOUT = 1800  # seconds a docker build step may stay silent (the API read timeout)
_WHEELS = "wheels"


class Base(StrEnum):
    """Where the store image's operating system comes from."""

    AUTO = "auto"  # SLIM if python:3.11-slim is present locally, else DEBOOTSTRAP
    DEBOOTSTRAP = "debootstrap"
    SLIM = "slim"


class ImageError(RuntimeError):
    """An image could not be built; the message is one paragraph saying what to do."""


class BootstrapError(ImageError):
    """The Debian base could not be bootstrapped (debootstrap missing, not root, or it failed)."""


class BuildError(ImageError):
    """Docker refused to import or build an image, or a base image could not be had."""


def faketime_env(timestamp_file: str = FAKETIME_FILE) -> dict[str, str]:
    """The environment that runs a process of the store image under libfaketime.

    The wall clock is offset by the contents of ``timestamp_file`` (inside the container),
    re-read at every call; monotonic clocks stay real.
    """
    return {
        "LD_PRELOAD": FAKETIME_LIB,
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_TIMESTAMP_FILE": timestamp_file,
    }


# --- recipes (their text is what the tags hash) ------------------------------------------------

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


def store_dockerfile(base_image: str) -> str:
    """The Dockerfile of the store image on top of ``base_image``; its context holds the
    wheels in ``wheels/`` and the faketime wrapper."""
    return f"""\
FROM {base_image}
COPY {_WHEELS} /tmp/{_WHEELS}
COPY {FAKETIME_WRAPPER} /usr/local/bin/{FAKETIME_WRAPPER}
RUN python3 -m venv {VENV} \\
 && {VENV}/bin/pip install --no-index --no-cache-dir --disable-pip-version-check \\
      --find-links /tmp/{_WHEELS} kvcheck \\
 && rm -rf /tmp/{_WHEELS} \\
 && mkdir -p {Path(FAKETIME_LIB).parent} {Path(FAKETIME_FILE).parent} \\
 && ln -s "$(echo /usr/lib/*/faketime/libfaketimeMT.so.1)" {FAKETIME_LIB} \\
 && test -e {FAKETIME_LIB} \\
 && echo +0 > {FAKETIME_FILE}
ENV PATH={VENV}/bin:{_SYSTEM_PATH} PYTHONUNBUFFERED=1
CMD ["sleep", "infinity"]
"""


def faketime_wrapper() -> str:
    """The ``kvcheck-faketime`` script: exec its arguments under libfaketime."""
    env = faketime_env()
    timestamp_file = env.pop("FAKETIME_TIMESTAMP_FILE")
    exports = "\n".join(f"export {name}={value}" for name, value in env.items())
    return f"""\
#!/bin/sh
# {FAKETIME_WRAPPER} COMMAND [ARG...]: run COMMAND with its wall clock offset by the contents
# of $FAKETIME_TIMESTAMP_FILE (default {timestamp_file}), e.g. +2.5s or -30s,
# re-read at every clock call. Monotonic clocks stay real.
{exports}
export FAKETIME_TIMESTAMP_FILE="${{FAKETIME_TIMESTAMP_FILE:-{timestamp_file}}}"
exec "$@"
"""


# --- inputs and tags -----------------------------------------------------------------------------

def image_tag(package: Package, base: Base = Base.DEBOOTSTRAP) -> str:
    """``kvcheck-store:<hash12>``: a content hash of every input of the store image of
    ``package`` on the base of kind ``base`` (DEBOOTSTRAP or SLIM). Pure: reads files and
    installed metadata only.

    Raises PackageError if a dependency of the package is not installed.
    """
    parts = [("Dockerfile", store_dockerfile(base_tag(base)).encode()),
             (FAKETIME_WRAPPER, faketime_wrapper().encode()), *package.hash_parts()]
    return f"{STORE_REPOSITORY}:{content_hash(parts)[:12]}"


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
    return Base.SLIM if _has_image(client, SLIM_IMAGE) else Base.DEBOOTSTRAP


def ensure_image(client: docker.DockerClient, package: Package | None = None, *,
                 base: Base = Base.AUTO, progress: Progress | None = None) -> str:
    """The tag of the store image of ``package`` (by default the running kvcheck), building
    the image (and its base) only if the tag is missing.

    Raises ImageError (BootstrapError, BuildError) or PackageError if a build is needed and
    fails.
    """
    say = progress or _quiet
    package = package or Package.running()
    tag = image_tag(package, resolve_base(client, base))
    if _has_image(client, tag):
        say(f"{tag} is up to date")
        return tag
    return build_image(client, package, base=base, progress=progress)


def build_image(client: docker.DockerClient, package: Package | None = None, *,
                base: Base = Base.AUTO, progress: Progress | None = None) -> str:
    """Build the store image of ``package`` (by default the running kvcheck) and its base, if
    missing, and return its tag.

    Layers cached by the engine are reused. Raises BootstrapError or BuildError (both
    ImageError), or PackageError, with a message saying what to do.
    """
    say = progress or _quiet
    package = package or Package.running()
    kind = resolve_base(client, base)
    base_image = ensure_base(client, kind, progress=say)
    tag = image_tag(package, kind)
    with tempfile.TemporaryDirectory(prefix="kvcheck-image-") as tmp:
        context = Path(tmp)
        say("making wheels of kvcheck and its dependencies on the host")
        _make_wheels(package, context / _WHEELS)
        (context / "Dockerfile").write_text(store_dockerfile(base_image))
        wrapper = context / FAKETIME_WRAPPER
        wrapper.write_text(faketime_wrapper())
        wrapper.chmod(0o755)
        say(f"building {tag} on {base_image}")
        _docker_build(client, context, tag, role="store", progress=say)
    return tag


def ensure_base(client: docker.DockerClient, base: Base, *,
                progress: Progress | None = None) -> str:
    """The tag of the base image of kind ``base``, made if missing.

    Raises BootstrapError (debootstrap) or BuildError (import, slim image unavailable).
    """
    say = progress or _quiet
    kind = resolve_base(client, base)
    tag = base_tag(kind)
    if _has_image(client, tag):
        return tag
    if kind is Base.SLIM:
        _build_slim_base(client, tag, say)
    else:
        _build_debootstrap_base(client, tag, say)
    return tag


def _build_slim_base(client: docker.DockerClient, tag: str, say: Progress) -> None:
    if not _has_image(client, SLIM_IMAGE):
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
        _docker_build(client, Path(tmp), tag, role="base", progress=say)


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
                    changes=[f"LABEL {LABEL}=1 {ROLE_LABEL}=base", f"ENV PATH={_SYSTEM_PATH}",
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


def _make_wheels(package: Package, wheels: Path) -> None:
    """kvcheck's wheel, built from exactly its hashed inputs, and the pinned dependencies as
    wheels for the image's CPython, into ``wheels``."""
    wheels.mkdir()
    package.make_wheel(wheels)
    machine = platform.machine()
    platforms = [f"manylinux_2_{minor}_{machine}" for minor in range(GLIBC_MINOR, 16, -1)]
    pip(["download", "--no-deps", "--only-binary=:all:", "--dest", str(wheels),
         "--implementation", "cp", "--python-version", PYTHON_VERSION,
         "--abi", f"cp{PYTHON_VERSION.replace('.', '')}",
         *(f"--platform={p}" for p in [*platforms, f"manylinux2014_{machine}"]),
         *package.pins()],
        f"downloading the dependencies as CPython {PYTHON_VERSION} wheels")


def _docker_build(client: docker.DockerClient, context: Path, tag: str, *, role: str,
                  progress: Progress) -> None:
    """``docker build`` of ``context`` through the API, streaming its output to ``progress``."""
    last: list[str] = []
    try:
        for chunk in client.api.build(path=str(context), tag=tag, rm=True, forcerm=True,
                                      pull=False, decode=True, timeout=_BUILD_TIMEOUT,
                                      labels={LABEL: "1", ROLE_LABEL: role}):
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


def remove_stale_images(client: docker.DockerClient, package: Package | None = None) -> list[str]:
    """Remove the store images of other kvcheck packages: every ``role=store`` image but the
    one ``package`` (by default the running kvcheck) would use. Images a container still uses
    are left. Returns the tags (or ids) removed."""
    current = image_tag(package or Package.running(), resolve_base(client, Base.AUTO))
    removed = []
    for image in client.images.list(filters={"label": f"{ROLE_LABEL}=store"}):
        if current in image.tags:
            continue
        assert image.id is not None  # a listed image has one; the SDK types every id optional
        try:
            client.images.remove(image.id)
        except docker.errors.APIError:
            continue  # in use by a container, or already gone
        removed.append(image.tags[0] if image.tags else image.short_id)
    return removed


def _has_image(client: docker.DockerClient, name: str) -> bool:
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colours in a build step's stderr


def _debian_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def _quiet(_line: str) -> None:
    pass

