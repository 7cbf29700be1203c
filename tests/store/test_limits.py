"""Limits a client can hit, against real ``kvstore serve`` processes: causal contexts past their
bounds, clients too slow for the HTTP timeouts, connections past the cap, and the sibling cap.
Each limit is set low by its flag so that a test reaches it at once; nothing waits on a timer
to synchronise, and no test asserts how long anything took."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
from local_cluster import LocalCluster

from kvcheck.harness.databases import Fail
from kvcheck.harness.databases.kvstore import failure
from kvcheck.store.client import RequestRejected, StoreClient, TooManySiblings, Unavailable
from kvcheck.store.config import ClusterConfig
from kvcheck.store.node import ClientPut, Node, Now
from kvcheck.store.placement import Placement, initial_records
from kvcheck.store.ring import Member
from kvcheck.store.storage import MemoryStorage
from kvcheck.store.versions import MAX_CONTEXT_ENTRIES, MAX_COUNTER, Version, context_token

pytestmark = pytest.mark.integration

#: Seconds any one step may take before a test gives up: a bound, never a synchronisation.
PATIENCE = 30


@contextmanager
def running(root: Path, size: int = 1, **settings: object) -> Iterator[dict[str, int]]:
    """A cluster of ``size`` nodes, N = 1, with ``settings``, ready; yields their ports."""
    local = LocalCluster(root, size, **{"n": 1, "w": 1, "r": 1, **settings})
    try:
        for node in local.ids:
            local.start(node)
        local.wait_ready()
        yield local.ports
    finally:
        local.stop_all()


class Raw:
    """One HTTP connection to a node, spoken by hand (h11 as the client)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port: int) -> Raw:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def get(self, target: str) -> tuple[int, dict[str, str], bytes]:
        """Send a GET and read its answer; the connection stays open."""
        await self.stream.send_all(self.conn.send(h11.Request(
            method="GET", target=target, headers=[("host", "x")])) + self.conn.send(
            h11.EndOfMessage()))
        status, headers, body = await self.answer()
        self.conn.start_next_cycle()
        return status, headers, body

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        response, body = None, b""
        with trio.fail_after(PATIENCE):
            while True:
                event = self.conn.next_event()
                if event is h11.NEED_DATA:
                    self.conn.receive_data(await self.stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    assert response is not None
                    return (response.status_code,
                            {k.decode(): v.decode() for k, v in response.headers}, body)
                else:
                    raise AssertionError(f"unexpected {event!r}")

    async def rest(self) -> bytes:
        """Everything the node sends from now until it closes the connection."""
        received = b""
        with trio.fail_after(PATIENCE):
            while data := await self.stream.receive_some(65536):
                received += data
        return received


async def status(port: int) -> dict[str, Any]:
    async with StoreClient("127.0.0.1", port) as client:
        return await client.status()


# -- the causal context ------------------------------------------------------------------------


def test_a_context_past_its_bounds_gets_400_and_the_key_stays_writable(tmp_path: Path) -> None:
    async def main(port: int) -> None:
        async with StoreClient("127.0.0.1", port) as client:
            actor = (await client.status())["actor"]
            for context in ({actor: (2**64 - 1, 0)}, {"n9.ff": (MAX_COUNTER + 1, 1)},
                            {f"a{i}": (1, 0) for i in range(MAX_CONTEXT_ENTRIES + 1)}):
                with pytest.raises(RequestRejected) as refused:
                    await client.put(b"k", b"v", context_token(context))
                assert refused.value.status == 400 and refused.value.applied == "no"
                assert "out of bounds" in str(refused.value) or "entries" in str(refused.value)
            await client.put(b"k", b"v")
            read = await client.get(b"k")
            await client.put(b"k", b"w", read.context)
            assert (await client.get(b"k")).values == (b"w",)
            # At the bound: the replica will not stamp past it, and nothing is stored.
            with pytest.raises(Unavailable) as unstamped:
                await client.put(b"j", b"v", context_token({actor: (MAX_COUNTER, 0)}))
            assert unstamped.value.applied == "no"
            assert "no replica could stamp" in str(unstamped.value)
            assert (await client.get(b"j")).values == ()
            document = await client.status()
            assert document["node"]["requests_in_flight"] == 0
            assert document["node"]["counters"]["counters_exhausted"] == 1

    with running(tmp_path) as ports:
        trio.run(main, ports["n1"])


# -- slow clients and the connection cap -------------------------------------------------------


def test_a_client_too_slow_for_the_timeouts_is_disconnected_and_the_node_serves_on(
        tmp_path: Path) -> None:
    async def main(port: int) -> None:
        slow = await Raw.open(port)  # declares 100 bytes of body and sends 10
        await slow.stream.send_all(b"PUT /kv/k HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n"
                                   b"\r\nonly ten b")
        answer = await slow.rest()
        assert answer.startswith(b"HTTP/1.1 408 ") and b"connection: close" in answer
        idle = await Raw.open(port)  # one request, then silence
        assert (await idle.get("/status"))[0] == 200
        assert await idle.rest() == b""
        async with StoreClient("127.0.0.1", port) as client:
            await client.put(b"k", b"v")
            with trio.fail_after(PATIENCE):  # until the node has closed the idle connection
                while not client._connection.closed_by_peer():  # the one it keeps alive
                    await trio.sleep(0.05)
            assert (await client.get(b"k")).values == (b"v",)  # on a new connection
            assert (await client.status())["node"]["counters"]["http_timeouts"] == 1

    with running(tmp_path, http_request_timeout_ms=300, http_idle_timeout_ms=300) as ports:
        trio.run(main, ports["n1"])


def test_connections_past_the_cap_get_503_while_the_node_serves_the_others(
        tmp_path: Path) -> None:
    async def main(port: int) -> None:
        first = await Raw.open(port)
        with trio.fail_after(PATIENCE):  # until the node has seen wait_ready's clients close
            while json.loads((await first.get("/status"))[2])["http_connections"] > 1:
                await trio.sleep(0.05)
        held = [first, await Raw.open(port), await Raw.open(port)]
        for connection in held:
            assert (await connection.get("/status"))[0] == 200
        over = await Raw.open(port)
        await over.stream.send_all(b"GET /kv/k HTTP/1.1\r\nhost: x\r\n\r\n")
        head, _, body = (await over.rest()).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 ") and b"x-kv-applied: no" in head
        assert json.loads(body) == {
            "error": "too many connections: this node serves 3 at once "
                     "(http_max_connections); try again later", "applied": "no"}
        for connection in held:  # the connections within the cap are served as before
            code, _, answer = await connection.get("/status")
            assert code == 200
        document = json.loads(answer)
        assert document["http_connections"] == 3
        assert document["node"]["counters"]["http_connections_refused"] == 1
        await held.pop().stream.aclose()
        with trio.fail_after(PATIENCE):  # until the node has seen it close
            while json.loads((await held[0].get("/status"))[2])["http_connections"] == 3:
                await trio.sleep(0.05)
        async with StoreClient("127.0.0.1", port) as client:
            await client.put(b"k", b"in")

    with running(tmp_path, http_max_connections=3) as ports:
        trio.run(main, ports["n1"])


# -- the sibling cap ---------------------------------------------------------------------------


def test_blind_writes_past_the_sibling_cap_are_refused_and_a_read_context_resolves_them(
        tmp_path: Path) -> None:
    """Two nodes, N = 1: the key's one replica is n2, and n1 coordinates, so the refusal crosses
    the wire. Past the warning threshold writes are logged and counted; past the cap blind writes
    are refused, surely unapplied, and the commit log does not grow."""
    async def main(ports: dict[str, int]) -> None:
        async with StoreClient("127.0.0.1", ports["n1"]) as n1, \
                StoreClient("127.0.0.1", ports["n2"]) as n2:
            key = await _key_held_by_n2_only(n1, n2)
            for i in range(3):  # with the first, 4 blind writes: the cap
                await n1.put(key, b"blind-%d" % i)
            log_before = (await n2.status())["storage"]["commit_log_bytes"]
            with pytest.raises(TooManySiblings) as refused:
                await n1.put(key, b"one too many")
            assert refused.value.status == 409 and refused.value.applied == "no"
            assert "read the key and write with its context" in str(refused.value)
            assert failure(refused.value, 5.0) == Fail("too many siblings (HTTP 409)")
            assert (await n2.status())["storage"]["commit_log_bytes"] == log_before
            read = await n1.get(key)
            assert len(read.values) == 4 and b"one too many" not in read.values
            await n1.put(key, b"resolved", read.context)
            assert (await n1.get(key)).values == (b"resolved",)
            counters = Counter((await n1.status())["node"]["counters"])
            assert (counters["siblings_warnings"], counters["siblings_refused"]) == (2, 1)

    with running(tmp_path, 2, siblings_warning=2, siblings_max=4) as ports:
        trio.run(main, ports)
    assert "more than siblings_warning = 2" in (tmp_path / "n1.log").read_text()


async def _key_held_by_n2_only(n1: StoreClient, n2: StoreClient) -> bytes:
    """A key, written once through n1, that n2 stores and n1 does not."""
    for i in range(100):
        key = b"key-%d" % i
        await n1.put(key, b"first")
        if not await n1.replica(key) and await n2.replica(key):
            return key
    raise AssertionError("no key of the 100 is n2's alone")


# -- a bug while serving a request -------------------------------------------------------------


class FailingStorage(MemoryStorage):
    """Storage with a bug: every put raises something no layer expects."""

    def put(self, key: bytes, versions: Sequence[Version]) -> None:
        raise RuntimeError("a bug")


def test_a_request_whose_handling_raises_is_not_left_in_flight() -> None:
    """(No process: the node logic's part of the server's 500.)"""
    placement = Placement(initial_records([Member("n1")], {"n1": "n1"}, 8), 8, 1)
    node = Node("n1", "n1.1", placement, ClusterConfig(n=1, w=1, r=1), FailingStorage())
    with pytest.raises(RuntimeError, match="a bug"):
        node.handle(ClientPut(1, b"k", b"v"), Now(0.0, 1))
    assert node.status()["requests_in_flight"] == 0
