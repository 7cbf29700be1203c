"""The store's client (``store/client.py``) against stub nodes on loopback: one kept-alive
connection, replaced when the node closed it or asked to; timeouts, its own or its caller's;
what is known of a write that failed (``applied``); and the node's answers as results and
errors. (The words each failure becomes in a history: ``tests/harness/test_client_errors.py``.)
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

import h11
import pytest
import trio

from kvcheck.store.client import (
    ConnectionFailed,
    RequestRejected,
    StoreClient,
    StoreError,
    TooManySiblings,
    Unavailable,
)
from kvcheck.store.http import encode_siblings
from kvcheck.store.http1 import InvalidRequest, MalformedResponse


@dataclass(frozen=True, slots=True)
class Seen:
    """A request a stub node read, on its ``connection``-th connection (from 0)."""

    connection: int
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Act:
    """What a stub node does with a request: ``send`` these bytes, then go on ``serving`` the
    connection, ``close`` it, or stay ``silent``."""

    send: bytes = b""
    then: Literal["serve", "close", "silent"] = "serve"


CLOSE, SILENT = Act(then="close"), Act(then="silent")
Answer = Callable[[Seen], Act]


@dataclass
class Stub:
    port: int
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0


def reply(status: int, body: bytes = b"", *headers: tuple[str, str],
          then: Literal["serve", "close", "silent"] = "serve") -> Act:
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return Act(f"HTTP/1.1 {status} Whatever\r\n{head}content-length: {len(body)}\r\n\r\n"
               .encode() + body, then)


@asynccontextmanager
async def stub_node(answer: Answer) -> AsyncIterator[Stub]:
    """A node on a free port of 127.0.0.1 that reads each request whole and does as
    ``answer`` says."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    stub = Stub(listeners[0].socket.getsockname()[1])

    async def serve(stream: trio.SocketStream) -> None:
        connection, stub.connections = stub.connections, stub.connections + 1
        while True:
            conn, request, body = h11.Connection(h11.SERVER), None, b""
            while not isinstance(event := conn.next_event(), h11.EndOfMessage):
                if event is h11.NEED_DATA:
                    if not (data := await stream.receive_some(65536)):
                        return
                    conn.receive_data(data)
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
            assert request is not None
            seen = Seen(connection, request.method.decode(), request.target.decode(),
                        {k.decode(): v.decode() for k, v in request.headers}, body)
            stub.seen.append(seen)
            act = answer(seen)
            await stream.send_all(act.send)
            if act.then == "silent":
                await trio.sleep_forever()
            if act.then == "close":
                await stream.aclose()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, serve, listeners)
        yield stub
        nursery.cancel_scope.cancel()


def run(answer: Answer, scenario: Callable[[Stub], Awaitable[None]]) -> None:
    async def main() -> None:
        async with stub_node(answer) as stub:
            await scenario(stub)
    trio.run(main)


async def wait_closed_by_node(client: StoreClient) -> None:
    with trio.fail_after(5):
        while not client._connection.closed_by_peer():  # the connection it keeps alive
            await trio.sleep(0.01)  # polling a condition under a deadline


# -- one connection, kept alive -------------------------------------------------------------------

def test_requests_share_one_kept_alive_connection() -> None:
    async def scenario(stub: Stub) -> None:
        async with StoreClient("127.0.0.1", stub.port) as client:
            assert await client.put("a/b", b"1", context="ctx", w=2) == "new"
            assert (await client.get(b"a/b", r=1)).value == b"1"
        assert [(s.connection, s.method, s.target, s.body) for s in stub.seen] == [
            (0, "PUT", "/kv/a%2Fb?w=2", b"1"), (0, "GET", "/kv/a%2Fb?r=1", b"")]
        assert stub.seen[0].headers["x-kv-context"] == "ctx"
        assert stub.seen[1].headers["host"] == f"127.0.0.1:{stub.port}"

    run(lambda seen: reply(204, b"", ("x-kv-context", "new")) if seen.method == "PUT"
        else reply(200, b"1", ("x-kv-context", "new")), scenario)


def test_a_connection_the_node_closed_while_idle_is_replaced_before_the_next_request() -> None:
    """As a node does past its idle timeout: the write goes out on a new connection, and is
    neither lost nor indeterminate."""
    async def scenario(stub: Stub) -> None:
        async with StoreClient("127.0.0.1", stub.port) as client:
            await client.put("k", b"1")
            await wait_closed_by_node(client)
            await client.put("k", b"2")
        assert [(s.connection, s.body) for s in stub.seen] == [(0, b"1"), (1, b"2")]

    run(lambda seen: reply(204, then="serve" if seen.connection else "close"), scenario)


def test_an_answer_that_closes_the_connection_is_taken_and_the_next_request_reconnects(
        ) -> None:
    async def scenario(stub: Stub) -> None:
        async with StoreClient("127.0.0.1", stub.port) as client:
            assert (await client.get("k")).value == b"v"
            assert (await client.get("k")).value == b"v"
        assert [s.connection for s in stub.seen] == [0, 1]

    run(lambda seen: reply(200, b"v", ("connection", "close")), scenario)


# -- timeouts ----------------------------------------------------------------------------------

def test_a_timeout_fails_the_request_and_the_next_one_reconnects() -> None:
    async def scenario(stub: Stub) -> None:
        async with StoreClient("127.0.0.1", stub.port, timeout=0.2) as client:
            with pytest.raises(ConnectionFailed, match=r"no answer from .* within 0\.2 s") as read:
                await client.get("k")
            with pytest.raises(ConnectionFailed) as write:
                await client.put("k", b"1")
            assert (read.value.applied, write.value.applied) == ("no", "unknown")
            assert isinstance(read.value.__cause__, trio.TooSlowError)
            assert (await client.get("k")).value == b"v"
        assert [s.connection for s in stub.seen] == [0, 1, 2]

    run(lambda seen: SILENT if seen.connection < 2 else reply(200, b"v"), scenario)


def test_a_write_that_timed_out_while_connecting_surely_did_not_happen() -> None:
    async def main() -> None:
        with socket.socket() as listener:  # accepts nothing: a full backlog drops new SYNs
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            port = listener.getsockname()[1]
            waiting = []
            try:
                for _ in range(4):  # past the backlog, whatever the kernel rounds it up to
                    queued = socket.socket()
                    queued.setblocking(False)
                    waiting.append(queued)
                    with contextlib.suppress(BlockingIOError):
                        queued.connect(("127.0.0.1", port))
                async with StoreClient("127.0.0.1", port, timeout=0.3) as client:
                    with pytest.raises(ConnectionFailed, match=r"within 0\.3 s") as write:
                        await client.put("k", b"1")
                assert write.value.applied == "no"
            finally:
                for queued in waiting:
                    queued.close()

    trio.run(main)


def test_an_earlier_deadline_of_the_caller_bounds_the_request_instead() -> None:
    async def scenario(stub: Stub) -> None:
        async with StoreClient("127.0.0.1", stub.port, timeout=30) as client:
            with trio.move_on_after(0.2) as caller:
                await client.put("k", b"1")
            assert caller.cancelled_caught  # the caller's cancellation, not a StoreError
            assert (await client.get("k")).value == b"v"  # on a new connection
        assert [s.connection for s in stub.seen] == [0, 1]

    run(lambda seen: SILENT if seen.connection == 0 else reply(200, b"v"), scenario)


# -- what is known of a write that failed -------------------------------------------------------

def test_a_write_that_never_left_surely_did_not_happen() -> None:
    async def main() -> None:
        async with stub_node(lambda seen: reply(204)) as stub:
            port = stub.port
            async with StoreClient("127.0.0.1", port) as client:
                with pytest.raises(ConnectionFailed) as invalid:
                    await client.put("k", b"1", context="a\r\nx-injected: 1")
                assert invalid.value.applied == "no"
                assert isinstance(invalid.value.__cause__, InvalidRequest)
                await client.put("k", b"2")
            assert [s.body for s in stub.seen] == [b"2"]
        async with StoreClient("127.0.0.1", port) as client:  # nothing listens there now
            with pytest.raises(ConnectionFailed) as refused:
                await client.put("k", b"1")
            assert refused.value.applied == "no"

    trio.run(main)


@pytest.mark.parametrize(("answer", "cause"), [
    (CLOSE, "ended before the response"),
    (Act(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", "close"), "after 3 of 10 bytes"),
    (Act(b"this is not HTTP\r\n\r\n"), "not an HTTP/1.1 response"),
])
def test_a_write_that_left_and_got_no_answer_may_have_happened(answer: Act,
                                                               cause: str) -> None:
    async def scenario(stub: Stub) -> None:
        async with StoreClient("127.0.0.1", stub.port) as client:
            with pytest.raises(ConnectionFailed, match=cause) as write:
                await client.put("k", b"1")
            with pytest.raises(ConnectionFailed, match=cause) as read:
                await client.get("k")
        assert (write.value.applied, read.value.applied) == ("unknown", "no")
        assert [s.connection for s in stub.seen] == [0, 1]

    run(lambda seen: answer, scenario)


def test_a_malformed_answer_is_the_cause() -> None:
    async def scenario(stub: Stub) -> None:
        async with StoreClient("127.0.0.1", stub.port) as client:
            with pytest.raises(ConnectionFailed) as failed:
                await client.get("k")
        assert isinstance(failed.value.__cause__, MalformedResponse)

    run(lambda seen: Act(b"HTTP/1.1 200 OK\r\n\r\nno framing"), scenario)


# -- the node's answers -------------------------------------------------------------------------

SIBLINGS_TYPE, SIBLINGS = encode_siblings([b"1", None, b"2"])


@pytest.mark.parametrize(("answer", "values", "context"), [
    (reply(200, b"v", ("x-kv-context", "c1")), (b"v",), "c1"),
    (reply(404, b'{"error": "not found"}', ("x-kv-context", "")), (), ""),
    (reply(300, SIBLINGS, ("content-type", SIBLINGS_TYPE), ("x-kv-context", "c2")),
     (b"1", None, b"2"), "c2"),
    (Act(b"HTTP/1.1 200 OK\r\nx-kv-context: c3\r\ntransfer-encoding: chunked\r\n\r\n"
         b"1\r\nv\r\n0\r\n\r\n"), (b"v",), "c3"),
])
def test_a_read_returns_the_siblings_and_the_context(answer: Act,
                                                     values: tuple[bytes | None, ...],
                                                     context: str) -> None:
    async def scenario(stub: Stub) -> None:
        async with StoreClient("127.0.0.1", stub.port) as client:
            read = await client.get("k")
        assert (read.values, read.context) == (values, context)

    run(lambda seen: answer, scenario)


@pytest.mark.parametrize(("answer", "error", "applied"), [
    (reply(409, b'{"error": "too many siblings"}'), TooManySiblings, "no"),
    (reply(400, b'{"error": "bad w"}'), RequestRejected, "no"),
    (reply(503, b'{"error": "write quorum unreachable", "applied": "no"}',
           ("x-kv-applied", "no")), Unavailable, "no"),
    (reply(503, b'{"error": "write timed out: 1 of 2 acknowledgements"}',
           ("x-kv-applied", "unknown")), Unavailable, "unknown"),
    (reply(500, b'{"error": "internal error"}'), StoreError, "unknown"),
])
def test_a_write_refused_by_the_node_says_whether_it_happened(
        answer: Act, error: type[StoreError], applied: str) -> None:
    async def scenario(stub: Stub) -> None:
        async with StoreClient("127.0.0.1", stub.port) as client:
            with pytest.raises(StoreError) as failed:
                await client.put("k", b"refused")
            assert await client.put("k", b"taken") == ""  # on the same connection
        assert type(failed.value) is error
        assert (failed.value.applied, failed.value.status) == (applied, int(answer.send[9:12]))
        assert [s.connection for s in stub.seen] == [0, 0]

    run(lambda seen: answer if seen.body == b"refused" else reply(204), scenario)


def test_a_malformed_siblings_body_is_an_error_of_the_node() -> None:
    async def scenario(stub: Stub) -> None:
        async with StoreClient("127.0.0.1", stub.port) as client:
            with pytest.raises(StoreError, match="malformed siblings") as failed:
                await client.get("k")
        assert (failed.value.applied, failed.value.status) == ("no", 300)

    run(lambda seen: reply(300, b"--x\r\n", ("content-type", "multipart/mixed; boundary=y")),
        scenario)


def test_requests_of_concurrent_tasks_take_turns_on_the_connection() -> None:
    async def scenario(stub: Stub) -> None:
        results: dict[str, bytes | None] = {}
        async with StoreClient("127.0.0.1", stub.port) as client:

            async def read(key: str) -> None:
                results[key] = (await client.get(key)).value

            async with trio.open_nursery() as nursery:
                for key in ("a", "b", "c"):
                    nursery.start_soon(read, key)
        assert results == {"a": b"a", "b": b"b", "c": b"c"}
        assert {s.connection for s in stub.seen} == {0}

    run(lambda seen: reply(200, seen.target[-1:].encode()), scenario)
