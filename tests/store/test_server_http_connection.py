"""One HTTP connection, served over an in-memory stream: what the handler sees, what is sent."""

from __future__ import annotations

import json
import re
from collections import Counter

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcheck.store.config import MAX_PAIR_BYTES
from kvcheck.store.http1 import ResponseReader
from kvcheck.store.server.http_connection import (
    HEAD_PIECE,
    MAX_HTTP_HEAD,
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


def test_a_head_within_its_limit_is_read_and_one_far_past_it_gets_431_wherever_it_begins(
) -> None:
    head = b"GET /a HTTP/1.1\r\nx-big: \r\n\r\n"
    for starts in (50, 1000, HEAD_PIECE - 10, 2 * HEAD_PIECE - 10):  # after a pipelined request
        first = b"PUT /p HTTP/1.1\r\ncontent-length: 00000\r\n\r\n"
        first = first.replace(b"00000", b"%05d" % (starts - len(first)))
        first += b"v" * (starts - len(first))
        for size, refused in ((MAX_HTTP_HEAD, False), (MAX_HTTP_HEAD + HEAD_PIECE + 1, True)):
            big = head.replace(b"x-big: ", b"x-big: " + b"b" * (size - len(head)))
            echo = Echo()
            answer = converse(first + big, echo)
            targets = [r.target for r in echo.requests]
            assert targets == ([b"/p"] if refused else [b"/p", b"/a"]), (starts, size)
            assert (b"HTTP/1.1 431 " in answer) == refused


def test_the_connection_closes_after_the_request_that_asks_and_after_an_upgrade() -> None:
    for last in (b"GET /a HTTP/1.1\r\nconnection: close\r\n\r\n",
                 b"GET /a HTTP/1.0\r\n\r\n",
                 b"GET /a HTTP/1.1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"):
        echo = Echo()
        answer = converse(last + b"GET /never HTTP/1.1\r\n\r\n", echo)
        assert [r.target for r in echo.requests] == [b"/a"]
        assert answer.startswith(b"HTTP/1.1 200 ") and b"connection: close" in answer
    echo = Echo()
    answer = converse(b"CONNECT 10.0.0.1:443 HTTP/1.1\r\nhost: x\r\n\r\nTLS bytes", echo)
    assert [(r.method, r.target) for r in echo.requests] == [("CONNECT", b"10.0.0.1:443")]
    assert answer.count(b"HTTP/1.1 ") == 1 and b"connection: close" in answer


def test_what_cannot_be_served_is_refused_after_the_requests_before_it_are_answered() -> None:
    for bad, status in ((b"GARBAGE\r\n\r\n", b"400"),
                        (b"PUT /b HTTP/1.1\r\ncontent-length: %d\r\n\r\n" % MAX_PAIR_BYTES,
                         b"413"),
                        (b"GET /b HTTP/1.1\r\nx-big: " + b"b" * 2 * MAX_HTTP_HEAD, b"431")):
        echo = Echo()
        answer = converse(b"GET /a HTTP/1.1\r\n\r\n" + bad, echo)
        assert [r.target for r in echo.requests] == [b"/a"]
        first, refused = answer.split(b"HTTP/1.1 ")[1:]
        assert first.startswith(b"200 ") and refused.startswith(status + b" ")
        assert b"connection: close" in refused


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


REQUEST_PARTS = st.sampled_from([
    b"GET /kv/k HTTP/1.1\r\n", b"PUT /kv/k HTTP/1.1\r\n", b"GET / HTTP/1.0\r\n",
    b"host: x\r\n", b"content-length: 3\r\n", b"transfer-encoding: chunked\r\n",
    b"connection: close\r\n", b"\r\n", b"3\r\nabc\r\n0\r\n\r\n", b"abc", b"\n", b"\x00\xff"])


@settings(max_examples=300)
@given(st.lists(st.one_of(REQUEST_PARTS, st.binary(max_size=20)), min_size=1, max_size=12))
def test_any_bytes_get_one_whole_answer_per_request_in_turn_and_at_most_one_refusal_last(
        parts: list[bytes]) -> None:
    echo = Echo()
    answers = split_answers(converse(b"".join(parts), echo))
    statuses = [ResponseReader().feed(answer) for answer in answers]
    assert all(response is not None for response in statuses)
    served = [r for r in statuses if r is not None and r.status == 200]
    assert len(served) == len(echo.requests)
    assert statuses[:len(served)] == served  # answered in turn, a refusal only after them
    assert len(statuses) - len(served) <= 1
    if len(statuses) > len(served):
        assert b"connection: close" in answers[-1]


def split_answers(data: bytes) -> list[bytes]:
    """The answers in ``data``, one after another, each framed by its content-length."""
    answers = []
    while data:
        head_end = data.index(b"\r\n\r\n") + 4
        found = re.search(rb"\r\ncontent-length: ([0-9]+)\r\n", data[:head_end])
        assert found is not None
        end = head_end + int(found[1])
        answers.append(data[:end])
        data = data[end:]
    return answers
