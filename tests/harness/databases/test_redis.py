"""The Redis adapter: its error mapping and commands, then real redis-server and redis-sentinel
processes on loopback — three-node clusters that form and settle, serve every operation, fail
over when the primary stops, and lose an acknowledged write the way Redis's documentation says
asynchronous replication can."""

from __future__ import annotations

import copy
import dataclasses
import glob
import os
import random
import shutil
import signal
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import trio
from loopback import LoopbackCluster, loopback_cluster

from kvcheck.harness.databases.interface import DatabaseError, Fail, Info, Ok, Operation
from kvcheck.harness.databases.redis import owned_config
from kvcheck.harness.databases.redis_client import (
    REDIS_PORT,
    SENTINEL_PORT,
    NoPrimary,
    RedisClient,
    command,
    failure,
    outcome,
)
from kvcheck.harness.databases.redis_protocol import (
    ConnectionFailed,
    ConnectionLost,
    ErrorReply,
    call_once,
    encode,
)
from kvcheck.harness.spec import TestSpec

T = TypeVar("T")
PACKAGES = "redis-server redis-sentinel"


# -- the client's rules, without a server -------------------------------------------------------

_READONLY = ErrorReply("READONLY You can't write against a read only replica.")


@pytest.mark.parametrize(("f", "error", "sent", "expected"), [
    ("write", ConnectionFailed("cannot connect to 127.0.0.1:6379: Connection refused"), False,
     Fail),
    ("write", NoPrimary("no primary known", "the sentinel knows no primary: None"), False,
     Fail),
    ("write", trio.TooSlowError(), False, Fail),
    ("write", trio.TooSlowError(), True, Info),
    ("cas", ConnectionLost("the server closed the connection"), True, Info),
    ("add", ConnectionLost("the server closed the connection"), True, Info),
    ("read", ConnectionLost("the server closed the connection"), True, Fail),
    ("read", trio.TooSlowError(), True, Fail),
    ("write", _READONLY, True, Fail),
    ("cas", ErrorReply("NOREPLICAS Not enough good replicas to write. script: 1f, on @user_"
                       "script:1."), True, Fail),
    ("add", ErrorReply("LOADING Redis is loading the dataset in memory"), True, Fail),
    ("add", ErrorReply("ERR something Redis does not document as a refusal"), True, Info),
    ("read", ErrorReply("ERR anything"), True, Fail),
])
def test_error_mapping(f: str, error: Exception, sent: bool, expected: type) -> None:
    completion = failure(Operation(f, "k", 1), error, sent)
    assert type(completion) is expected
    assert completion.error and "\n" not in completion.error


def test_timeouts_say_whether_the_command_had_left() -> None:
    op = Operation("write", "k", 1)
    assert failure(op, trio.TooSlowError(), True, 4) == Info("timed out after 4 s")
    assert failure(op, trio.TooSlowError(), False, 4) == Fail(
        "timed out reaching the primary after 4 s")
    assert failure(op, trio.TooSlowError(), True) == Info("timed out")


def test_commands_and_their_replies() -> None:
    assert command(Operation("read", "k"), "register") == ("GET", "k")
    assert command(Operation("write", "k", 3), "register") == ("SET", "k", 3)
    assert command(Operation("cas", "k", [3, 4]), "register")[2:] == (1, "k", 3, 4)
    assert command(Operation("add", "s", 5), "set") == ("SADD", "s", 5)
    assert command(Operation("read", "s"), "set") == ("SMEMBERS", "s")
    with pytest.raises(ValueError, match="no 'add' operation for the register workload"):
        command(Operation("add", "k", 1), "register")
    assert outcome(Operation("read", "k"), None) == Ok(None)
    assert outcome(Operation("read", "k"), "-12") == Ok(-12)
    assert outcome(Operation("read", "k"), "x1") == Ok("unexpected:'x1'")
    assert outcome(Operation("read", "s"), ["10", "9"]) == Ok([9, 10])
    assert outcome(Operation("read", "s"), ["1", "a"]) == Ok("unexpected:['1', 'a']")
    assert outcome(Operation("write", "k", 3), "OK") == Ok(3)
    assert outcome(Operation("cas", "k", [3, 4]), 1) == Ok([3, 4])
    assert isinstance(outcome(Operation("cas", "k", [3, 4]), 0), Fail)
    assert outcome(Operation("add", "s", 5), 0) == Ok(5)  # already there: added all the same


def test_commands_are_resp_arrays() -> None:
    assert encode("SET", "k", 3) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n3\r\n"
    assert encode("GET", "é") == b"*2\r\n$3\r\nGET\r\n$2\r\n\xc3\xa9\r\n"


def test_a_configuration_file_is_written_once(tmp_path: Path) -> None:
    path = str(tmp_path / "data" / "x.conf")
    first = subprocess.run(owned_config(path, "first 'quoted' $text\n", "cat"),
                           capture_output=True, text=True, check=True)
    second = subprocess.run(owned_config(path, "second\n", "cat"),
                            capture_output=True, text=True, check=True)
    assert first.stdout == second.stdout == "first 'quoted' $text\n"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["x.conf"]


def test_topology_and_faults(tmp_path: Path) -> None:
    cluster = LoopbackCluster("redis", tmp_path, 5)  # not started: only its addresses are used
    redis = cluster.database
    primary, replica = (redis.processes(n, cluster) for n in ("n1", "n2"))
    assert [(p.name, p.faults) for p in primary] == [("redis-server", True),
                                                     ("redis-sentinel", False)]
    assert "replicaof" not in primary[0].argv[-1]
    assert f"replicaof {cluster.host('n1')} {REDIS_PORT}" in replica[0].argv[-1]
    assert f"{cluster.host('n1')} {REDIS_PORT} 3\n" in replica[1].argv[-1]  # quorum 3 of 5
    assert "appendfsync always" in replica[0].argv[-1]
    assert set(redis.unsupported_faults) == {"clock", "membership"}
    with pytest.raises(DatabaseError, match="cannot add a member"):
        redis.processes("n2", cluster, join="n1")
    assert TestSpec(db="redis", workload="set").guarantee == "no-lost-writes"
    assert TestSpec(db="redis", workload="register").guarantee == "linearizable"


# -- real clusters --------------------------------------------------------------------------------


def require_programs() -> None:
    missing = [p for p in PACKAGES.split() if shutil.which(p) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: the Redis tests need Debian's "
                    f"{PACKAGES} (apt-get install {PACKAGES})")


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackCluster]:
    """A settled three-node cluster for the tests that leave it as they found it."""
    require_programs()
    with loopback_cluster("redis", tmp_path_factory.mktemp("redis"), 3) as cluster:
        trio.run(cluster.wait_ready)
        yield cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LoopbackCluster]:
    """A settled three-node cluster of its own, for a test that breaks it."""
    require_programs()
    with loopback_cluster("redis", tmp_path, 3) as cluster:
        trio.run(cluster.wait_ready)
        yield cluster


async def eventually(check: Callable[[], Awaitable[T | None]], what: str,
                     limit: float = 60) -> T:
    """Poll ``check`` until it returns something true; fail with ``what`` after ``limit``."""
    with trio.move_on_after(limit):
        while not (result := await check()):
            await trio.sleep(0.2)  # polling a condition under a deadline
        return result
    raise AssertionError(f"{what} (after {limit} s)")


async def new_primary(cluster: LoopbackCluster, old: str) -> str:
    """Wait until the sentinels name a primary other than ``old``; return it."""
    async def other() -> str | None:
        named = await cluster.database.primary(cluster)
        return named if named not in (None, old) else None
    return await eventually(other, f"no failover away from {old}")


async def on_server(cluster: LoopbackCluster, node: str, *args: str | int) -> object:
    """A command run on ``node``'s own redis-server."""
    return await call_once(cluster.host(node), REDIS_PORT, *args)


@pytest.mark.integration
def test_the_cluster_settles_with_the_first_node_primary(shared: LoopbackCluster) -> None:
    async def scenario() -> None:
        redis = shared.database
        assert await redis.primary(shared) == "n1"
        assert all([await redis.ready(n, shared) for n in shared.members])
        assert await redis.settled(shared)
        for node in shared.members:
            sentinel = (shared.root / node / "data" / "sentinel.conf").read_text()
            assert "sentinel myid" in sentinel  # Sentinel rewrote the file it owns
            assert await call_once(shared.host(node), SENTINEL_PORT, "SENTINEL",
                                   "GET-MASTER-ADDR-BY-NAME", "kvcheck") == [
                                       shared.host("n1"), str(REDIS_PORT)]
    trio.run(scenario)


@pytest.mark.integration
def test_register_operations_through_a_replica_nodes_sentinel(shared: LoopbackCluster) -> None:
    async def scenario() -> None:
        client = shared.database.client("n2", shared)
        try:
            assert await client.invoke(Operation("read", "r1")) == Ok(None)
            assert await client.invoke(Operation("write", "r1", 3)) == Ok(3)
            assert await client.invoke(Operation("read", "r1")) == Ok(3)
            assert await client.invoke(Operation("cas", "r1", [3, 4])) == Ok([3, 4])
            assert await client.invoke(Operation("cas", "r1", [3, 5])) == Fail(
                "the value did not match the expected one")
            assert await client.invoke(Operation("cas", "r-missing", [0, 1])) == Fail(
                "the value did not match the expected one")
            assert await client.invoke(Operation("read", "r1")) == Ok(4)
            primary = await shared.database.primary(shared)
            assert primary is not None
            assert await on_server(shared, primary, "GET", "r1") == "4"
        finally:
            await client.close()
            await client.close()  # safe to repeat
    trio.run(scenario)


@pytest.mark.integration
def test_set_operations_and_replica_state(shared: LoopbackCluster) -> None:
    sets = copy.copy(shared)  # the same cluster, seen by a test of the set workload
    sets.spec = dataclasses.replace(shared.spec, workload="set")
    redis = sets.database

    async def scenario() -> None:
        client = redis.client("n3", sets)
        for element in (12, 3, 7, 3):
            assert await client.invoke(Operation("add", "s1", element)) == Ok(element)
        assert await client.invoke(Operation("read", "s1")) == Ok([3, 7, 12])
        assert await client.invoke(Operation("read", "s-missing")) == Ok([])
        await client.close()
        keys = ["s1", "s-missing"]
        assert await redis.replicas(keys, sets) == {k: ["n1", "n2", "n3"] for k in keys}
        expected = {"s1": {"versions": [[3, 7, 12]]}, "s-missing": {"versions": []}}
        for node in sets.members:  # replication is asynchronous: each replica in its time
            async def replica(node: str = node) -> bool:
                return await redis.replica_state(node, keys, sets) == expected
            await eventually(replica, f"{node} does not hold the set")
    trio.run(scenario)


@pytest.mark.integration
def test_a_node_nobody_listens_on_fails(shared: LoopbackCluster) -> None:
    async def scenario() -> None:
        nowhere = shared.host("n1").rsplit(".", 1)[0] + ".250"
        client = RedisClient(nowhere, "register", timeout=4)
        for op in (Operation("write", "k", 1), Operation("read", "k")):
            completion = await client.invoke(op)
            assert isinstance(completion, Fail)
            assert completion.error == "sentinel: connection refused"
            assert f"{nowhere}:{SENTINEL_PORT}" in (completion.detail or "")
    trio.run(scenario)


@pytest.mark.integration
def test_a_request_to_a_paused_primary_times_out(shared: LoopbackCluster) -> None:
    """The primary is paused for about a second (less than a failover takes): the harness's
    own time limit cancels one client, two others give up by themselves; then every client
    works again, and so does a new one (as the harness makes after an ``Info``)."""
    redis = shared.database

    async def scenario() -> None:
        primary = await redis.primary(shared)
        assert primary is not None
        cancelled, writer, reader = (RedisClient(shared.host("n2"), "register", timeout=1)
                                     for _ in range(3))
        for client in (cancelled, writer, reader):  # each connected to the primary
            assert await client.invoke(Operation("write", "t", 1)) == Ok(1)
        ended: dict[str, object] = {}

        async def cut_by_the_harness() -> None:
            with trio.move_on_after(0.8) as scope:
                await cancelled.invoke(Operation("write", "t", 2))
            ended["cancelled"] = scope.cancelled_caught

        async def run(name: str, client: RedisClient, op: Operation) -> None:
            ended[name] = await client.invoke(op)

        shared.pause(primary)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(cut_by_the_harness)
                nursery.start_soon(run, "writer", writer, Operation("write", "t", 3))
                nursery.start_soon(run, "reader", reader, Operation("read", "t"))
        finally:
            shared.resume(primary)
        assert ended == {"cancelled": True, "writer": Info("timed out after 1 s"),
                         "reader": Fail("timed out after 1 s")}
        fresh = redis.client("n2", shared)
        assert await fresh.invoke(Operation("write", "t", 4)) == Ok(4)
        for used in (cancelled, writer, reader, fresh):
            assert isinstance(await used.invoke(Operation("read", "t")), Ok)
            await used.close()
    trio.run(scenario)


@pytest.mark.integration
def test_a_paused_primary_is_replaced_and_clients_follow(cluster: LoopbackCluster) -> None:
    redis = cluster.database

    async def scenario() -> None:
        assert await redis.primary(cluster) == "n1"
        kept = redis.client("n2", cluster)
        assert await kept.invoke(Operation("write", "k", 1)) == Ok(1)  # connected to n1
        cluster.pause("n1")
        paused_at = trio.current_time()
        successor = await new_primary(cluster, "n1")
        assert trio.current_time() - paused_at < 15
        # The kept connection still leads to the paused n1; then the client finds the new one.
        assert await kept.invoke(Operation("write", "k", 2)) == Info(
            f"timed out after {kept.timeout:g} s")
        assert await kept.invoke(Operation("write", "k", 3)) == Ok(3)
        on_n1 = redis.client("n1", cluster)  # n1's sentinel runs on, and names the successor
        assert await on_n1.invoke(Operation("write", "k", 4)) == Ok(4)
        assert await on_server(cluster, successor, "GET", "k") == "4"
        cluster.resume("n1")
        await eventually(lambda: redis.settled(cluster), "n1 did not rejoin as a replica")
        assert await redis.primary(cluster) == successor
        config = (cluster.root / "n1" / "data" / "redis.conf").read_text()
        assert f"replicaof {cluster.host(successor)} {REDIS_PORT}" in config  # CONFIG REWRITE
        assert await on_n1.invoke(Operation("read", "k")) == Ok(4)
        # The primary demoted under a kept connection: READONLY, not applied; then the client
        # asks the sentinel again, which still names it: it is no primary, nothing is sent.
        nowhere = cluster.host("n1").rsplit(".", 1)[0] + ".250"
        await on_server(cluster, successor, "REPLICAOF", nowhere, REDIS_PORT)
        readonly = await on_n1.invoke(Operation("write", "k", 5))
        assert readonly == Fail("not the primary (READONLY)")
        assert readonly.detail == "READONLY You can't write against a read only replica."
        assert await on_server(cluster, successor, "GET", "k") == "4"
        demoted = await on_n1.invoke(Operation("write", "k", 6))
        assert demoted == Fail("not the primary")
        assert demoted.detail == (f"{cluster.host(successor)}:{REDIS_PORT}, which the sentinel "
                                  "names, is not a primary (its role is slave)")
        await on_server(cluster, successor, "REPLICAOF", "NO", "ONE")
        for client in (kept, on_n1):
            await client.close()
    trio.run(scenario)


@pytest.mark.integration
def test_a_killed_primary_is_replaced_and_restarts_on_what_it_kept(
        cluster: LoopbackCluster) -> None:
    redis = cluster.database

    async def scenario() -> None:
        client = redis.client("n3", cluster)
        assert await client.invoke(Operation("write", "k", 1)) == Ok(1)
        sentinel = cluster.pids("n1", faults=False)
        cluster.kill("n1")
        assert cluster.pids("n1") == [] and cluster.pids("n1", faults=False) == sentinel
        successor = await new_primary(cluster, "n1")
        assert await redis.client("n3", cluster).invoke(Operation("write", "k", 2)) == Ok(2)
        cluster.start("n1")  # on its data; it was killed before anyone could demote it
        await eventually(lambda: redis.settled(cluster), "n1 did not rejoin as a replica")
        assert await redis.replica_state("n1", ["k"], cluster) == {"k": {"versions": [2]}}
        # A sentinel restarted on the file it rewrote knows at once what it had learnt: the
        # current primary (not the first node, as its first file said) and its own id.
        path = cluster.root / "n2" / "data" / "sentinel.conf"
        myid = next(line for line in path.read_text().splitlines()
                    if line.startswith("sentinel myid"))
        (pid,) = cluster.pids("n2", faults=False)
        os.kill(pid, signal.SIGKILL)

        async def sentinel_gone() -> bool:
            return not cluster.pids("n2", faults=False)
        await eventually(sentinel_gone, "the sentinel did not die")
        cluster.start("n2")

        async def named() -> object:
            with trio.move_on_after(1):
                try:
                    return await call_once(cluster.host("n2"), SENTINEL_PORT, "SENTINEL",
                                           "GET-MASTER-ADDR-BY-NAME", "kvcheck")
                except ConnectionFailed:
                    return None
            return None
        assert await eventually(named, "the sentinel did not restart") == [
            cluster.host(successor), str(REDIS_PORT)]
        assert myid in path.read_text().splitlines()
        await client.close()
    trio.run(scenario)


@pytest.mark.integration
def test_an_acknowledged_write_is_lost_when_a_replaced_primary_rejoins(
        cluster: LoopbackCluster) -> None:
    """The mechanism of the Redis canary, made deterministic: a primary that the sentinels
    replace while it cannot answer them still acknowledges, once it runs again, the write a
    client had sent it — it believes itself primary until a sentinel demotes it (about ten
    seconds later) — and that write is gone once it resynchronises from its successor."""
    sets = copy.copy(cluster)
    sets.spec = dataclasses.replace(cluster.spec, workload="set", op_timeout=60)
    redis = sets.database

    async def scenario() -> None:
        on_n1 = redis.client("n1", sets)
        assert await on_n1.invoke(Operation("add", "s", 1)) == Ok(1)  # connected to n1
        late: dict[str, object] = {}

        async def add_late() -> None:
            late["add 2"] = await on_n1.invoke(Operation("add", "s", 2))

        cluster.pause("n1")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(add_late)  # sent to the paused n1: it waits in its socket
            successor = await new_primary(sets, "n1")
            assert await redis.client("n2", sets).invoke(Operation("add", "s", 3)) == Ok(3)
            cluster.resume("n1")
        assert late == {"add 2": Ok(2)}  # acknowledged by n1, still a primary in its own eyes
        await eventually(lambda: redis.settled(sets), "n1 did not rejoin as a replica")
        assert await redis.primary(sets) == successor
        for node in sets.members:
            assert await redis.client(node, sets).invoke(Operation("read", "s")) == Ok([1, 3])
            assert await redis.replica_state(node, ["s"], sets) == {"s": {"versions": [[1, 3]]}}
        await on_n1.close()
    trio.run(scenario)


@pytest.mark.integration
def test_redis_server_hangs_under_libfaketime(tmp_path: Path) -> None:
    """Why the clock nemesis is refused: redis-server (built with jemalloc) never starts
    serving with libfaketime preloaded as the nemesis preloads it, while it does without."""
    require_programs()
    libraries = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
    if not libraries:
        pytest.fail("libfaketime is not installed (apt-get install libfaketime)")
    offset = tmp_path / "offset"
    offset.write_text("+1d\n")
    faked = {"LD_PRELOAD": libraries[0], "FAKETIME_TIMESTAMP_FILE": str(offset),
             "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    host = f"127.{random.randrange(1, 255)}.{random.randrange(256)}.1"

    def serves(environment: dict[str, str], log: Path) -> bool:
        with log.open("wb") as output:
            server = subprocess.Popen(["redis-server", "--bind", host, "--port", "6379",
                                       "--save", "", "--dir", str(tmp_path)],
                                      env={**os.environ, **environment}, stdout=output,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        try:
            async def answers() -> bool:
                async def pong() -> bool:
                    try:
                        return bool(await call_once(host, REDIS_PORT, "PING") == "PONG")
                    except ConnectionFailed:
                        return False
                with trio.move_on_after(3):
                    return await eventually(pong, "no answer")
                return False
            return trio.run(answers)
        finally:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()

    assert serves({}, tmp_path / "plain.log")
    assert not serves(faked, tmp_path / "faked.log")
    assert "recursive calls to clock_gettime()" in (tmp_path / "faked.log").read_text()
