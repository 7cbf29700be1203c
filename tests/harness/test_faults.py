"""Each fault really takes effect, in real containers, and healing really undoes it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from kvcheck.harness.backend import BackendError, execute
from kvcheck.harness.databases.kvstore import PORT, KvStore
from kvcheck.harness.docker_cluster import RUN_LABEL, DockerCluster
from kvcheck.harness.engine import connect
from kvcheck.harness.image import ensure_image
from kvcheck.harness.spec import TestSpec
from kvcheck.nemesis import CutLinks, HealLinks, PacketFault
from kvcheck.store.client import StoreClient, StoreError

pytestmark = pytest.mark.integration

# Every fault kind, so that the store runs under libfaketime (only clock tests need it).
SPEC = TestSpec(nodes=3, n=3, w=2, r=2,
                nemesis=("partition", "kill", "pause", "clock", "packet"))
NODES = SPEC.node_ids


def store_pid(cluster: DockerCluster, node: str) -> int:
    """The store's pid inside ``node``'s container (changes on every restart)."""
    return int((cluster.node_dir(node) / "kvstore.pid").read_text())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerCluster]:
    client = connect()
    image = ensure_image(client, KvStore())
    run_dir: Path = tmp_path_factory.mktemp("faults")
    backend = DockerCluster(client, image, f"test-faults-{int(time.time())}", SPEC, KvStore(),
                            run_dir)
    try:
        trio.run(backend.setup)
        yield backend
    finally:
        trio.run(backend.teardown)
    left = client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={backend.run_id}"})
    assert left == [], "teardown left containers behind"
    assert client.networks.list(filters={"label": f"{RUN_LABEL}={backend.run_id}"}) == []


def connects(cluster: DockerCluster, src: str, dst: str, tries: int = 1,
             timeout: float = 1.0) -> int:
    """How many of ``tries`` TCP connections from ``src`` to ``dst``'s store port succeed."""
    ip = cluster.host(dst)
    script = (f"import socket\nok = 0\nfor _ in range({tries}):\n    try:\n"
              f"        socket.create_connection(('{ip}', {PORT}), timeout={timeout})"
              ".close()\n        ok += 1\n    except OSError:\n        pass\nprint(ok)")
    return int(cluster.exec(src, f"python3 -c \"{script}\""))


async def status(cluster: DockerCluster, node: str, timeout: float = 2.0) -> dict:  # type: ignore[type-arg]
    async with StoreClient(cluster.host(node), PORT, timeout=timeout) as client:
        return await client.status()


def test_a_cut_pair_cannot_talk_and_a_healed_one_can(cluster: DockerCluster) -> None:
    assert connects(cluster, "n1", "n2") == 1
    trio.run(execute, cluster, CutLinks(frozenset({("n1", "n2"), ("n2", "n1")})))
    try:
        assert connects(cluster, "n1", "n2") == 0
        assert connects(cluster, "n2", "n1") == 0
        assert connects(cluster, "n1", "n3") == 1  # only the cut pair is affected
    finally:
        trio.run(execute, cluster, HealLinks())
    assert connects(cluster, "n1", "n2") == 1
    assert "DROP" not in cluster.exec("n2", "iptables -S KVCHECK")


def test_two_cuts_of_one_link_heal_one_at_a_time(cluster: DockerCluster) -> None:
    """A partition and a zone outage that overlap: healing one keeps the other's cuts."""
    both = frozenset({("n1", "n2"), ("n2", "n1")})
    one_more = frozenset({("n3", "n2"), ("n2", "n3")})
    trio.run(execute, cluster, CutLinks(both))
    trio.run(execute, cluster, CutLinks(both | one_more))
    try:
        trio.run(execute, cluster, HealLinks(both | one_more))
        assert connects(cluster, "n1", "n2") == 0  # the first cut still holds
        assert connects(cluster, "n3", "n2") == 1
        trio.run(execute, cluster, HealLinks(both))
        assert connects(cluster, "n1", "n2") == 1
        assert "DROP" not in cluster.exec("n2", "iptables -S KVCHECK")
    finally:
        trio.run(execute, cluster, HealLinks())


def test_a_killed_node_comes_back_as_a_new_process_with_its_data(cluster: DockerCluster) -> None:
    async def scenario() -> None:
        async with StoreClient(cluster.host("n3"), PORT) as client:
            await client.put(b"durable", b"yes", w=3)
        before = store_pid(cluster, "n3")
        await cluster.kill("n3")
        with pytest.raises(StoreError):
            await status(cluster, "n3", timeout=1)
        await cluster.restart("n3")
        await cluster.wait_ready(["n3"])
        assert store_pid(cluster, "n3") != before
        async with StoreClient(cluster.host("n3"), PORT) as client:
            assert (await client.get(b"durable", r=1)).values == (b"yes",)

    trio.run(scenario)


def test_a_paused_node_does_not_answer_until_resumed(cluster: DockerCluster) -> None:
    async def scenario() -> None:
        await cluster.pause("n2")
        try:
            with pytest.raises(StoreError):
                await status(cluster, "n2", timeout=1)
        finally:
            await cluster.resume("n2")
        assert (await status(cluster, "n2"))["node_id"] == "n2"

    trio.run(scenario)


async def skew_of(cluster: DockerCluster, node: str) -> float:
    """How far ``node``'s wall clock, as its store reports it, is from the host's (s)."""
    before = time.time()
    reported = (await status(cluster, node))["wall_clock_ms"] / 1000
    return reported - (before + time.time()) / 2


def test_a_skewed_nodes_wall_clock_is_off_by_the_offset(cluster: DockerCluster) -> None:
    async def scenario() -> None:
        await cluster.set_clock({"n2": 3600.0})
        try:
            assert abs(await skew_of(cluster, "n2") - 3600) < 5
            assert abs(await skew_of(cluster, "n1")) < 5
            await cluster.set_clock({"n2": -30.0})
            assert abs(await skew_of(cluster, "n2") + 30) < 5
        finally:
            await cluster.set_clock(dict.fromkeys(NODES, 0.0))
        assert abs(await skew_of(cluster, "n2")) < 5

    trio.run(scenario)


# -- faults that overlap: healing one kind never undoes another --


def test_a_node_restarted_inside_a_clock_fault_keeps_its_offset(cluster: DockerCluster) -> None:
    async def scenario() -> None:
        await cluster.set_clock({"n3": 3600.0})
        try:
            await cluster.kill("n3")
            await cluster.restart("n3")
            await cluster.wait_ready(["n3"])
            assert abs(await skew_of(cluster, "n3") - 3600) < 5
        finally:
            await cluster.set_clock(dict.fromkeys(NODES, 0.0))

    trio.run(scenario)


def test_a_paused_node_can_be_killed_and_comes_back_running(cluster: DockerCluster) -> None:
    async def scenario() -> None:
        before = store_pid(cluster, "n2")
        await cluster.pause("n2")
        await cluster.kill("n2")  # returns once the stopped process is gone
        await cluster.restart("n2")
        await cluster.wait_ready(["n2"])
        assert store_pid(cluster, "n2") != before
        assert (await status(cluster, "n2"))["node_id"] == "n2"

    trio.run(scenario)


def test_healing_a_partition_leaves_packet_loss_alone_and_the_reverse(
        cluster: DockerCluster) -> None:
    trio.run(cluster.packet_fault, PacketFault(("n1",), loss=0.9))
    try:
        trio.run(execute, cluster, CutLinks(frozenset({("n2", "n3"), ("n3", "n2")})))
        trio.run(execute, cluster, HealLinks())
        assert connects(cluster, "n2", "n3") == 1
        assert connects(cluster, "n2", "n1", tries=20, timeout=0.3) < 20  # still lossy
        trio.run(execute, cluster, CutLinks(frozenset({("n2", "n3"), ("n3", "n2")})))
        trio.run(cluster.clear_packets)
        assert connects(cluster, "n2", "n3") == 0  # still cut
        assert connects(cluster, "n2", "n1", tries=20, timeout=1.0) == 20
    finally:
        trio.run(cluster.clear_packets)
        trio.run(execute, cluster, HealLinks())


def test_injected_loss_shows_as_lost_probes_and_clears(cluster: DockerCluster) -> None:
    assert "loss" in cluster.packet_support().effects
    trio.run(cluster.packet_fault, PacketFault(("n1",), loss=0.9))
    try:
        lossy = connects(cluster, "n2", "n1", tries=20, timeout=0.3)
    finally:
        trio.run(cluster.clear_packets)
    assert lossy < 20
    assert connects(cluster, "n2", "n1", tries=20, timeout=1.0) == 20


def test_delay_works_where_the_kernel_has_netem_and_is_refused_plainly_where_not(
    cluster: DockerCluster,
) -> None:
    support = cluster.packet_support()
    if "delay" not in support.effects:
        assert "no netem" in support.missing_reason
        with pytest.raises(BackendError, match="cannot delay packets: this kernel has no netem"):
            trio.run(cluster.packet_fault, PacketFault(("n1",), delay_ms=200))
        return

    def round_trip() -> float:
        started = time.monotonic()
        connects(cluster, "n2", "n1", tries=5, timeout=5)
        return (time.monotonic() - started) / 5

    baseline = round_trip()
    trio.run(cluster.packet_fault, PacketFault(("n1",), delay_ms=200))
    try:
        assert round_trip() > baseline + 0.15
    finally:
        trio.run(cluster.clear_packets)
