"""One HTTP connection, served over an in-memory stream: what the handler sees, what is sent."""

from __future__ import annotations

import json

import trio
import trio.testing

from kvcheck.store.config import MAX_PAIR_BYTES
from kvcheck.store.server.http_connection import Reply, Request, serve_http


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
                await serve_http(server, sent[:already], handler)
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
