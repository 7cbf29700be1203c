"""``kvcheck run --backend ssh``: a whole test on hosts reached over SSH (containers that run
sshd, on a network that reaches no package index) — valid, with the faults a Docker run of the
same seed draws — and hosts left exactly as they were."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from ssh_hosts import Hosts, ssh_hosts

from kvcheck.harness.cli import main
from kvcheck.harness.exitcodes import Exit

pytestmark = pytest.mark.integration

#: What a host looks like from inside, for comparing before and after a run.
LOOK = ("iptables -S; tc qdisc show; ls -a /var/lib /etc /run; ps -eo comm,args "
        "| grep -v -e '^ps ' -e '^sh ' -e '^grep ' -e '^sshd ' | sort")  # sshd: the look's own


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    with ssh_hosts(tmp_path_factory.mktemp("ssh-run"), 3) as running:
        yield running


def test_a_test_with_each_kind_of_fault_runs_on_hosts_and_leaves_them_as_they_were(
        hosts: Hosts, tmp_path: Path) -> None:
    before = [hosts.exec(i, LOOK) for i in range(3)]
    nodes_file = tmp_path / "nodes"
    nodes_file.write_text("# the test's hosts\n" + "\n".join(hosts.addresses) + "\n")
    test = ["--nemesis", "partition,kill,pause,clock", "--nemesis-mode", "turns",
            "--time-limit", "30", "--nemesis-interval", "3", "--recovery-time", "3", "--seed", "3"]
    code = main(["run", "--backend", "ssh", "--nodes-file", str(nodes_file),
                 "--ssh-config", str(hosts.options.config), *test,
                 "--histories", str(tmp_path / "histories")])
    run_dir = (tmp_path / "histories" / "latest").resolve()
    assert code == Exit.OK
    assert main(["run", "--backend", "docker", "--nodes", "3", *test,
                 "--histories", str(tmp_path / "docker")]) == Exit.OK
    in_docker = (tmp_path / "docker" / "latest").resolve()
    assert faults(run_dir) == faults(in_docker)  # the same seed: the same faults, in order
    recorded = json.loads((run_dir / "test.json").read_text())
    assert recorded["backend"] == "ssh" and recorded["node_count"] == 3
    assert recorded["hosts"] == dict(zip(["n1", "n2", "n3"], hosts.addresses, strict=True))
    ops = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()[1:]]
    started = {op["f"] for op in ops if op["process"] == "nemesis" and op["type"] == "info"}
    assert {f"{edge}-{kind}" for edge in ("start", "stop")
            for kind in ("partition", "kill", "pause", "clock")} <= started
    assert sum(op["type"] == "ok" for op in ops) > 200
    report = (run_dir / "report.html").read_text()
    for node, address in zip(["n1", "n2", "n3"], hosts.addresses, strict=True):
        assert "connected to" in (run_dir / "nodes" / node / "kvstore.log").read_text()
        assert f"{node}: {address}" in report
    assert [hosts.exec(i, LOOK) for i in range(3)] == before


def test_etcd_runs_on_hosts_too_its_package_brought_from_the_control_node(
        hosts: Hosts, tmp_path: Path) -> None:
    """Another database's adapter, unchanged: etcd's Debian package comes over (the hosts reach
    no mirror), its processes start, its faults apply; the run is valid (etcd is
    linearizable), and nothing of kvcheck's is left (the package stays: it is the host's)."""
    argv = ["run", "--backend", "ssh", "--db", "etcd", "--ssh-config",
            str(hosts.options.config), *(a for address in hosts.addresses
                                         for a in ("--node", address)),
            "--nemesis", "partition", "--time-limit", "15", "--nemesis-interval", "4",
            "--recovery-time", "3", "--seed", "2", "--histories", str(tmp_path)]
    assert main(argv) == Exit.OK
    for index in range(3):
        assert "install ok installed" in hosts.exec(index, "dpkg -s etcd-server")
        assert hosts.exec(index, "iptables -S | grep -c KVCHECK || true") == "0"
        assert hosts.exec(index, "ls /var/lib/kvcheck /var/lib/kvcheck-db 2>&1 || true") \
            .count("No such file") == 2
        assert "etcd" not in hosts.exec(index, "ps -eo comm")


def faults(run_dir: Path) -> list[tuple[str, list[str], dict[str, object]]]:
    """The faults a run applied, without their times."""
    schedule = json.loads((run_dir / "schedule.json").read_text())["faults"]
    return [(f.pop("kind"), f.pop("targets"), {k: v for k, v in f.items()
                                                if k not in ("at", "duration")})
            for f in schedule]


def test_cleanup_removes_what_an_earlier_run_left_on_a_host(
        hosts: Hosts, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = hosts.exec(2, LOOK)
    hosts.exec(2, "mkdir -p /var/lib/kvcheck/run /etc/kvstore && echo s > /etc/kvstore/secret && "
                  "printf '/etc/kvstore\\n/etc/kvstore/secret\\n' > /var/lib/kvcheck/created && "
                  "(setsid sleep 1000 < /dev/null > /dev/null 2>&1 & echo $! > "
                  "/var/lib/kvcheck/run/kvstore.pid) && iptables -N KVCHECK && "
                  "iptables -I INPUT -j KVCHECK && iptables -A KVCHECK -s 10.9.9.9 -j DROP")
    assert hosts.exec(2, LOOK) != before
    argv = ["cleanup", "--backend", "ssh", "--node", hosts.addresses[2],
            "--ssh-config", str(hosts.options.config)]
    assert main(argv) == Exit.OK
    assert f"cleaned 1 of 1 host(s): {hosts.addresses[2]}" in capsys.readouterr().out
    assert hosts.exec(2, LOOK) == before
    assert main(argv) == Exit.OK  # nothing left: nothing to do
    assert "cleaned 0 of 1 host(s)" in capsys.readouterr().out
    assert main(["cleanup", "--backend", "ssh"]) == Exit.USAGE
