"""Commands on hosts over SSH (harness/ssh.py), against containers that run an SSH server: one
multiplexed connection per host, every command bounded in time, root or a clear error."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from ssh_hosts import Hosts, ssh_hosts

from kvcheck.harness.cli import build_parser
from kvcheck.harness.cli.run import specs_from
from kvcheck.harness.host_install import (
    ROOT,
    VENV,
    _download,
    _release,
    cached_wheels,
    install_kvcheck,
    install_packages,
    remove,
    required_packages,
)
from kvcheck.harness.package import Package
from kvcheck.harness.spec import SpecError, TestSpec
from kvcheck.harness.ssh import Host, SshError, SshOptions

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    with ssh_hosts(tmp_path_factory.mktemp("ssh"), 2) as running:
        yield running


def host(hosts: Hosts, index: int = 0, **options: object) -> Host:
    return Host(hosts.addresses[index], dataclasses.replace(hosts.options, **options))


def test_commands_run_as_root_over_one_connection_per_host(hosts: Hosts, tmp_path: Path) -> None:
    first = host(hosts)

    async def scenario() -> list[str]:
        try:
            outputs = [await first.run("id -u"), await first.run("cat", stdin=b"hello")]
            await first.put("/var/lib/kvcheck-test/file", b"data\n", mode=0o600)
            outputs.append(await first.run("cat /var/lib/kvcheck-test/file"))
            outputs.append(await first.run("stat -c %a /var/lib/kvcheck-test/file"))
            for _ in range(5):
                await first.run("true")
            return outputs
        finally:
            await first.close()

    assert trio.run(scenario) == ["0", "hello", "data", "600"]
    # Nine commands, one login: sshd logged one accepted key for this host's master.
    logins = hosts.containers[0].logs().decode().count("Accepted publickey for root")
    assert logins == 1
    assert not first.control_dir.exists()  # the master ended with close()


def test_a_command_that_overruns_its_timeout_is_killed_on_the_host(
        hosts: Hosts, tmp_path: Path) -> None:
    second = host(hosts, 1)

    async def scenario() -> None:
        try:
            with pytest.raises(SshError, match=r"did not finish within 1 s; it was killed"):
                await second.run("sleep 37", timeout=1)
            with pytest.raises(SshError, match=r"`exit 3` failed with status 3"):
                await second.run("exit 3")
            assert await second.run("exit 3", check=False) == ""
        finally:
            await second.close()

    trio.run(scenario)
    assert "sleep 37" not in hosts.exec(1, "ps -eo args")


def test_an_unreachable_host_and_a_user_without_root_are_named_with_what_is_missing(
        hosts: Hosts, tmp_path: Path) -> None:
    closed = host(hosts, port=2222, connect_timeout=3)
    with pytest.raises(SshError, match=rf"{hosts.addresses[0]}: cannot connect over SSH: .*"
                                       "Connection refused"):
        trio.run(closed.check)
    plain = host(hosts, user="plain")
    with pytest.raises(SshError, match=rf"{hosts.addresses[0]}: the user is not root and "
                                       "cannot sudo without a password"):
        trio.run(plain.check)
    trio.run(plain.close)
    with pytest.raises(SshError, match="is not a host name"):
        Host("-oProxyCommand=x", SshOptions())


def test_the_ssh_command_line_adds_the_options_given_to_the_users_own(tmp_path: Path) -> None:
    one = Host("db1", SshOptions())
    plain = one.argv("true")
    assert plain[0] == "ssh" and plain[-3:] == ["--", "db1", "true"]
    assert f"ControlPath={one.control_dir}/%C" in plain and "BatchMode=yes" in plain
    assert "-F" not in plain and "-l" not in plain  # ~/.ssh/config and its User apply
    given = Host("db1", SshOptions(user="admin", key=Path("k"), port=2200,
                                   config=Path("c"))).argv()
    assert given[given.index("-l") + 1] == "admin" and given[given.index("-p") + 1] == "2200"
    assert given[given.index("-i") + 1] == "k" and given[given.index("-F") + 1] == "c"


def test_kvcheck_goes_onto_a_host_from_the_control_node_alone_and_comes_off_it(
        hosts: Hosts) -> None:
    """The host reaches no package index: its network is internal (tests/harness/ssh_hosts.py)."""
    second = host(hosts, 1)
    wheels = cached_wheels(Package.running(), say)
    version = Package.running().version

    async def scenario() -> str:
        try:
            await install_packages(second, required_packages(()), say)  # there already
            await install_kvcheck(second, wheels, version)
            shown = await second.run(f"{VENV}/bin/kvstore serve --help")
            await remove(second)
            return shown
        finally:
            await second.close()

    assert "--node-id" in trio.run(scenario)
    assert hosts.exec(1, f"test -e {ROOT} || echo gone") == "gone"


def test_debian_packages_a_host_lacks_come_from_the_control_node(hosts: Hosts) -> None:
    if shutil.which("apt-get") is None:
        pytest.skip("the control node has no apt: it cannot fetch Debian packages")
    first = host(hosts)

    async def scenario() -> str:
        try:
            assert "not installed" in await first.run("dpkg -s psmisc 2>&1", check=False)
            await install_packages(first, ["procps", "psmisc"], say)
            with pytest.raises(SshError, match="no-such-package-kv"):
                await install_packages(first, ["no-such-package-kv"], say)
            return await first.run("killall --version 2>&1")
        finally:
            await first.close()

    assert "PSmisc" in trio.run(scenario)
    assert hosts.exec(0, f"test -e {ROOT}/debs || echo gone") == "gone"


def test_hosts_installing_at_once_download_a_package_once_and_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("apt-get") is None or not _release():
        pytest.skip("the control node has no apt: it cannot fetch Debian packages")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # an empty cache
    ours = Path("/var/lib/dpkg/status").read_bytes().split(b"\n\n")
    lacking = b"\n\n".join(p for p in ours if not p.startswith(b"Package: psmisc\n"))
    said: list[str] = []
    start = threading.Barrier(3)

    def one_host() -> list[Path]:
        start.wait()
        return _download(["psmisc"], lacking, _release(), said.append)

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        debs = [f.result() for f in [pool.submit(one_host) for _ in range(3)]]
    assert len([line for line in said if line.startswith("downloading")]) == 1
    assert debs[0] == debs[1] == debs[2] and [d.name.split("_")[0] for d in debs[0]] == ["psmisc"]
    shown = subprocess.run(["dpkg-deb", "--info", str(debs[0][0])], capture_output=True)
    assert shown.returncode == 0, shown.stderr  # whole: a truncated one does not read
    assert [p.name for p in debs[0][0].parent.iterdir()] == [debs[0][0].name]  # no partials


def say(line: str) -> None:
    print(line)


@pytest.mark.parametrize(("given", "words"), [
    ({"backend": "ssh", "hosts": ("a", "b")}, "3 nodes need 3 hosts .--node HOST, repeated, or "
                                              "--nodes-file., and 2 were given"),
    ({"hosts": ("a", "b", "c")}, "--node and --nodes-file name hosts for --backend ssh"),
    ({"backend": "ssh", "hosts": ("a", "b", "a")}, "a host is named twice"),
    ({"backend": "ssh", "hosts": ("a", "b", "c"), "leave_running": True},
     "--leave-running needs --backend docker"),
])
def test_impossible_host_settings_are_refused_naming_the_option(
        given: dict[str, object], words: str) -> None:
    with pytest.raises(SpecError, match=words):
        TestSpec(nodes=3, nemesis=(), **given)  # type: ignore[arg-type]


def test_hosts_come_from_the_command_line_and_a_nodes_file_in_order(tmp_path: Path) -> None:
    nodes_file = tmp_path / "nodes"
    nodes_file.write_text("db2.example  # the second\n\n# spare:\ndb3.example\n")
    args = build_parser().parse_args(["run", "--backend", "ssh", "--node", "db1.example",
                                      "--nodes-file", str(nodes_file)])
    (spec,) = specs_from(args)
    assert spec.hosts == ("db1.example", "db2.example", "db3.example") and spec.nodes == 3
    assert spec.to_json()["hosts"] == {"n1": "db1.example", "n2": "db2.example",
                                       "n3": "db3.example"}
    args = build_parser().parse_args(["run", "--backend", "ssh", "--nodes", "2", "--n", "2",
                                      "--nodes-file", str(nodes_file), "--node", "db1.example"])
    assert specs_from(args)[0].to_json()["hosts"]["n3"] == "db3.example"  # a spare
    missing = build_parser().parse_args(["run", "--backend", "ssh", "--nodes-file",
                                         str(tmp_path / "none")])
    with pytest.raises(SpecError, match=r"--nodes-file .*none"):
        specs_from(missing)
