"""One HTTP connection, served over an in-memory stream: what the handler sees, what is sent."""

from __future__ import annotations

import json
from collections import Counter

import trio
import trio.testing

from kvcheck.store.config import MAX_PAIR_BYTES
from kvcheck.store.server.http_connection import (
    HttpLimits,
    Reply,
    Request,
    close_with,
    serve_http,
)

LIMITS = HttpLimits(request_s=10.0, idle_s=60.0)


class Echo:
    """A handler that records each request and answers with its body."""

    def __init__(self) -> None:
        self.requests: list[Request] = []

    async def __call__(self, request: Request) -> Reply:
        self.requests.append(request)
        return Reply(200, (("x-method", request.method),), b"echo:" + request.body)


def converse(sent: bytes, handler: Echo, already: int = 1) -> bytes:
    """Everything the server sends on a connection where the client sent ``sent`` and then
    stopped sending; the server took over after the first ``already`` bytes (at least one)."""

    async def run() -> bytes:
        client, server = trio.testing.memory_stream_pair()
        received = b""
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                await serve_http(server, sent[:already], handler, LIMITS, Counter())
                await server.aclose()

            nursery.start_soon(serve)
            await client.send_all(sent[already:])
            await client.send_eof()
            while data := await client.receive_some(65536):
                received += data
        return received

    return trio.run(run)


def test_the_handler_sees_method_target_headers_and_body_and_its_reply_is_sent() -> None:
    echo = Echo()
    answer = converse(b"PUT /kv/k?w=1 HTTP/1.1\r\nHost: x\r\nX-Kv-Context: abc\r\n"
                      b"Content-Length: 2\r\n\r\nhi", echo, already=20)
    [request] = echo.requests
    assert (request.method, request.target, request.body) == ("PUT", b"/kv/k?w=1", b"hi")
    assert request.headers[b"x-kv-context"] == b"abc"
    assert answer == (b"HTTP/1.1 200 OK\r\nx-method: PUT\r\ncontent-length: 7\r\n\r\necho:hi")


def test_head_gets_the_headers_without_the_body_and_pipelined_requests_go_in_order() -> None:
    echo = Echo()
    answer = converse(b"HEAD /a HTTP/1.1\r\nhost: x\r\n\r\n"
                      b"GET /b HTTP/1.1\r\nhost: x\r\n\r\n", echo)
    assert [r.target for r in echo.requests] == [b"/a", b"/b"]
    head, get = answer.split(b"HTTP/1.1 ")[1:]
    assert head == b"200 OK\r\nx-method: HEAD\r\ncontent-length: 5\r\n\r\n"
    assert get.endswith(b"\r\n\r\necho:")


def test_a_body_at_the_size_limit_is_refused_with_413_without_reaching_the_handler() -> None:
    echo = Echo()
    declared = converse(b"PUT /kv/k HTTP/1.1\r\nhost: x\r\n"
                        + f"content-length: {MAX_PAIR_BYTES}\r\n\r\n".encode(), echo)
    chunk = b"1000\r\n" + b"v" * 4096 + b"\r\n"
    chunked = converse(b"PUT /kv/k HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
                       + chunk * 3 + b"0\r\n\r\n", echo)
    for answer in (declared, chunked):
        assert answer.startswith(b"HTTP/1.1 413 ")
        assert "must stay under" in json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
    assert echo.requests == []


def test_a_malformed_request_gets_a_json_400() -> None:
    echo = Echo()
    answer = converse(b"GARBAGE\r\n\r\n", echo)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert "error" in json.loads(answer.partition(b"\r\n\r\n")[2])
    assert echo.requests == []


class Broken(Echo):
    """A handler with a bug: it raises for ``/bug``."""

    async def __call__(self, request: Request) -> Reply:
        if request.target == b"/bug":
            raise RuntimeError("a bug")
        return await super().__call__(request)


def test_a_handler_that_raises_gets_a_500_and_the_connection_serves_the_next_request() -> None:
    counters: Counter[str] = Counter()

    async def run() -> bytes:
        client, server = trio.testing.memory_stream_pair()

        async def serve() -> None:
            await serve_http(server, b"G", Broken(), LIMITS, counters)
            await server.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            await client.send_all(b"ET /bug HTTP/1.1\r\nhost: x\r\n\r\n"
                                  b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n")
            await client.send_eof()
            received = b""
            while data := await client.receive_some(65536):
                received += data
            return received

    bug, ok = trio.run(run).split(b"HTTP/1.1 ")[1:]
    assert bug.startswith(b"500 ") and b"x-kv-applied: unknown" in bug
    assert "internal error" in json.loads(bug.partition(b"\r\n\r\n")[2])["error"]
    assert ok.startswith(b"200 ")
    assert counters == {"http_internal_errors": 1}


def slow_client(sent: bytes, limits: HttpLimits,
                lockstep: bool = False) -> tuple[bytes, Counter[str], bool]:
    """What the server sends a client that sends ``sent`` (all but its first byte after the
    server took over) and then neither sends nor closes, in virtual time; the counters; and
    whether the server ended the connection. With ``lockstep``, the client reads nothing until
    the server gives up, and a send waits for the reader."""
    counters: Counter[str] = Counter()

    async def run() -> tuple[bytes, bool]:
        pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
        client, server = pair()
        ended = trio.Event()
        received = b""

        async def serve() -> None:
            await serve_http(server, sent[:1], Echo(), limits, counters)
            ended.set()
            await server.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            await client.send_all(sent[1:])
            if lockstep:
                await ended.wait()
            with trio.move_on_after(1000):  # virtual seconds: far past every limit
                while data := await client.receive_some(65536):
                    received += data
                await ended.wait()
            nursery.cancel_scope.cancel()
        return received, ended.is_set()

    received, ended = trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))
    return received, counters, ended


def test_a_request_not_all_in_within_the_limit_of_its_first_byte_gets_408_and_is_closed() -> None:
    limits = HttpLimits(request_s=2.0, idle_s=60.0)
    for sent in (b"PUT /kv/k HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly ten b",
                 b"GET /kv/k HTTP/1.1\r\nhost: x\r\n"):
        received, counters, ended = slow_client(sent, limits)
        assert ended and received.startswith(b"HTTP/1.1 408 ")
        assert b"connection: close" in received
        assert "within 2 s" in json.loads(received.partition(b"\r\n\r\n")[2])["error"]
        assert counters == {"http_timeouts": 1}


def test_an_idle_kept_alive_connection_is_closed_without_an_answer() -> None:
    received, counters, ended = slow_client(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n",
                                            HttpLimits(request_s=2.0, idle_s=5.0))
    assert ended and received.startswith(b"HTTP/1.1 200 ") and received.count(b"HTTP/1.1") == 1
    assert counters == {}


def test_a_client_that_does_not_take_its_reply_is_given_up_on() -> None:
    _, counters, ended = slow_client(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n",
                                     HttpLimits(request_s=2.0, idle_s=60.0), lockstep=True)
    assert ended and counters == {"http_timeouts": 1}


def test_close_with_sends_the_reply_whatever_the_state_then_ends_the_connection() -> None:
    async def run() -> bytes:
        client, server = trio.testing.memory_stream_pair()
        await client.send_all(b"half a request")
        await close_with(server, Reply(503, (("x-why", "full"),), b"{}"))
        received = b""
        while data := await client.receive_some(65536):
            received += data
        return received

    assert trio.run(run) == (b"HTTP/1.1 503 Service Unavailable\r\nx-why: full\r\n"
                             b"content-length: 2\r\nconnection: close\r\n\r\n{}")
