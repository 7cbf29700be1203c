"""Client errors in plain words (``harness/databases/errors.py``): the words and the detail.

First :func:`describe_error` on each exception the transports raise (h11's made by h11 itself);
then every built-in client, and the example's, against real sockets on loopback — nothing
listening, a server that closes or resets the connection after reading the request, one that
never answers, one that answers garbage — and the Redis client against stub sentinels and
primaries that speak RESP; then the history line that records the words and the detail, read
back by the checkers and shown by the report.
"""

from __future__ import annotations

import errno
import json
import random
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import h11
import hiredis
import httpx
import pytest
import trio
from primary_store.adapter import PORT as EXAMPLE_PORT
from primary_store.adapter import PrimaryStoreClient

from kvcheck.checkers import check_run, read_history, write_history
from kvcheck.harness.clients import perform
from kvcheck.harness.databases import (
    Client,
    Completion,
    Fail,
    Info,
    Operation,
    describe_error,
    error_detail,
)
from kvcheck.harness.databases.errors import DETAIL_LIMIT
from kvcheck.harness.databases.etcd_client import CLIENT_PORT, EtcdClient
from kvcheck.harness.databases.kvstore import PORT as KVSTORE_PORT
from kvcheck.harness.databases.kvstore import KvStoreClient
from kvcheck.harness.databases.redis_client import REDIS_PORT, SENTINEL_PORT, RedisClient
from kvcheck.harness.history import HistoryWriter
from kvcheck.harness.report import write_report
from kvcheck.store.client import StoreClient
from kvcheck.store.http1 import IncompleteResponse, InvalidRequest, MalformedResponse

#: The clients' own timeout in these tests, in seconds.
TIMEOUT = 0.3
WRITE, READ = Operation("write", "r1", 1), Operation("read", "r1")

# -- the words of each exception ----------------------------------------------------------------


def h11_error(incoming: bytes) -> h11.RemoteProtocolError:
    """What h11 raises in a client that sent a request, then received ``incoming`` and the end
    of the stream."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/kv/r1", headers=[("host", "127.0.0.1:7000")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(incoming)
    conn.receive_data(b"")
    with pytest.raises(h11.RemoteProtocolError) as caught:
        while True:
            conn.next_event()
    return caught.value


def caused(error: BaseException, cause: BaseException) -> BaseException:
    """``error`` raised ``from cause``, as a library raises it."""
    error.__cause__ = cause
    return error


def refused_attempts() -> BaseException:
    """trio's error for a connection refused: a group of attempts, under an OSError."""
    message = "all attempts to connect to 127.0.0.1:7000 failed"
    return caused(OSError(message), ExceptionGroup(message, [
        ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed ('127.0.0.1', 7000)")]))


def os_error(code: int) -> OSError:
    return OSError(code, f"{errno.errorcode[code]} for 127.0.0.1:7000")


REQUEST = httpx.Request("GET", "http://127.0.0.1:2379/v3/kv/range")


@pytest.mark.parametrize(("error", "words"), [
    (os_error(errno.ECONNREFUSED), "connection refused"),
    (refused_attempts(), "connection refused"),
    (caused(httpx.ConnectError("all attempts to connect to 127.0.0.1:7000 failed",
                               request=REQUEST), refused_attempts()), "connection refused"),
    (os_error(errno.ECONNRESET), "connection reset"),
    (os_error(errno.ECONNABORTED), "connection reset"),
    (caused(trio.BrokenResourceError("socket connection broken: [Errno 104] reset"),
            os_error(errno.ECONNRESET)), "connection reset"),
    (caused(httpx.ReadError("socket connection broken", request=REQUEST),
            caused(trio.BrokenResourceError(), os_error(errno.ECONNRESET))), "connection reset"),
    (os_error(errno.EPIPE), "connection closed before the reply"),
    (h11_error(b""), "connection closed before the reply"),
    (h11_error(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"),
     "connection closed before the reply"),
    (httpx.RemoteProtocolError("Server disconnected without sending a response.",
                               request=REQUEST), "connection closed before the reply"),
    (IncompleteResponse("the connection ended before the response, after nothing"),
     "connection closed before the reply"),
    (os_error(errno.EHOSTUNREACH), "host unreachable"),
    (os_error(errno.EHOSTDOWN), "host unreachable"),
    (os_error(errno.ENETUNREACH), "network unreachable"),
    (os_error(errno.ETIMEDOUT), "connection timed out"),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
     "could not resolve the host"),
    (httpx.ConnectTimeout("", request=REQUEST), "timed out connecting"),
    (httpx.PoolTimeout("", request=REQUEST), "timed out connecting"),
    (trio.TooSlowError(), "timed out"),
    (TimeoutError(), "timed out"),
    (caused(httpx.ReadTimeout("", request=REQUEST), trio.TooSlowError()), "timed out"),
    (httpx.WriteTimeout("", request=REQUEST), "timed out"),
    (h11_error(b"this is not HTTP\r\n\r\n"), "malformed reply"),
    (httpx.RemoteProtocolError("illegal status line: bytearray(b'x')", request=REQUEST),
     "malformed reply"),
    (httpx.DecodingError("bad gzip", request=REQUEST), "malformed reply"),
    (hiredis.ProtocolError('Protocol error, got "@" as reply type byte'), "malformed reply"),
    (MalformedResponse("not an HTTP/1.1 response: Expected HTTP/, RTSP/ or ICE/"),
     "malformed reply"),
    (h11.LocalProtocolError("can't send data when our state is DONE"),
     "protocol error in the client"),
    (InvalidRequest("not a header: 'x-kv-context': 'a\\r\\n'"), "protocol error in the client"),
    (httpx.ConnectError("", request=REQUEST), "could not connect"),
    (os_error(errno.EADDRNOTAVAIL), "cannot assign requested address"),
    (trio.ClosedResourceError("this socket was already closed"),
     "connection closed by the client"),
    (trio.BrokenResourceError(), "connection lost"),
    (httpx.ReadError("", request=REQUEST), "connection lost"),
    (OSError("all attempts to connect failed"), "connection lost"),
    (ValueError("0x7f3a2c1d is not a thing"), "unexpected error (ValueError)"),
])
def test_each_error_in_plain_words_and_the_raw_text_as_detail(error: BaseException,
                                                              words: str) -> None:
    said, detail = describe_error(error)
    assert said == words
    assert "127.0.0.1" not in said and "7000" not in said and "0x" not in said
    innermost = error
    while innermost.__cause__ is not None:
        innermost = innermost.__cause__
    for e in (innermost.exceptions if isinstance(innermost, ExceptionGroup) else [innermost]):
        assert str(e) in detail  # the raw text, whatever the words
    assert detail == error_detail(error)


def test_a_timeout_says_how_long_the_client_waited() -> None:
    assert describe_error(trio.TooSlowError(), 2.5)[0] == "timed out after 2.5 s"
    assert describe_error(httpx.ConnectTimeout("", request=REQUEST), 5)[0] \
        == "timed out connecting after 5 s"
    assert describe_error(os_error(errno.ECONNREFUSED), 5)[0] == "connection refused"


def test_the_detail_names_each_cause_once() -> None:
    error = caused(httpx.ConnectError("all attempts to connect to 127.0.0.1:7000 failed",
                                      request=REQUEST), refused_attempts())
    assert error_detail(error) == (
        "httpx.ConnectError: all attempts to connect to 127.0.0.1:7000 failed <- "
        "ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 7000)")
    assert error_detail(trio.TooSlowError()) == "trio.TooSlowError"
    assert len(error_detail(ValueError("x" * 5000))) == DETAIL_LIMIT


def test_a_cause_is_found_however_it_was_chained() -> None:
    def wrapped(how: str) -> BaseException:
        try:
            try:
                raise os_error(errno.ECONNRESET)
            except OSError as exc:
                if how == "from":
                    raise RuntimeError("wrapped") from exc
                if how == "from None":  # as httpcore does, under its own exception
                    raise RuntimeError("wrapped") from None
                raise RuntimeError("wrapped")  # noqa: B904 - the context is what is tested
        except RuntimeError as exc:
            return exc

    for how in ("from", "from None", "context"):
        assert describe_error(wrapped(how)) == (
            "connection reset", "RuntimeError: wrapped <- ConnectionResetError: "
            "[Errno 104] ECONNRESET for 127.0.0.1:7000"), how
    assert describe_error(RuntimeError("wrapped"))[0] == "unexpected error (RuntimeError)"


# -- real sockets -------------------------------------------------------------------------------


def loopback_host() -> str:
    """An address of the loopback interface that no other test uses (Linux routes all of
    127.0.0.0/8 there), so that a stub can listen on a database's usual port."""
    return f"127.{random.randrange(1, 255)}.{random.randrange(256)}.{random.randrange(2, 255)}"


Handler = Callable[[trio.SocketStream], Awaitable[None]]


@asynccontextmanager
async def serving(host: str, port: int, handler: Handler) -> AsyncIterator[None]:
    """Serve ``handler`` on ``host:port`` for the block, then stop."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handler, listeners)
        yield
        nursery.cancel_scope.cancel()


async def misbehave(stream: trio.SocketStream, how: str, garbage: bytes) -> None:
    """After a whole request was read (nothing left unread, so a close is a clean end of the
    stream): ``close`` it, ``reset`` it (SO_LINGER 0: an RST), stay ``silent``, or answer
    ``garbage``."""
    if how == "silent":
        await trio.sleep_forever()
    if how == "garbage":
        await stream.send_all(garbage)
        await trio.sleep_forever()
    if how == "reset":
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


def http_server(how: str) -> Handler:
    async def handler(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while not isinstance(event := conn.next_event(), h11.EndOfMessage):
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
        await misbehave(stream, how, b"this is not HTTP\r\n\r\n")
    return handler


HTTP_CLIENTS: dict[str, tuple[int, Callable[[str], Client]]] = {
    "kvstore": (KVSTORE_PORT, lambda host: KvStoreClient(
        StoreClient(host, KVSTORE_PORT, TIMEOUT), workload="register", vector_clocks=False)),
    "etcd": (CLIENT_PORT, lambda host: EtcdClient(host, workload="register", timeout=TIMEOUT)),
    "example": (EXAMPLE_PORT, lambda host: PrimaryStoreClient(host, timeout=TIMEOUT)),
}


@pytest.mark.parametrize("db", HTTP_CLIENTS)
@pytest.mark.parametrize(("how", "words"), [
    ("refused", "connection refused"),
    ("close", "connection closed before the reply"),
    ("reset", "connection reset"),
    ("silent", f"timed out after {TIMEOUT:g} s"),
    ("garbage", "malformed reply"),
])
def test_an_http_client_words_what_went_wrong(db: str, how: str, words: str) -> None:
    """A write that was sent may have happened (``Info``); a read is ``Fail`` whatever
    happened; nothing sent is ``Fail``. The address is in the detail, never in the words."""
    port, make = HTTP_CLIENTS[db]
    host = loopback_host()

    async def operations() -> tuple[Completion, Completion]:
        client = make(host)
        try:
            return await client.invoke(WRITE), await client.invoke(READ)
        finally:
            await client.close()

    async def main() -> None:
        if how == "refused":
            write, read = await operations()
        else:
            async with serving(host, port, http_server(how)):
                write, read = await operations()
        sent = Info if how != "refused" else Fail
        assert (write, read) == (sent(words), Fail(words))  # equal only if of the same class
        for completion in (write, read):
            assert isinstance(completion, Fail | Info) and completion.detail
            assert host not in completion.error
        if how == "refused":
            assert isinstance(write, Fail) and host in (write.detail or "")

    trio.run(main)


# -- Redis: a sentinel and a primary that speak RESP ----------------------------------------------


MASTER = b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n"


async def next_command(stream: trio.SocketStream, reader: hiredis.Reader) -> list[str] | None:
    """The next command that comes on ``stream``, read whole; None when the stream ends."""
    while (command := reader.gets()) is False:
        data = await stream.receive_some(65536)
        if not data:
            return None
        reader.feed(data)
    return list(command)


def sentinel(names: bytes) -> Handler:
    async def handler(stream: trio.SocketStream) -> None:
        reader = hiredis.Reader(encoding="utf-8")
        while await next_command(stream, reader) is not None:
            await stream.send_all(names)
    return handler


def primary(how: str) -> Handler:
    """A primary that answers ``ROLE`` (a replica's role with ``replica``), then answers the
    next command as ``how`` says: ``READONLY`` with ``readonly``, else :func:`misbehave`."""
    async def handler(stream: trio.SocketStream) -> None:
        reader = hiredis.Reader(encoding="utf-8")
        while (command := await next_command(stream, reader)) is not None:
            if command[0] == "ROLE":
                await stream.send_all(b"*1\r\n$5\r\nslave\r\n" if how == "replica" else MASTER)
            elif how == "readonly":
                await stream.send_all(b"-READONLY You can't write against a read only "
                                      b"replica.\r\n")
            else:
                await misbehave(stream, how, b"@not RESP\r\n")
                return
    return handler


@pytest.mark.parametrize(("how", "write", "read"), [
    ("no sentinel", Fail("sentinel: connection refused"), Fail("sentinel: connection refused")),
    ("no primary known", Fail("no primary known"), Fail("no primary known")),
    ("no primary", Fail("connection refused"), Fail("connection refused")),
    ("replica", Fail("not the primary"), Fail("not the primary")),
    ("readonly", Fail("not the primary (READONLY)"), Fail("not the primary (READONLY)")),
    ("close", Info("connection closed before the reply"),
     Fail("connection closed before the reply")),
    ("reset", Info("connection reset"), Fail("connection reset")),
    ("silent", Info(f"timed out after {TIMEOUT:g} s"), Fail(f"timed out after {TIMEOUT:g} s")),
    ("garbage", Info("malformed reply"), Fail("malformed reply")),
])
def test_the_redis_client_words_what_went_wrong(how: str, write: Completion,
                                                read: Completion) -> None:
    host = loopback_host()
    names = b"*-1\r\n" if how == "no primary known" else (
        b"*2\r\n$%d\r\n%s\r\n$4\r\n%d\r\n" % (len(host), host.encode(), REDIS_PORT))

    async def main() -> None:
        client = RedisClient(host, "register", timeout=TIMEOUT)
        async with trio.open_nursery() as nursery:
            if how != "no sentinel":
                listeners = await trio.open_tcp_listeners(SENTINEL_PORT, host=host)
                nursery.start_soon(trio.serve_listeners, sentinel(names), listeners)
            if how not in ("no sentinel", "no primary known", "no primary"):
                listeners = await trio.open_tcp_listeners(REDIS_PORT, host=host)
                nursery.start_soon(trio.serve_listeners, primary(how), listeners)
            try:
                completions = (await client.invoke(WRITE), await client.invoke(READ))
            finally:
                await client.close()
            nursery.cancel_scope.cancel()
        assert completions == (write, read)
        for completion in completions:
            assert isinstance(completion, Fail | Info) and completion.detail
            assert host not in completion.error

    trio.run(main)


# -- the history --------------------------------------------------------------------------------


class Refusing:
    """A client of a user's adapter that says why without a detail."""

    async def invoke(self, op: Operation) -> Completion:
        return Fail("the store said no")

    async def close(self) -> None:
        pass


def test_the_history_keeps_the_words_and_the_detail_and_the_report_shows_them(
        tmp_path: Path) -> None:
    host = loopback_host()
    run = tmp_path / "run"
    run.mkdir()
    history = HistoryWriter(run / "history.jsonl")

    async def main() -> None:
        async with serving(host, KVSTORE_PORT, http_server("close")):
            closed = KvStoreClient(StoreClient(host, KVSTORE_PORT, 5), workload="register",
                                   vector_clocks=False)
            assert await perform(closed, WRITE, history, 0, "n1", op_timeout=5) == "info"
            await closed.close()
        async with serving(host, KVSTORE_PORT, http_server("silent")):
            silent = KvStoreClient(StoreClient(host, KVSTORE_PORT, 5), workload="register",
                                   vector_clocks=False)
            assert await perform(silent, READ, history, 1, "n1", op_timeout=TIMEOUT) == "info"
            await silent.close()
        assert await perform(Refusing(), WRITE, history, 2, "n1", op_timeout=5) == "fail"

    trio.run(main)
    history.close()
    lines = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()[1:]]
    closed, harness, refused = (line for line in lines if line["type"] != "invoke")
    assert closed["error"] == "connection closed before the reply"
    assert "ended before the response" in closed["error_detail"]
    assert host in closed["error_detail"]
    assert harness["error"] == f"no answer within {TIMEOUT:g} s" and "error_detail" not in harness
    assert refused["error"] == "the store said no" and "error_detail" not in refused

    ops = read_history(run / "history.jsonl")
    assert ops[1].error == closed["error"]
    assert ops[1].extra == {"error_detail": closed["error_detail"]}
    write_history(tmp_path / "again.jsonl", ops)
    assert read_history(tmp_path / "again.jsonl") == ops

    (run / "test.json").write_text(json.dumps({"workload": "register", "nodes": ["n1"]}))
    check_run(run)
    page = write_report(run).read_text()
    assert "connection closed before the reply" in page


def test_a_completion_is_its_words_its_detail_aside() -> None:
    assert Fail("connection refused", "ConnectionRefusedError: ...") == Fail("connection refused")
    assert Info("timed out").detail is None
    match Info("timed out", "trio.TooSlowError"):
        case Info(error, detail):
            assert (error, detail) == ("timed out", "trio.TooSlowError")
    assert Fail("a") != Info("a")

