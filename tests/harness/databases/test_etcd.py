"""The etcd adapter: its configuration and error mapping, then real 3-member clusters on loopback.

The integration tests need Debian's ``etcd-server``; without it they fail, naming the package.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trio
from loopback import LoopbackCluster

from kvcheck.harness.databases.etcd import Etcd
from kvcheck.harness.databases.etcd_client import (
    ADD_ATTEMPTS,
    EtcdClient,
    EtcdError,
    completion_of,
)
from kvcheck.harness.databases.interface import (
    Capability,
    Client,
    Completion,
    DatabaseError,
    Fail,
    Info,
    Ok,
    Operation,
)
from kvcheck.harness.spec import SpecError, TestSpec

MakeCluster = Callable[..., LoopbackCluster]

# -- configuration, without processes -------------------------------------------------------------


def test_each_member_gets_the_whole_cluster_and_its_own_addresses(tmp_path: Path) -> None:
    cluster = LoopbackCluster("etcd", tmp_path)
    [process] = cluster.database.processes("n2", cluster)
    argv = list(process.argv)
    flag = {argv[i]: argv[i + 1] for i in range(1, len(argv), 2)}
    host = cluster.host("n2")
    assert argv[0] == "etcd" and process.faults
    assert flag["--name"] == "n2"
    assert flag["--data-dir"] == Etcd.data_dir
    assert flag["--listen-client-urls"] == flag["--advertise-client-urls"] == f"http://{host}:2379"
    assert flag["--listen-peer-urls"] == flag["--initial-advertise-peer-urls"] \
        == f"http://{host}:2380"
    assert flag["--initial-cluster"] == ",".join(
        f"{n}=http://{cluster.host(n)}:2380" for n in ("n1", "n2", "n3"))
    assert cluster.run_id in flag["--initial-cluster-token"]
    assert flag["--initial-cluster-state"] == "new"


def test_what_etcd_declares(tmp_path: Path) -> None:
    cluster = LoopbackCluster("etcd", tmp_path)
    etcd = cluster.database
    assert etcd.name == "etcd"
    assert etcd.image.packages == ("etcd-server",)
    assert etcd.capabilities == {Capability.PRIMARY, Capability.CAS, Capability.REPLICA_STATE}
    assert set(etcd.unsupported_faults) == {"clock", "membership"}
    assert "vDSO" in etcd.unsupported_faults["clock"]
    assert TestSpec(db="etcd", nemesis=()).guarantee == "linearizable"
    assert TestSpec(db="etcd", nemesis=(), db_options=(("reads", "serializable"),)).guarantee \
        == "linearizable"
    assert TestSpec(db="etcd", nemesis=(), workload="set").guarantee == "no-stale-reads"
    with pytest.raises(DatabaseError, match="cannot join"):
        etcd.processes("n3", cluster, join="n1")
    with pytest.raises(SpecError, match="reads must be one of linearizable, serializable"):
        TestSpec(db="etcd", db_options=(("reads", "eventual"),))


def test_the_error_mapping() -> None:
    request = httpx.Request("POST", "http://127.0.0.1:2379/v3/kv/put")
    refused = httpx.ConnectError("", request=request)
    refused.__cause__ = ExceptionGroup("", [ConnectionRefusedError(111, "refused")])
    never_sent = [refused, httpx.ConnectTimeout("", request=request)]
    maybe_applied = [httpx.ReadTimeout("", request=request),
                     httpx.RemoteProtocolError("", request=request),
                     httpx.ReadError("", request=request),
                     EtcdError("etcdserver: request timed out", 14),
                     EtcdError("etcdserver: leader changed", 2),
                     EtcdError("etcdserver: no leader", 14),
                     EtcdError("context deadline exceeded", 2)]
    rejected = [EtcdError("etcdserver: too many requests", 14),
                EtcdError("etcdserver: request is too large", 3),
                EtcdError("illegal base64 data at input byte 0", 3)]
    for error in never_sent + rejected:
        assert isinstance(completion_of(error, mutating=True), Fail), error
    for error in maybe_applied:
        assert isinstance(completion_of(error, mutating=True), Info), error
    for error in never_sent + maybe_applied + rejected:
        assert isinstance(completion_of(error, mutating=False), Fail), error
    assert completion_of(refused, mutating=True) == Fail("connection refused")
    assert completion_of(maybe_applied[0], mutating=True) == Info("timed out")
    assert completion_of(maybe_applied[0], mutating=True, timeout=2) == Info("timed out after 2 s")
    assert completion_of(maybe_applied[1], mutating=True) == Info("malformed reply")
    assert completion_of(maybe_applied[2], mutating=True) == Info("connection lost")
    assert completion_of(maybe_applied[3], mutating=True) == Info("etcd: request timed out")
    assert completion_of(maybe_applied[5], mutating=True) == Info("etcd: no leader")
    assert completion_of(maybe_applied[6], mutating=True) == Info("etcd: timed out")


def test_a_port_nobody_listens_on_is_fail() -> None:
    async def main() -> None:
        address = f"127.{random.randrange(1, 255)}.{random.randrange(256)}.250"
        client = EtcdClient(address, workload="register")
        try:
            assert await client.invoke(Operation("write", "k", 1)) == Fail("connection refused")
            assert await client.invoke(Operation("read", "k")) == Fail("connection refused")
        finally:
            await client.close()

    trio.run(main)


# -- real clusters ------------------------------------------------------------------------------


async def run(client: Client, f: str, key: str, value: object = None) -> Completion:
    return await client.invoke(Operation(f, key, value))


def connections_to(host: str, port: int) -> int:
    """TCP sockets this process holds open to ``host:port``."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    a, b, c, d = (int(x) for x in host.split("."))
    remote = f"{d:02X}{c:02X}{b:02X}{a:02X}:{port:04X}"
    with open("/proc/self/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return sum(1 for row in rows if row[2] == remote and row[9] in inodes)


@pytest.fixture
def etcd(loopback: MakeCluster) -> MakeCluster:
    """Start a cluster of etcd members and wait until it has settled."""
    def make(size: int = 3, **kwargs: object) -> LoopbackCluster:
        cluster = loopback("etcd", size, **kwargs)
        cluster.start()
        trio.run(cluster.wait_ready)
        return cluster
    return make


@pytest.mark.integration
def test_the_cluster_forms_and_settles_with_one_leader(etcd: MakeCluster) -> None:
    cluster = etcd()

    async def main() -> None:
        leader = await cluster.database.primary(cluster)
        assert leader in cluster.members
        assert await cluster.database.settled(cluster)

    trio.run(main)


@pytest.mark.integration
def test_register_operations(etcd: MakeCluster) -> None:
    cluster = etcd()

    async def main() -> None:
        n1 = cluster.database.client("n1", cluster)
        n3 = cluster.database.client("n3", cluster)
        try:
            assert await run(n1, "read", "r1") == Ok(None)
            assert await run(n1, "write", "r1", 3) == Ok(3)
            assert await run(n3, "read", "r1") == Ok(3)
            assert await run(n3, "cas", "r1", [3, 4]) == Ok([3, 4])
            assert await run(n1, "read", "r1") == Ok(4)
            mismatch = await run(n1, "cas", "r1", [3, 5])
            assert isinstance(mismatch, Fail) and "not 3" in mismatch.error
            assert isinstance(await run(n1, "cas", "r2", [0, 1]), Fail)  # a missing key
            assert await run(n3, "read", "r1") == Ok(4)
            assert await run(n3, "read", "r2") == Ok(None)
        finally:
            await n1.close()
            await n3.close()

    trio.run(main)


@pytest.mark.integration
def test_set_operations_under_contention(etcd: MakeCluster) -> None:
    """Clients adding to one set at once conflict; each add retries within the operation, and
    the set holds exactly the elements whose add was Ok."""
    cluster = etcd(workload="set")
    results: dict[int, Completion] = {}

    async def adder(node: str, elements: range) -> None:
        client = cluster.database.client(node, cluster)
        try:
            for element in elements:
                results[element] = await run(client, "add", "s1", element)
        finally:
            await client.close()

    async def main() -> None:
        reader = cluster.database.client("n2", cluster)
        try:
            assert await run(reader, "read", "s1") == Ok([])
            async with trio.open_nursery() as nursery:
                for i, node in enumerate(cluster.members):
                    nursery.start_soon(adder, node, range(i * 20, i * 20 + 20))
            read = await run(reader, "read", "s1")
        finally:
            await reader.close()
        added = sorted(e for e, r in results.items() if r == Ok(e))
        failed = [r for r in results.values() if r != Ok(None) and isinstance(r, Fail)]
        assert all(r.error == f"conflict: the set changed {ADD_ATTEMPTS} times during the add"
                   for r in failed)
        assert len(added) > len(results) // 2
        assert read == Ok(added)

    trio.run(main)


@pytest.mark.integration
def test_a_paused_member_times_out_and_the_client_leaves_nothing_open(
        etcd: MakeCluster) -> None:
    cluster = etcd()
    host = cluster.host("n1")

    async def main() -> None:
        cluster.pause("n1")
        client = cluster.database.client("n1", cluster)
        with trio.move_on_after(1.0) as scope:  # the harness's op_timeout
            await run(client, "write", "r1", 1)
        assert scope.cancelled_caught
        await client.close()
        assert connections_to(host, 2379) == 0

        short = EtcdClient(host, workload="register", timeout=0.5)  # its own timeout
        assert await run(short, "write", "r1", 2) == Info("timed out after 0.5 s")
        assert await run(short, "read", "r1") == Fail("timed out after 0.5 s")
        await short.close()
        assert connections_to(host, 2379) == 0

        cluster.resume("n1")
        again = cluster.database.client("n1", cluster)
        try:
            assert await run(again, "write", "r1", 3) == Ok(3)
            assert await run(again, "read", "r1") == Ok(3)
            assert connections_to(host, 2379) == 1  # one keep-alive connection
        finally:
            await again.close()

    trio.run(main)


@pytest.mark.integration
def test_a_member_that_is_down_is_fail(etcd: MakeCluster) -> None:
    cluster = etcd()
    cluster.kill("n3")

    async def main() -> None:
        client = cluster.database.client("n3", cluster)
        try:
            assert await run(client, "write", "r1", 1) == Fail("connection refused")
            assert await run(client, "cas", "r1", [1, 2]) == Fail("connection refused")
            assert await run(client, "read", "r1") == Fail("connection refused")
        finally:
            await client.close()
        assert not await cluster.database.ready("n3", cluster)

    trio.run(main)


@pytest.mark.integration
def test_serializable_reads_answer_from_a_member_cut_off_from_the_leader(
        etcd: MakeCluster) -> None:
    cluster = etcd(options={"reads": "serializable"})
    assert cluster.options == {"reads": "serializable"}

    async def main() -> None:
        writer = cluster.database.client("n1", cluster)
        assert await run(writer, "write", "r1", 7) == Ok(7)  # acknowledged once n1 applied it
        await writer.close()
        cluster.pause("n2")
        cluster.pause("n3")
        serializable = cluster.database.client("n1", cluster)
        linearizable = EtcdClient(cluster.host("n1"), workload="register", timeout=2.0)
        try:
            assert await run(serializable, "read", "r1") == Ok(7)
            assert isinstance(await run(linearizable, "read", "r1"), Fail)
        finally:
            await serializable.close()
            await linearizable.close()
            cluster.resume("n2")
            cluster.resume("n3")

    trio.run(main)


@pytest.mark.integration
def test_a_new_leader_after_the_leader_is_killed_and_a_restart_on_the_same_data(
        etcd: MakeCluster) -> None:
    cluster = etcd()
    etcd_db = cluster.database

    async def main() -> None:
        first = await etcd_db.primary(cluster)
        assert first is not None
        writer = etcd_db.client(first, cluster)
        assert await run(writer, "write", "r1", 11) == Ok(11)
        await writer.close()
        cluster.kill(first)
        with trio.fail_after(20):
            while (second := await etcd_db.primary(cluster)) in (None, first):
                await trio.sleep(0.1)  # polling a condition under a deadline
        assert second in cluster.members and second != first

        cluster.start(first)  # the same command, on the data it had
        await cluster.wait_ready()
        assert await etcd_db.primary(cluster) == second
        states = [await etcd_db.replica_state(n, ["r1", "r0"], cluster) for n in cluster.members]
        assert states[0] is not None and states[0]["r1"]["versions"][0]["value"] == 11
        assert states[0]["r0"] == {"versions": []}
        assert all(state == states[0] for state in states)
        reader = etcd_db.client(first, cluster)
        try:
            assert await run(reader, "read", "r1") == Ok(11)
        finally:
            await reader.close()

    trio.run(main)


@pytest.mark.integration
def test_a_paused_member_reports_no_replica_state(etcd: MakeCluster) -> None:
    cluster = etcd()

    async def main() -> None:
        cluster.pause("n2")
        try:
            assert await cluster.database.replica_state("n2", ["r1"], cluster) is None
            assert not await cluster.database.ready("n2", cluster)
        finally:
            cluster.resume("n2")

    trio.run(main)
