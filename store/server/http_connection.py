"""HTTP/1.1 on one accepted connection: requests read by llhttp (httptools) within limits,
replies sent.

The requests of a connection are answered one at a time, in order (so pipelined requests work),
each by a handler that maps a :class:`Request` to a :class:`Reply`. ``HEAD`` gets the headers of
the reply, without its body. A handler that raises (a bug) is logged and its request answered
``500``, ``X-Kv-Applied: unknown``. The connection closes when the client closes it or asks to,
after a malformed request (answered ``400``, or ``431`` for a head past
:data:`MAX_HTTP_HEAD`), after a body that reaches the key/value limit (``413``), after the
answer to a ``CONNECT`` or an upgrade request (neither is served further),
and when the client is too slow (:class:`HttpLimits`): ``408`` when a request is not all in
within ``request_s`` of its first byte; closed without an answer when no request starts within
``idle_s`` of the last reply, or when a reply is not taken within ``request_s``. Every error
reply is JSON, ``{"error": "..."}`` (:func:`error_reply`). A node serves at most
``http_max_connections`` connections at once (:class:`HttpConnections`); one more is answered
``503`` (``X-Kv-Applied: no``) and closed. Peer connections are not counted.
"""

from __future__ import annotations

import json
import logging
import resource
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httptools
import trio

from kvcheck.store.config import MAX_PAIR_BYTES
from kvcheck.store.http import APPLIED_HEADER

log = logging.getLogger(__package__)

#: Largest request head accepted over HTTP (a body is refused past the key/value limit).
MAX_HTTP_HEAD = 16 * 1024
#: Bytes read at a time: a head is counted in pieces this long (:class:`_RequestReader`), of
#: which MAX_HTTP_HEAD is a multiple.
HEAD_PIECE = MAX_HTTP_HEAD // 4
#: Seconds, and bytes, a connection answered and closed at once (:func:`close_with`) is read
#: for after the answer, so that closing it with unread bytes does not reset the answer away.
LINGER_S = 1.0
LINGER_BYTES = 64 * 1024
#: Connections past the cap being answered ``503`` at once, at most (each for up to a second);
#: past it, one is closed without an answer.
REFUSING_MAX = 100
#: File descriptors a node needs besides its HTTP connections: listeners, peers, storage files.
OTHER_DESCRIPTORS = 100


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """How slow a client may be: ``request_s`` from a request's first byte to its last, and to
    take the reply; ``idle_s`` between requests."""

    request_s: float
    idle_s: float


@dataclass(frozen=True, slots=True)
class Request:
    """One complete request: ``method`` as sent (``GET``), the raw ``target`` (path and query),
    the headers by lower-case name (the last of repeated ones), and the body."""

    method: str
    target: bytes
    headers: Mapping[bytes, bytes]
    body: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    """One response; ``content-length`` is added when it is sent."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


Handler = Callable[[Request], Awaitable[Reply]]


def json_reply(status: int, payload: dict[str, Any],
               headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """``payload`` as indented JSON, with ``headers`` after the content type."""
    body = json.dumps(payload, indent=1).encode() + b"\n"
    return Reply(status, (("content-type", "application/json"), *headers), body)


def error_reply(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """The store's error reply: ``{"error": message}``."""
    return json_reply(status, {"error": message}, headers)


class HttpConnections:
    """The HTTP connections of one node: each served by :func:`serve_http` with ``handler``
    within ``limits``, at most ``cap`` at once; one more is answered ``503`` (``X-Kv-Applied:
    no``) and closed — at most :data:`REFUSING_MAX` at once, past which one is closed without an
    answer. Counts in ``counters`` (``http_connections_refused``, and :func:`serve_http`'s).
    Warns at once if the process's open-file limit leaves too few descriptors for ``cap``."""

    def __init__(self, handler: Handler, limits: HttpLimits, cap: int,
                 counters: Counter[str]) -> None:
        self._handler, self._limits, self._cap, self._counters = handler, limits, cap, counters
        #: Connections being served.
        self.open = 0
        self._refusing = 0
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = cap + REFUSING_MAX + OTHER_DESCRIPTORS
        if soft != resource.RLIM_INFINITY and soft < wanted:
            log.warning("http_max_connections = %d needs about %d file descriptors, and the "
                        "limit is %d: raise it (ulimit -n) or lower http_max_connections",
                        cap, wanted, soft)

    async def serve(self, stream: trio.abc.HalfCloseableStream, data: bytes) -> None:
        """Serve one connection, whose first bytes ``data`` are in, or refuse it past the cap.
        The caller closes ``stream``; its errors propagate."""
        if self.open >= self._cap:
            self._counters["http_connections_refused"] += 1
            if self._refusing < REFUSING_MAX:
                self._refusing += 1
                try:
                    await close_with(stream, json_reply(503, {
                        "error": f"too many connections: this node serves {self._cap} at once "
                                 f"(http_max_connections); try again later",
                        "applied": "no"}, ((APPLIED_HEADER, "no"),)))
                finally:
                    self._refusing -= 1
            return
        self.open += 1
        try:
            await serve_http(stream, data, self._handler, self._limits, self._counters)
        finally:
            self.open -= 1


class _Refused(Exception):
    """A request not served: answered ``status`` with the message, and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _TooSlow(Exception):
    pass


class _RequestReader:
    """The requests of one connection, read by llhttp (httptools) from the bytes :meth:`feed`
    is given: each complete one queues in ``complete`` with whether the connection may carry
    another after it (llhttp's rule: HTTP/1.1 without ``connection: close``, or HTTP/1.0 with
    ``connection: keep-alive``; never after a ``CONNECT`` or an upgrade request, whose bytes
    after it are not read). ``partial`` says whether a request's first bytes are in but not all
    of it. What cannot be served ends the reading and waits in ``refusal``, to be answered after
    the requests complete before it: ``400`` for what is not HTTP/1.1, ``431`` for a head past
    :data:`MAX_HTTP_HEAD`, ``413`` for a body at the key/value limit. A head is counted in the
    pieces of :data:`HEAD_PIECE` bytes it is read in, from the start of the piece where it
    begins, and refused once the count passes ``MAX_HTTP_HEAD`` (a multiple of the piece)
    before its end: one of up to ``MAX_HTTP_HEAD`` bytes is always read, one past
    ``MAX_HTTP_HEAD + HEAD_PIECE`` always refused."""

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self.complete: deque[tuple[Request, bool]] = deque()
        self.partial = False
        self.refusal: _Refused | None = None
        self._ended = False  # nothing more is read
        self._in_head = False
        self._head_bytes = 0
        self._piece = 0
        self._target = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._body = bytearray()

    def feed(self, data: bytes) -> None:
        """Read ``data``, the next bytes received (nothing once the reading has ended)."""
        for start in range(0, len(data), HEAD_PIECE):
            if self._ended:
                return
            piece = data[start:start + HEAD_PIECE]
            self._piece = len(piece)
            if self._in_head:
                self._head_bytes += len(piece)
            try:
                self._parser.feed_data(piece)
            except httptools.HttpParserUpgrade:
                if self.complete and not self._ended:  # llhttp completes it, then stops
                    self._ended = True
                    request, _ = self.complete.pop()
                    self.complete.append((request, False))
                self._refuse(400, "CONNECT and upgrade requests are served only whole")
            except httptools.HttpParserError as exc:
                self._refuse(400, f"malformed request: {exc}")
            if self._in_head and self._head_bytes > MAX_HTTP_HEAD:
                self._refuse(431, f"request head longer than {MAX_HTTP_HEAD} bytes")

    def _refuse(self, status: int, message: str) -> None:
        if not self._ended:
            self._ended = True
            self.refusal = _Refused(status, message)

    # llhttp's callbacks, called within feed

    def on_message_begin(self) -> None:
        self.partial = self._in_head = True
        self._head_bytes = self._piece  # at most this piece's bytes are the head's so far
        self._target.clear()
        self._headers = {}
        self._body.clear()

    def on_url(self, url: bytes) -> None:
        self._target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value.strip(b" \t")

    def on_headers_complete(self) -> None:
        self._in_head = False
        length = self._headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) >= MAX_PAIR_BYTES:
            self._refuse(413, f"request body of {int(length)} bytes; key and value must stay "
                              f"under {MAX_PAIR_BYTES} bytes")

    def on_body(self, body: bytes) -> None:
        if not self._ended:
            self._body += body
            if len(self._body) >= MAX_PAIR_BYTES:
                self._refuse(413, f"key and value must stay under {MAX_PAIR_BYTES} bytes")

    def on_message_complete(self) -> None:
        self.partial = False
        if not self._ended:
            request = Request(self._parser.get_method().decode("ascii"), bytes(self._target),
                              self._headers, bytes(self._body))
            self.complete.append((request, self._parser.should_keep_alive()))


async def serve_http(stream: trio.abc.Stream, data: bytes, handler: Handler,
                     limits: HttpLimits, counters: Counter[str]) -> None:
    """Answer the requests on ``stream`` with ``handler`` until the connection is to close.
    ``data`` is what was already received. Counts in ``counters`` the requests too slow
    (``http_timeouts``) and the handler's failures (``http_internal_errors``). The caller closes
    ``stream``; errors of the stream itself (OSError, trio.BrokenResourceError) propagate."""
    reader = _RequestReader()
    reader.feed(data)
    while True:
        try:
            exchange = await _next_request(reader, stream, limits)
        except _Refused as exc:
            await _send(stream, error_reply(exc.status, str(exc)), limits, close=True)
            return
        except _TooSlow as exc:
            counters["http_timeouts"] += 1
            await close_with(stream, error_reply(408, str(exc)))
            return
        if exchange is None:
            return
        request, keep_alive = exchange
        try:
            reply = await handler(request)
        except Exception:
            counters["http_internal_errors"] += 1
            log.exception("bug while answering %s %r; answered 500", request.method,
                          request.target[:200])
            reply = error_reply(500, "internal error (the node logged it); a write may or "
                                     "may not have been applied", ((APPLIED_HEADER, "unknown"),))
        if not await _send(stream, reply, limits, head=request.method == "HEAD",
                           close=not keep_alive):
            counters["http_timeouts"] += 1
            return
        if not keep_alive:
            return


async def close_with(stream: trio.abc.Stream, reply: Reply) -> None:
    """Send ``reply`` whatever state the exchange is in, with ``connection: close``, then end
    the connection, reading and discarding for up to :data:`LINGER_S` and
    :data:`LINGER_BYTES` — closing a socket with unread bytes resets it, and the reset may
    overtake the answer. The caller closes ``stream``."""
    with trio.move_on_after(LINGER_S):
        await stream.send_all(_encode(reply, close=True))
        if isinstance(stream, trio.abc.HalfCloseableStream):
            await stream.send_eof()
        drained = 0
        while drained < LINGER_BYTES and (data := await stream.receive_some(65536)):
            drained += len(data)


async def _receive(stream: trio.abc.Stream, deadline: float) -> bytes | None:
    """The next bytes from ``stream`` (empty at its end), or None if none came by ``deadline``
    (trio's clock)."""
    with trio.move_on_at(deadline):
        return bytes(await stream.receive_some(65536))
    return None


async def _next_request(reader: _RequestReader, stream: trio.abc.Stream,
                        limits: HttpLimits) -> tuple[Request, bool] | None:
    """The next complete request and whether the connection may carry another, or None if the
    client closed the connection, or sent nothing for ``limits.idle_s``, between requests (or
    ends it within one). Raises the reader's refusal once the requests before it are answered,
    or _TooSlow when the request is not all in within ``limits.request_s`` of its first
    byte."""
    deadline = trio.current_time() + limits.request_s
    while not reader.complete:
        if reader.refusal is not None:
            raise reader.refusal
        if reader.partial:
            data = await _receive(stream, deadline)
            if data is None:
                raise _TooSlow(f"the request was not all in within {limits.request_s:g} s "
                               f"of its first byte")
        else:
            data = await _receive(stream, trio.current_time() + limits.idle_s)
            if data is None:
                return None
            deadline = trio.current_time() + limits.request_s
        if not data:
            return None
        reader.feed(data)
    return reader.complete.popleft()


async def _send(stream: trio.abc.Stream, reply: Reply, limits: HttpLimits, head: bool = False,
                close: bool = False) -> bool:
    """Send ``reply`` (:func:`_encode`). False if the client did not take it within
    ``limits.request_s`` (the connection is then unusable)."""
    with trio.move_on_after(limits.request_s):
        await stream.send_all(_encode(reply, head, close))
        return True
    return False


def _encode(reply: Reply, head: bool = False, close: bool = False) -> bytes:
    """``reply`` as sent: its headers, ``content-length``, ``connection: close`` when
    ``close``; the body unless ``head`` (the answer to a HEAD request)."""
    lines = [f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}",
             *(f"{name}: {value}" for name, value in reply.headers),
             f"content-length: {len(reply.body)}", *(["connection: close"] if close else []),
             "", ""]
    return "\r\n".join(lines).encode("latin-1") + (b"" if head else reply.body)
