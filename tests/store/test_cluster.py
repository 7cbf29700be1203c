"""Integration: real node processes talking real TCP on 127.0.0.1."""

from __future__ import annotations

import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
import trio
from local_cluster import LocalCluster, free_port_block

from kvcheck.store.messages import PREAMBLE, Challenge, FrameDecoder, Hello, Probe, encode_frame


def test_a_write_through_one_node_is_read_through_another(cluster: LocalCluster) -> None:
    async def scenario() -> None:
        async with cluster.client("n1") as one, cluster.client("n3") as three:
            await one.put(b"greeting", b"hello")
            read = await three.get(b"greeting")
            assert read.values == (b"hello",)
            await three.put(b"greeting", b"bye", read.context)
            assert (await one.get("greeting")).values == (b"bye",)

    trio.run(scenario)


def test_with_n3_w2_a_killed_replica_does_not_stop_writes(cluster: LocalCluster) -> None:
    cluster.kill("n2")

    async def scenario() -> None:
        async with cluster.client("n1") as client:
            for i in range(50):
                await client.put(f"k{i}", b"v", w=2)
            for i in range(50):
                assert (await client.get(f"k{i}")).values == (b"v",)
            with pytest.raises(Exception) as failed:
                await client.put("all", b"v", w=3)
            assert getattr(failed.value, "applied", None) == "unknown"

    trio.run(scenario)


def test_concurrent_writes_without_context_become_siblings(cluster: LocalCluster) -> None:
    async def scenario() -> None:
        async with cluster.client("n1") as one, cluster.client("n2") as two:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(one.put, b"k", b"from-n1")
                nursery.start_soon(two.put, b"k", b"from-n2")
            read = await one.get(b"k")
            assert sorted(read.values) == [b"from-n1", b"from-n2"]  # type: ignore[type-var]
            await two.put(b"k", b"resolved", read.context)
            assert (await one.get(b"k")).values == (b"resolved",)

    trio.run(scenario)


def test_a_node_restarted_after_kill_9_still_has_its_acknowledged_writes(
    cluster: LocalCluster,
) -> None:
    async def write() -> None:
        async with cluster.client("n1") as client:
            for i in range(200):
                await client.put(f"key-{i}", f"value-{i}".encode(), w=3)

    trio.run(write)
    cluster.kill("n2")
    cluster.start("n2")
    cluster.wait_ready(["n2"])

    async def read_back() -> None:
        async with cluster.client("n2") as client:
            for i in range(200):
                read = await client.get(f"key-{i}", r=1)  # n2's own replica answers first
                assert read.values == (f"value-{i}".encode(),)

    trio.run(read_back)


@pytest.mark.parametrize("frames", [
    PREAMBLE + b"\x00\x00\x00\x05garba",
    PREAMBLE + struct.pack(">I", 1 << 31),
    PREAMBLE + encode_frame(Hello("n2", "another-cluster", b"n" * 32, b"p" * 32)),
    PREAMBLE + encode_frame(Probe(1)),  # no Hello first
    PREAMBLE + encode_frame(Hello("n2", "kvcheck", b"n" * 32, b""))  # no proof
    + struct.pack(">I", 3) + msgpack.packb([2, 1, 2]),
])
def test_a_hostile_peer_frame_closes_that_connection_only(
    cluster: LocalCluster, frames: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", cluster.ports["n1"]), timeout=5) as sock:
        sock.sendall(frames)
        answer = b""
        while data := sock.recv(4096):  # until the node closes the connection
            answer += data
    [challenge] = FrameDecoder().feed(answer)  # and nothing after it
    assert isinstance(challenge, Challenge)

    async def still_serving() -> None:
        async with cluster.client("n1") as client:
            await client.put(b"after", b"ok")
            assert (await client.get(b"after")).values == (b"ok",)

    trio.run(still_serving)
    assert "closing connection" in (cluster.root / "n1.log").read_text()


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GARBAGE\r\n\r\n", b"400"),
    (b"GET /kv/ HTTP/1.1\r\nhost: x\r\n\r\n", b"400"),
    (b"GET /nowhere HTTP/1.1\r\nhost: x\r\n\r\n", b"404"),
    (b"PUT /kv/k HTTP/1.1\r\nhost: x\r\ncontent-length: 20000\r\n\r\n", b"413"),
    (b"PUT /kv/k?w=0 HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nv", b"400"),
    (b"PUT /kv/k HTTP/1.1\r\nhost: x\r\nx-kv-context: !!\r\ncontent-length: 1\r\n\r\nv", b"400"),
    (b"PUT /kv/k?w=2&w=3 HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nv", b"400"),
    (b"PUT /kv/k?w= HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nv", b"400"),
    (b"PUT /kv/k?colour=red HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nv", b"400"),
    (b"POST /kv/k HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nv", b"405"),
])
def test_bad_http_requests_get_a_clear_4xx_and_store_nothing(
    cluster: LocalCluster, request_bytes: bytes, status: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", cluster.ports["n2"]), timeout=5) as sock:
        sock.sendall(request_bytes)
        answer = sock.recv(65536)
    assert answer.split(b" ")[1] == status
    assert b'"error"' in answer

    async def nothing_stored() -> None:
        async with cluster.client("n1") as client:
            assert (await client.get(b"k")).values == ()

    trio.run(nothing_stored)


def test_a_node_refuses_to_start_on_a_log_corrupted_in_the_middle(tmp_path: Path) -> None:
    local = LocalCluster(tmp_path, 1, n=1, w=1, r=1)
    local.start("n1")
    local.wait_ready()

    async def write() -> None:
        async with local.client("n1") as client:
            for i in range(3):
                await client.put(f"k{i}", b"v" * 50)

    trio.run(write)
    local.stop_all()
    log = tmp_path / "n1" / "wal-00000001.log"  # the first commit-log segment
    data = bytearray(log.read_bytes())
    data[20] ^= 0xFF  # inside the first record's payload
    log.write_bytes(bytes(data))
    result = subprocess.run(local.command("n1"), capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert str(log) in result.stderr and "offset 8" in result.stderr


def test_kvstore_cluster_starts_serves_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    base = free_port_block(3)
    process = subprocess.Popen(
        [sys.executable, "-m", "kvcheck.store", "cluster", "--nodes", "3", "--base-port", str(base),
         "--data-root", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        seen = []
        for line in process.stdout:  # the table is printed once every node answers
            seen.append(line)
            if "Ctrl-C stops the cluster" in line:
                break
        else:
            raise AssertionError("the cluster stopped before it was ready:\n" + "".join(seen))
        node = f"127.0.0.1:{base + 1}"
        kvstore = [sys.executable, "-m", "kvcheck.store"]
        put = subprocess.run([*kvstore, "put", "--node", node, "hello", "world"],
                             capture_output=True, text=True, timeout=30)
        assert put.returncode == 0, put.stderr
        get = subprocess.run([*kvstore, "get", "--node", f"127.0.0.1:{base + 2}", "hello"],
                             capture_output=True, text=True, timeout=30)
        assert (get.returncode, get.stdout) == (0, "world\n")
        missing = subprocess.run([*kvstore, "get", "--node", node, "nothing"],
                                 capture_output=True, text=True, timeout=30)
        assert missing.returncode == 1
        status = subprocess.run([*kvstore, "status", "--node", node], capture_output=True,
                                text=True, timeout=30)
        assert '"peer_auth": true' in status.stdout
        assert (tmp_path / "secret").stat().st_mode & 0o777 == 0o600
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    leftovers = subprocess.run(["pgrep", "-f", f"--data-dir {tmp_path}"], capture_output=True)
    assert leftovers.stdout == b""


def test_replica_shows_what_one_node_stores_without_asking_others(cluster: LocalCluster) -> None:
    cluster.kill("n3")

    async def scenario() -> None:
        async with cluster.client("n1") as one, cluster.client("n2") as two:
            await one.put(b"k", "välue".encode())
            await one.put(b"bin", b"\xff\x00")
            mine = await one.replica(b"k")
            assert [(v["value"], v["deleted"]) for v in mine] == [("välue", False)]
            assert mine[0]["dot"][0].startswith("n1.")
            assert (await two.replica(b"k")) == mine
            assert (await one.replica(b"bin"))[0]["value_base64"] == "/wA="
            assert await one.replica(b"absent") == []

    trio.run(scenario)


def test_head_answers_like_get_without_a_body_and_requests_can_be_pipelined(
    cluster: LocalCluster,
) -> None:
    async def write() -> None:
        async with cluster.client("n1") as client:
            await client.put(b"k", b"hello")

    trio.run(write)
    with socket.create_connection(("127.0.0.1", cluster.ports["n1"]), timeout=5) as sock:
        sock.sendall(b"HEAD /kv/k HTTP/1.1\r\nhost: x\r\n\r\n"
                     b"GET /kv/k HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        answer = b""
        while data := sock.recv(65536):
            answer += data
    head, get = answer.split(b"HTTP/1.1 ")[1:]
    assert head.startswith(b"200") and b"content-length: 5" in head and b"hello" not in head
    assert get.startswith(b"200") and get.endswith(b"hello")


def test_gossip_marks_a_killed_node_down_and_a_restarted_one_alive(cluster: LocalCluster) -> None:
    async def state_of(observer: str, node: str) -> str:
        async with cluster.client(observer) as client:
            members = (await client.status())["membership"]
        return next(m["state"] for m in members if m["node_id"] == node)

    async def wait_for_state(observer: str, node: str, state: str) -> None:
        with trio.fail_after(30):  # a deadline for a condition, not a timing assertion
            while await state_of(observer, node) != state:
                await trio.sleep(0.1)

    assert trio.run(state_of, "n1", "n3") == "alive"
    cluster.kill("n3")
    trio.run(wait_for_state, "n1", "n3", "down")
    trio.run(wait_for_state, "n2", "n3", "down")
    cluster.start("n3")
    cluster.wait_ready(["n3"])
    trio.run(wait_for_state, "n1", "n3", "alive")
