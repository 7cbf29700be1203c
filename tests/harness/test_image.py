"""The store image: content-hash tags (pure), and a real build on the Docker engine.

The integration tests need an engine (``scripts/docker-engine`` starts one; CI runs it first)
and fail, rather than skip, without one. They build from a snapshot of the running package's files
in a temporary directory, so that edits to the work tree during the run cannot change the tag. The
first build bootstraps the Debian base (about a minute and a half here); later ones reuse it.
"""

from __future__ import annotations

import dataclasses
import io
import re
import shutil
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker
import pytest
from docker.models.containers import Container

from kvcheck.harness import base_image
from kvcheck.harness.base_image import (
    LABEL,
    ROLE_LABEL,
    Base,
    BootstrapError,
    BuildError,
    base_recipe,
    base_tag,
    content_hash,
    ensure_base,
    resolve_base,
)
from kvcheck.harness.databases import Database, NodeImage
from kvcheck.harness.databases.kvstore import KvStore
from kvcheck.harness.engine import EngineUnavailable, connect
from kvcheck.harness.image import (
    DB_LABEL,
    FAKETIME_FILE,
    FAKETIME_WRAPPER,
    ensure_image,
    faketime_env,
    faketime_wrapper,
    image_tag,
    node_dockerfile,
    remove_stale_images,
)
from kvcheck.harness.package import Package, PackageError

PACKAGE = Package.running()
KVSTORE = KvStore()
TAG = re.compile(r"kvcheck-node:kvstore-[0-9a-f]{12}")


class Tools(Database):
    """A database that is only an image: a Debian package and two files, no kvcheck."""

    name = "tools"
    image = NodeImage(packages=("netcat-openbsd",),
                      files={"/usr/local/bin/hello": "#!/bin/sh\necho hello from $0\n",
                             "/etc/kvcheck-test.conf": "answer = 42\n"})


def snapshot(destination: Path) -> Package:
    """The running package with its files copied under ``destination``."""
    files = {}
    for inside, path in PACKAGE.files.items():
        (destination / inside).parent.mkdir(parents=True, exist_ok=True)
        files[inside] = Path(shutil.copy2(path, destination / inside))
    return dataclasses.replace(PACKAGE, files=files)


@pytest.fixture
def tree(tmp_path: Path) -> Package:
    return snapshot(tmp_path / "project")


# --- pure: inputs and tags ------------------------------------------------------------------

def test_content_hash_frames_each_part() -> None:
    assert content_hash([("a", b"bc")]) == content_hash([("a", b"bc")])
    assert content_hash([("a", b"bc")]) != content_hash([("ab", b"c")])
    assert content_hash([("a", b""), ("b", b"")]) != content_hash([("b", b""), ("a", b"")])


def test_the_package_files_are_every_module_of_every_package() -> None:
    files = set(PACKAGE.files)
    assert {"kvcheck/__init__.py", "kvcheck/__main__.py", "kvcheck/store/cli/__init__.py",
            "kvcheck/store/storage/engine.py", "kvcheck/harness/image.py"} <= files
    assert all(f.startswith("kvcheck/") for f in files)
    assert not any("__pycache__" in f or "/tests/" in f for f in files)
    # Run from a checkout: every module of every folder pyproject.toml maps is there.
    repo = Path(__file__).resolve().parents[2]
    config = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]
    for name, folder in config["package-dir"].items():
        for module in (repo / folder).rglob("*.py"):
            inside = Path(*name.split("."), module.relative_to(repo / folder)).as_posix()
            assert inside in files


def test_the_build_config_installs_the_same_commands() -> None:
    config = tomllib.loads(PACKAGE.build_config())
    assert config["project"]["name"] == "kvcheck"
    assert config["project"]["version"] == PACKAGE.version
    assert config["project"]["scripts"] == {"kvcheck": "kvcheck.harness.cli:main",
                                            "kvstore": "kvcheck.store.cli:main"}
    assert {"kvcheck", "kvcheck.store", "kvcheck.store.storage"} <= set(
        config["tool"]["setuptools"]["packages"])
    assert not any("extra" in r for r in config["project"]["dependencies"])


def test_tag_is_stable_and_independent_of_location(tree: Package, tmp_path: Path) -> None:
    tag = image_tag(KVSTORE, tree)
    assert TAG.fullmatch(tag)
    assert image_tag(KVSTORE, tree) == tag
    assert image_tag(KVSTORE, snapshot(tmp_path / "elsewhere")) == tag
    assert image_tag(KVSTORE, PACKAGE) == tag


def _edit(package: Package, inside: str) -> Package:
    package.files[inside].write_text(package.files[inside].read_text() + "\n")
    return package


def _add(package: Package, inside: str) -> Package:
    path = package.files["kvcheck/store/cli/__init__.py"].with_name("new_module.py")
    path.write_text("X = 1\n")
    return dataclasses.replace(package, files={**package.files, inside: path})


@pytest.mark.parametrize("change", [
    lambda p: _edit(p, "kvcheck/store/cli/__init__.py"),
    lambda p: _add(p, "kvcheck/store/new_module.py"),
    lambda p: dataclasses.replace(p, files={k: v for k, v in p.files.items()
                                            if k != "kvcheck/store/ring.py"}),
    lambda p: dataclasses.replace(p, version=p.version + "9"),
    lambda p: dataclasses.replace(p, scripts={**p.scripts, "kvextra": "kvcheck.store.cli:main"}),
], ids=["edited", "added", "removed", "version", "scripts"])
def test_a_changed_input_changes_the_tag(tree: Package,
                                         change: Callable[[Package], Package]) -> None:
    before = image_tag(KVSTORE, tree)
    assert image_tag(KVSTORE, change(tree)) != before


def test_the_base_is_an_input(tree: Package) -> None:
    assert image_tag(KVSTORE, tree, Base.DEBOOTSTRAP) != image_tag(KVSTORE, tree, Base.SLIM)
    assert base_tag(Base.DEBOOTSTRAP) != base_tag(Base.SLIM)
    with pytest.raises(ValueError, match="resolve"):
        base_recipe(Base.AUTO)


def test_pins_are_the_installed_runtime_closure() -> None:
    import msgpack
    import trio

    pins = PACKAGE.pins()
    assert f"trio=={trio.__version__}" in pins
    assert f"msgpack=={'.'.join(map(str, msgpack.version))}" in pins
    names = {pin.partition("==")[0] for pin in pins}
    assert {"sniffio", "outcome", "h11", "docker", "requests"} <= names  # transitive ones too
    assert "hypothesis" in names  # kvcheck explore's search is part of the package
    assert not names & {"kvcheck", "pytest", "ruff", "mypy"}  # not itself, no extras
    assert pins == sorted(pins)


def test_a_dependency_not_installed_is_a_clear_error(tree: Package) -> None:
    broken = dataclasses.replace(tree, requires=(*tree.requires, "kvcheck-no-such-dependency>=1"))
    with pytest.raises(PackageError, match=r"kvcheck-no-such-dependency.*not installed"):
        image_tag(KVSTORE, broken)


def test_a_databases_packages_and_files_are_inputs_of_its_image_and_nothing_else() -> None:
    tools = Tools()
    dockerfile = node_dockerfile("kvcheck-base:x", tools.image)
    assert "apt-get install -y -q --no-install-recommends netcat-openbsd" in dockerfile
    assert "COPY files/ /" in dockerfile
    assert "/opt/kvcheck" not in dockerfile  # no kvcheck in a node that does not run it
    tag = image_tag(tools, None)
    assert re.fullmatch(r"kvcheck-node:tools-[0-9a-f]{12}", tag)
    assert image_tag(tools, dataclasses.replace(PACKAGE, version="9")) == tag

    class More(Tools):
        image = NodeImage(packages=("netcat-openbsd", "jq"), files=Tools.image.files)

    class Edited(Tools):
        image = NodeImage(packages=Tools.image.packages,
                          files={**Tools.image.files, "/etc/kvcheck-test.conf": "answer = 43\n"})

    assert len({tag, image_tag(More(), None), image_tag(Edited(), None)}) == 3


def test_wrapper_exports_the_faketime_environment() -> None:
    script = faketime_wrapper()
    env = faketime_env()
    for name in ("LD_PRELOAD", "FAKETIME_NO_CACHE", "FAKETIME_DONT_FAKE_MONOTONIC"):
        assert f"export {name}={env[name]}\n" in script
    assert f"${{FAKETIME_TIMESTAMP_FILE:-{FAKETIME_FILE}}}" in script
    assert script.endswith('exec "$@"\n')


def test_no_engine_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(EngineUnavailable, match=r"no Docker engine at unix://.*scripts/docker-engine"):
        connect(timeout=5)


def _no_images() -> Any:
    """A stand-in client whose engine has no images, so that a base build is attempted."""

    def get(name: str) -> None:
        raise docker.errors.ImageNotFound(name)

    return SimpleNamespace(images=SimpleNamespace(get=get))


def test_bootstrapping_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base_image.os, "geteuid", lambda: 1000)
    with pytest.raises(BootstrapError, match="needs root"):
        ensure_base(_no_images(), Base.DEBOOTSTRAP)


# --- integration: a real build and a real container -----------------------------------------

@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    engine = connect()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Package:
    return snapshot(tmp_path_factory.mktemp("image") / "project")


@pytest.fixture(scope="module")
def built(client: docker.DockerClient, project: Package) -> str:
    """The reference store's node image, built (or found) from the project snapshot."""
    return ensure_image(client, KVSTORE, project, progress=print)


@pytest.fixture(scope="module")
def container(client: docker.DockerClient, built: str) -> Iterator[Container]:
    """One container of the store image, as the cluster backend runs them; always removed."""
    node = client.containers.create(
        built, name=f"kvcheck-test-image-{uuid.uuid4().hex[:8]}", init=True,
        cap_add=["NET_ADMIN"], labels={LABEL: "1", "org.kvcheck.test": "image"})
    try:
        node.start()
        yield node
    finally:
        node.remove(force=True)


def run(container: Container, *command: str, environment: dict[str, str] | None = None) -> str:
    """Output of ``command`` exec'd in ``container``; asserts that it exited 0."""
    code, output = container.exec_run(list(command), environment=environment)
    text = output.decode(errors="replace")
    assert code == 0, f"{command} exited {code}: {text}"
    return text


@pytest.mark.integration
def test_the_image_builds_labelled(client: docker.DockerClient, built: str) -> None:
    image = client.images.get(built)
    assert image.labels[LABEL] == "1"
    assert (image.labels[ROLE_LABEL], image.labels[DB_LABEL]) == ("node", "kvstore")
    base = client.images.get(base_tag(resolve_base(client, Base.AUTO)))
    assert (base.labels[LABEL], base.labels[ROLE_LABEL]) == ("1", "base")


@pytest.mark.integration
def test_an_unchanged_tree_does_not_rebuild(client: docker.DockerClient, built: str,
                                            project: Package) -> None:
    before = client.images.get(built).id
    said: list[str] = []
    assert ensure_image(client, KVSTORE, project, progress=said.append) == built
    assert client.images.get(built).id == before
    assert said == [f"{built} is up to date"]


@pytest.mark.integration
def test_cleanup_removes_store_images_of_earlier_trees_only(
    client: docker.DockerClient, built: str, project: Package
) -> None:
    dockerfile = f"FROM {built}\nLABEL org.kvcheck.test=stale\n".encode()
    stale, _ = client.images.build(fileobj=io.BytesIO(dockerfile),
                                   tag="kvcheck-node:kvstore-stale-test", rm=True)
    assert stale.labels[ROLE_LABEL] == "node"
    assert "kvcheck-node:kvstore-stale-test" in remove_stale_images(client, project)
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("kvcheck-node:kvstore-stale-test")
    assert client.images.get(built)  # the current tree's image stays


@pytest.mark.integration
def test_container_is_unprivileged_with_net_admin(container: Container) -> None:
    container.reload()
    host = container.attrs["HostConfig"]
    assert host["Privileged"] is False
    assert host["CapAdd"] == ["NET_ADMIN"]


@pytest.mark.integration
def test_store_and_its_dependencies_import(container: Container) -> None:
    run(container, "python3", "-c", "import kvcheck.store.server, trio, msgpack")
    assert "usage: kvstore" in run(container, "kvstore", "--help")


@pytest.mark.integration
def test_fault_tools_are_there(container: Container) -> None:
    assert "iptables v" in run(container, "iptables", "-V")
    assert "iproute2" in run(container, "tc", "-V")
    assert "procps" in run(container, "ps", "-V")
    run(container, "iptables", "-S")  # NET_ADMIN is enough to read (and write) the rules
    run(container, "tc", "qdisc", "show", "dev", "eth0")


def _clocks(container: Container, command: list[str], environment: dict[str, str] | None = None,
            ) -> tuple[float, float, float, float, float, float]:
    """(host wall before, container wall, host wall after, and the same for monotonic)."""
    wall0, mono0 = time.time(), time.monotonic()
    out = run(container, *command, "python3", "-c",
              "import time; print(time.time(), time.monotonic())", environment=environment)
    wall1, mono1 = time.time(), time.monotonic()
    wall, mono = map(float, out.split())
    return wall0, wall, wall1, mono0, mono, mono1


@pytest.mark.integration
def test_faketime_offsets_the_wall_clock_only(container: Container) -> None:
    node_file = "/var/lib/kvcheck/n1.offset"
    run(container, "sh", "-c", f"printf '+3600s\\n' > {node_file}")
    # Through the wrapper, the per-node file named in the environment...
    w0, wall, w1, m0, mono, m1 = _clocks(container, [FAKETIME_WRAPPER],
                                         {"FAKETIME_TIMESTAMP_FILE": node_file})
    assert w0 + 3600 - 1 <= wall <= w1 + 3600 + 1
    assert m0 - 1 <= mono <= m1 + 1  # one CLOCK_MONOTONIC for host and containers, not faked
    # ...or with faketime_env() set directly; and the image's default file holds +0.
    w0, wall, w1, *_ = _clocks(container, [], faketime_env(node_file))
    assert w0 + 3600 - 1 <= wall <= w1 + 3600 + 1
    w0, wall, w1, *_ = _clocks(container, [FAKETIME_WRAPPER])
    assert w0 - 1 <= wall <= w1 + 1


@pytest.mark.integration
def test_faketime_offset_changes_at_once(container: Container) -> None:
    node_file = "/var/lib/kvcheck/n2.offset"
    run(container, "sh", "-c", f"printf '+0\\n' > {node_file}")
    out = run(container, FAKETIME_WRAPPER, "python3", "-c",
              f"import time; a = time.time(); open({node_file!r}, 'w').write('-30s\\n'); "
              "print(time.time() - a)", environment={"FAKETIME_TIMESTAMP_FILE": node_file})
    assert -31 <= float(out) <= -29


@pytest.mark.integration
def test_a_databases_image_holds_its_packages_and_files(client: docker.DockerClient) -> None:
    tag = ensure_image(client, Tools(), progress=print)
    assert client.images.get(tag).labels[DB_LABEL] == "tools"
    node = client.containers.create(tag, name=f"kvcheck-test-image-{uuid.uuid4().hex[:8]}",
                                    init=True, labels={LABEL: "1", "org.kvcheck.test": "image"})
    try:
        node.start()
        assert "hello from /usr/local/bin/hello" in run(node, "hello")
        assert run(node, "cat", "/etc/kvcheck-test.conf") == "answer = 42\n"
        assert run(node, "stat", "-c", "%a", "/etc/kvcheck-test.conf").strip() == "644"
        run(node, "sh", "-c", "command -v nc")  # the Debian package is installed
        assert "LD_PRELOAD" in run(node, FAKETIME_WRAPPER, "env")
        code, _ = node.exec_run(["test", "-e", "/opt/kvcheck"])
        assert code != 0
    finally:
        node.remove(force=True)


@pytest.mark.integration
def test_a_failed_debootstrap_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing listens on the discard port of loopback: debootstrap fails at once.
    monkeypatch.setenv("KVCHECK_DEBIAN_MIRROR", "http://127.0.0.1:9/debian")
    with pytest.raises(BootstrapError, match=r"debootstrap failed .*KVCHECK_DEBIAN_MIRROR"):
        ensure_base(_no_images(), Base.DEBOOTSTRAP)


@pytest.mark.integration
def test_a_failed_build_is_a_clear_error(client: docker.DockerClient, built: str,
                                         tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM {built}\nRUN echo broken >&2; exit 3\n")
    tag = f"kvcheck-test-broken:{uuid.uuid4().hex[:8]}"
    failed = r"docker build of \S+ failed: The command .* returned a non-zero code: 3\. "
    with pytest.raises(BuildError, match=failed):
        base_image.docker_build(client, tmp_path, tag, role="test", progress=print)
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(tag)
