"""Node images: what a database's nodes run, built on kvcheck's Debian base, tagged by inputs.

``kvcheck-node:<db>-<hash12>``, labelled ``org.kvcheck=1``, ``org.kvcheck.role=node`` and
``org.kvcheck.db=<db>``: the base (:mod:`kvcheck.harness.base_image`) plus what the database's
:class:`~kvcheck.harness.databases.NodeImage` asks for — its Debian packages, installed with apt
when the image is built (the build's steps use the host's network, so they reach the Debian
mirror as the host does), its files, and, for a database that runs kvcheck's own package (the
reference store), a venv at ``/opt/kvcheck`` holding kvcheck and its runtime dependencies, from
wheels made on the host (kvcheck's from the running package's own files, see
:mod:`kvcheck.harness.package`; the dependencies downloaded from the package index as CPython
3.11 manylinux wheels at the versions installed in the running environment) and installed with
``pip install --no-index``. The hash covers the Dockerfile (which names the base's tag and the
packages), the files, the faketime wrapper, and the package's files and pinned dependencies
where it is installed: unchanged inputs never rebuild.

What a container from a node image offers (nothing in it is a node's command line):

- ``PATH`` starts with ``/opt/kvcheck/bin`` where kvcheck is installed (``kvstore`` and
  ``python3`` are the venv's).
- The default command is ``sleep infinity``: the container idles and the harness execs the
  database's processes into it. Run it with ``init=True`` so that signals are forwarded and
  orphans are reaped.
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

import platform
import re
import shlex
import tempfile
from pathlib import Path

import docker
import docker.errors

from kvcheck.harness.base_image import (
    ROLE_LABEL,
    SYSTEM_PATH,
    Base,
    Progress,
    base_tag,
    content_hash,
    docker_build,
    ensure_base,
    has_image,
    quiet,
    resolve_base,
)
from kvcheck.harness.databases import BUILTIN, Database, NodeImage, load
from kvcheck.harness.package import Package, pip

NODE_REPOSITORY = "kvcheck-node"
DB_LABEL = "org.kvcheck.db"
PYTHON_VERSION = "3.11"  # bookworm's python3, and the slim image's
GLIBC_MINOR = 36  # bookworm's glibc is 2.36: the newest manylinux tag its wheels may carry

VENV = "/opt/kvcheck"
FAKETIME_LIB = "/usr/local/lib/kvcheck/libfaketimeMT.so.1"
FAKETIME_FILE = "/var/lib/kvcheck/faketime"
FAKETIME_WRAPPER = "kvcheck-faketime"

_WHEELS = "wheels"
_FILES = "files"


def faketime_env(timestamp_file: str = FAKETIME_FILE) -> dict[str, str]:
    """The environment that runs a process of a node image under libfaketime.

    The wall clock is offset by the contents of ``timestamp_file`` (inside the container),
    re-read at every call; monotonic clocks stay real.
    """
    return {
        "LD_PRELOAD": FAKETIME_LIB,
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_TIMESTAMP_FILE": timestamp_file,
    }


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


def node_dockerfile(base_image: str, image: NodeImage) -> str:
    """The Dockerfile of a node image on top of ``base_image``; its context holds the files in
    ``files/``, the wheels in ``wheels/`` (with kvcheck) and the faketime wrapper."""
    steps = [f"FROM {base_image}"]
    if image.packages:
        steps.append("RUN apt-get update -q \\\n"
                     " && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                     f"--no-install-recommends {shlex.join(image.packages)} \\\n"
                     " && rm -rf /var/lib/apt/lists/*")
    if image.files:
        steps.append(f"COPY {_FILES}/ /")
    path = SYSTEM_PATH
    if image.kvcheck:
        steps.append(f"COPY {_WHEELS} /tmp/{_WHEELS}\n"
                     f"RUN python3 -m venv {VENV} \\\n"
                     f" && {VENV}/bin/pip install --no-index --no-cache-dir "
                     "--disable-pip-version-check \\\n"
                     f"      --find-links /tmp/{_WHEELS} kvcheck \\\n"
                     f" && rm -rf /tmp/{_WHEELS}")
        path = f"{VENV}/bin:{SYSTEM_PATH}"
    steps.append(f"COPY {FAKETIME_WRAPPER} /usr/local/bin/{FAKETIME_WRAPPER}\n"
                 f"RUN mkdir -p {Path(FAKETIME_LIB).parent} {Path(FAKETIME_FILE).parent} \\\n"
                 f' && ln -s "$(echo /usr/lib/*/faketime/libfaketimeMT.so.1)" {FAKETIME_LIB} \\\n'
                 f" && test -e {FAKETIME_LIB} \\\n"
                 f" && echo +0 > {FAKETIME_FILE}\n"
                 f"ENV PATH={path} PYTHONUNBUFFERED=1\n"
                 'CMD ["sleep", "infinity"]')
    return "\n".join(steps) + "\n"


# --- inputs and tags -----------------------------------------------------------------------------

def image_tag(database: Database, package: Package | None,
              base: Base = Base.DEBOOTSTRAP) -> str:
    """``kvcheck-node:<db>-<hash12>``: a content hash of every input of ``database``'s node
    image on the base of kind ``base`` (DEBOOTSTRAP or SLIM), with ``package`` where the node
    runs kvcheck. Pure: reads files and installed metadata only.

    Raises PackageError if a dependency of the package is not installed.
    """
    image = database.image
    parts = [("Dockerfile", node_dockerfile(base_tag(base), image).encode()),
             (FAKETIME_WRAPPER, faketime_wrapper().encode()),
             *((f"files/{path}", text.encode()) for path, text in sorted(image.files.items()))]
    if image.kvcheck:
        parts += (package or Package.running()).hash_parts()
    return f"{NODE_REPOSITORY}:{_tag_name(database.name)}-{content_hash(parts)[:12]}"


# --- building ------------------------------------------------------------------------------------

def ensure_image(client: docker.DockerClient, database: Database,
                 package: Package | None = None, *, base: Base = Base.AUTO,
                 progress: Progress | None = None) -> str:
    """The tag of ``database``'s node image (with ``package``, by default the running kvcheck,
    where the node runs kvcheck), building it (and the base) only if the tag is missing.

    Raises ImageError (BootstrapError, BuildError) or PackageError if a build is needed and
    fails.
    """
    say = progress or quiet
    tag = image_tag(database, package, resolve_base(client, base))
    if has_image(client, tag):
        say(f"{tag} is up to date")
        return tag
    return build_image(client, database, package, base=base, progress=progress)


def build_image(client: docker.DockerClient, database: Database,
                package: Package | None = None, *, base: Base = Base.AUTO,
                progress: Progress | None = None) -> str:
    """Build ``database``'s node image (and the base, if missing) and return its tag.

    Layers cached by the engine are reused. Raises BootstrapError or BuildError (both
    ImageError), or PackageError, with a message saying what to do.
    """
    say = progress or quiet
    kind = resolve_base(client, base)
    base_image = ensure_base(client, kind, progress=say)
    image = database.image
    package = package or (Package.running() if image.kvcheck else None)
    tag = image_tag(database, package, kind)
    with tempfile.TemporaryDirectory(prefix="kvcheck-image-") as tmp:
        context = Path(tmp)
        if package is not None:
            say("making wheels of kvcheck and its dependencies on the host")
            make_wheels(package, context / _WHEELS)
        for path, text in image.files.items():
            target = context / _FILES / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            target.chmod(0o755 if "bin" in Path(path).parent.parts else 0o644)
        (context / "Dockerfile").write_text(node_dockerfile(base_image, image))
        wrapper = context / FAKETIME_WRAPPER
        wrapper.write_text(faketime_wrapper())
        wrapper.chmod(0o755)
        say(f"building {tag} on {base_image}")
        docker_build(client, context, tag, role="node", labels={DB_LABEL: database.name},
                     host_network=bool(image.packages), progress=say)
    return tag


def make_wheels(package: Package, wheels: Path) -> None:
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


def remove_stale_images(client: docker.DockerClient, package: Package | None = None) -> list[str]:
    """Remove the node images of the built-in databases that their current inputs would not
    use (other kvcheck packages, other recipes). A user's database's images are left alone, as
    are images a container still uses. Returns the tags (or ids) removed."""
    base = resolve_base(client, Base.AUTO)
    current = {name: image_tag(load(name), package, base) for name in BUILTIN}
    removed = []
    for image in client.images.list(filters={"label": f"{ROLE_LABEL}=node"}):
        name = image.labels.get(DB_LABEL, "")
        if name not in current or current[name] in image.tags:
            continue
        assert image.id is not None  # a listed image has one; the SDK types every id optional
        try:
            client.images.remove(image.id)
        except docker.errors.APIError:
            continue  # in use by a container, or already gone
        removed.append(image.tags[0] if image.tags else image.short_id)
    return removed


def _tag_name(name: str) -> str:
    """A database's name as the start of a Docker tag (letters, digits, ``_``, ``.``, ``-``)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip(".-") or "db"
    return cleaned[:64]
