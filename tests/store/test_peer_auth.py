"""Peers prove membership, and nodes say when they can serve: real processes on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from local_cluster import LocalCluster, free_ports

from kvcheck.store.client import StoreClient, StoreError
from kvcheck.store.messages import (
    PREAMBLE,
    Challenge,
    FrameDecoder,
    Hello,
    Replicate,
    encode_frame,
)
from kvcheck.store.peer_auth import hello_proof, new_nonce, new_secret, seal_for
from kvcheck.store.versions import parse_context_token, stamp

pytestmark = pytest.mark.integration


def forge(port: int, cluster_secret: bytes | None, key: bytes, context: str) -> bytes:
    """Connect to the node on ``port`` as ``n2``, prove membership with ``cluster_secret``
    (None: no proof), and send a Replicate of a version of ``key`` that supersedes everything
    in ``context``, with counters beyond any real ones; return what the node answered before it
    closed the connection."""
    clock = {actor: (2**40, ms) for actor, (_, ms) in parse_context_token(context).items()}
    _, versions = stamp("n2.forged", [], clock, b"forged", 2**40, 10)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(PREAMBLE)
        decoder = FrameDecoder()
        answer = b""
        while not (challenge := list(decoder.feed(data := sock.recv(4096)))):
            answer += data
        answer += data
        [first] = challenge
        assert isinstance(first, Challenge)
        nonce = new_nonce()
        proof = hello_proof(cluster_secret, first.nonce, nonce, "n2", "kvcheck")
        seal = seal_for(cluster_secret, first.nonce, nonce)
        sock.sendall(encode_frame(Hello("n2", "kvcheck", nonce, proof))
                     + encode_frame(Replicate(0, key, tuple(versions)), seal))
        while data := sock.recv(4096):
            answer += data
    return answer


@pytest.mark.parametrize("secret", [None, b"not the cluster's secret at all"])
def test_forged_replication_from_a_non_member_changes_nothing(
        cluster: LocalCluster, secret: bytes | None) -> None:
    async def write() -> str:
        async with cluster.client("n1") as client:
            return await client.put(b"k", b"acknowledged", w=3)

    context = trio.run(write)
    for node in cluster.ids:
        answer = forge(cluster.ports[node], secret, b"k", context)
        [challenge] = FrameDecoder().feed(answer)  # no Welcome: the node closed instead
        assert isinstance(challenge, Challenge)

    async def replicas() -> dict[str, list[bytes]]:
        stored = {}
        for node in cluster.ids:
            async with cluster.client(node) as client:
                stored[node] = [v["value"].encode() for v in await client.replica(b"k")]
                status = await client.status()
                assert status["peer_auth"] is True
                assert status["node"]["counters"]["protocol_errors"] >= 1
        return stored

    assert trio.run(replicas) == {node: [b"acknowledged"] for node in cluster.ids}
    for node in cluster.ids:
        assert "failed to prove" in (cluster.root / f"{node}.log").read_text() or \
            "has no secret" in (cluster.root / f"{node}.log").read_text()


def test_a_stranger_that_stalls_the_handshake_is_cut_off_while_the_node_serves(
        cluster: LocalCluster) -> None:
    with socket.create_connection(("127.0.0.1", cluster.ports["n1"]), timeout=30) as sock:
        sock.sendall(PREAMBLE + b"\x00\x00\x03\xff")  # a Hello of 1023 bytes, never sent

        async def serves() -> None:
            async with cluster.client("n1") as client:
                await client.put(b"meanwhile", b"ok")

        trio.run(serves)
        answer = b""
        while data := sock.recv(4096):  # until the node closes the connection
            answer += data
    [challenge] = FrameDecoder().feed(answer)
    assert isinstance(challenge, Challenge)
    assert "no handshake within" in (cluster.root / "n1.log").read_text()


def test_a_member_with_another_secret_is_never_ready_and_says_why(tmp_path: Path) -> None:
    local = LocalCluster(tmp_path, 2, n=2, w=1, r=1)
    try:
        local.start("n1")
        other = tmp_path / "other-secret"
        other.write_text(new_secret())
        local.secret_file, right = other, local.secret_file
        local.start("n2")
        local.secret_file = right

        async def reasons(node: str) -> list[str]:
            with trio.fail_after(30):
                while True:
                    try:
                        async with local.client(node, timeout=2) as client:
                            waiting = await client.ready()
                        if any("handshake failed" in w for w in waiting):
                            return waiting
                    except StoreError:
                        pass  # not listening yet
                    await trio.sleep(0.05)  # polling a condition under a deadline

        assert trio.run(reasons, "n1") == [
            "n2: handshake failed: connection closed before Welcome"]
        assert trio.run(reasons, "n2") == [
            "n1: handshake failed: connection closed before Welcome"]
    finally:
        local.stop_all()


def test_a_node_without_a_secret_runs_but_warns_and_says_so(tmp_path: Path) -> None:
    [port] = free_ports(1)
    log = (tmp_path / "n1.log").open("wb")
    node = subprocess.Popen(
        [sys.executable, "-m", "kvcheck.store", "serve", "--node-id", "n1", "--listen",
         f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "n1"), "--n=1", "--w=1", "--r=1"],
        stdout=log, stderr=log)
    try:
        async def status() -> dict[str, object]:
            with trio.fail_after(30):
                while True:
                    try:
                        async with StoreClient("127.0.0.1", port, timeout=2) as client:
                            assert await client.ready() == []
                            return await client.status()
                    except StoreError:  # not listening yet
                        await trio.sleep(0.05)  # polling a condition under a deadline

        assert trio.run(status)["peer_auth"] is False
    finally:
        node.terminate()
        node.wait(timeout=10)
    assert "no --secret-file: peers are not authenticated" in (tmp_path / "n1.log").read_text()


def test_a_secret_file_that_is_too_short_or_missing_stops_the_start_with_a_clear_error(
        tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("tiny")
    for path, said in ((short, "is 4 bytes; at least 16"),
                       (tmp_path / "missing", "cannot read the secret file")):
        done = subprocess.run(
            [sys.executable, "-m", "kvcheck.store", "serve", "--node-id", "n1", "--listen",
             f"127.0.0.1:{free_ports(1)[0]}", "--data-dir", str(tmp_path / "n1"), "--n=1",
             "--w=1", "--r=1", "--secret-file", str(path)],
            capture_output=True, text=True, timeout=30)
        assert done.returncode == 2
        assert said in done.stderr


def test_a_restarted_node_that_says_it_is_ready_serves_every_quorum_at_once(
        cluster: LocalCluster) -> None:
    keys = [f"key-{i}" for i in range(30)]

    async def write() -> None:
        async with cluster.client("n1") as client:
            for key in keys:
                await client.put(key, key.encode(), w=3)

    trio.run(write)
    for _ in range(3):
        cluster.kill("n2")
        cluster.start("n2")
        cluster.wait_ready(["n2"])

        async def read_all() -> None:  # every replica must answer, through the restarted node
            async with cluster.client("n2") as client:
                for key in keys:
                    assert (await client.get(key, r=3)).values == (key.encode(),)

        trio.run(read_all)
