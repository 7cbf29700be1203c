"""HTTP/1.1 on one accepted connection, with h11: requests read within limits, replies sent.

The requests of a connection are answered one at a time, in order (so pipelined requests work),
each by a handler that maps a :class:`Request` to a :class:`Reply`. ``HEAD`` gets the headers of
the reply, without its body. A handler that raises (a bug) is logged and its request answered
``500``, ``X-Kv-Applied: unknown``. The connection closes when the client closes it or asks to,
after a malformed request (answered with h11's status hint: ``400``, or ``431`` for a head
that reaches :data:`MAX_HTTP_HEAD`), after a body that reaches the key/value limit (``413``),
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
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import h11
import trio

from kvcheck.store.config import MAX_PAIR_BYTES
from kvcheck.store.http import APPLIED_HEADER

log = logging.getLogger(__package__)

#: Largest request head accepted over HTTP (a body is refused past the key/value limit).
MAX_HTTP_HEAD = 16 * 1024
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


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


async def serve_http(stream: trio.abc.Stream, data: bytes, handler: Handler,
                     limits: HttpLimits, counters: Counter[str]) -> None:
    """Answer the requests on ``stream`` with ``handler`` until the connection is to close.
    ``data`` is what was already received, at least one byte (h11 reads no bytes as the end of
    the connection). Counts in ``counters`` the requests too slow (``http_timeouts``) and the
    handler's failures (``http_internal_errors``). The caller closes ``stream``; errors of the
    stream itself (OSError, trio.BrokenResourceError) propagate."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HTTP_HEAD)
    conn.receive_data(data)
    while True:
        try:
            request = await _read_request(conn, stream, limits)
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await _send(conn, stream, error_reply(exc.error_status_hint, str(exc)), limits)
            return
        except _TooLarge as exc:
            await _send(conn, stream, error_reply(413, str(exc)), limits)
            return
        except _TooSlow as exc:
            counters["http_timeouts"] += 1
            await close_with(stream, error_reply(408, str(exc)))
            return
        if request is None:
            return
        try:
            reply = await handler(request)
        except Exception:
            counters["http_internal_errors"] += 1
            log.exception("bug while answering %s %r; answered 500", request.method,
                          request.target[:200])
            reply = error_reply(500, "internal error (the node logged it); a write may or "
                                     "may not have been applied", ((APPLIED_HEADER, "unknown"),))
        if not await _send(conn, stream, reply, limits, head=request.method == "HEAD"):
            counters["http_timeouts"] += 1
            return
        if conn.our_state is h11.MUST_CLOSE:
            return
        conn.start_next_cycle()


async def close_with(stream: trio.abc.Stream, reply: Reply) -> None:
    """Send ``reply`` whatever state the exchange is in, then end the connection: sent without
    h11 (which answers only a request it has read), with ``connection: close``, followed by
    reading and discarding for up to :data:`LINGER_S` and :data:`LINGER_BYTES` — closing a
    socket with unread bytes resets it, and the reset may overtake the answer. The caller
    closes ``stream``."""
    head = [f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}",
            *(f"{name}: {value}" for name, value in reply.headers),
            f"content-length: {len(reply.body)}", "connection: close", "", ""]
    with trio.move_on_after(LINGER_S):
        await stream.send_all("\r\n".join(head).encode("latin-1") + reply.body)
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


async def _read_request(conn: h11.Connection, stream: trio.abc.Stream,
                        limits: HttpLimits) -> Request | None:
    """The next complete request, or None if the client closed the connection, or sent
    nothing for ``limits.idle_s``, between requests. Raises h11.RemoteProtocolError, _TooLarge
    for a body at the key/value limit, or _TooSlow when the request is not all in within
    ``limits.request_s`` of its first byte."""
    request = None
    body = bytearray()
    started = bool(conn.trailing_data[0])  # the request's first bytes are in already
    deadline = trio.current_time() + limits.request_s
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            if started:
                data = await _receive(stream, deadline)
                if data is None:
                    raise _TooSlow(f"the request was not all in within {limits.request_s:g} s "
                                   f"of its first byte")
            else:
                data = await _receive(stream, trio.current_time() + limits.idle_s)
                if data is None:
                    return None
                started = True
                deadline = trio.current_time() + limits.request_s
            conn.receive_data(data)
            if not data and conn.their_state is h11.IDLE:
                return None
        elif isinstance(event, h11.Request):
            request = event
            length = dict(event.headers).get(b"content-length")
            if length is not None and length.isdigit() and int(length) >= MAX_PAIR_BYTES:
                raise _TooLarge(f"request body of {int(length)} bytes; key and value must "
                                f"stay under {MAX_PAIR_BYTES} bytes")
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) >= MAX_PAIR_BYTES:
                raise _TooLarge(f"key and value must stay under {MAX_PAIR_BYTES} bytes")
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None  # h11 sends a Request before its EndOfMessage
            return Request(request.method.decode(), request.target, dict(request.headers),
                           bytes(body))
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def _send(conn: h11.Connection, stream: trio.abc.Stream, reply: Reply,
                limits: HttpLimits, head: bool = False) -> bool:
    """Send ``reply``; for a HEAD request, its headers only. False if the client did not take
    it within ``limits.request_s`` (the connection is then unusable)."""
    headers = [*reply.headers, ("content-length", str(len(reply.body)))]
    events: list[h11.Event] = [h11.Response(status_code=reply.status, headers=headers,
                                            reason=HTTPStatus(reply.status).phrase)]
    if reply.body and not head:
        events.append(h11.Data(data=reply.body))
    events.append(h11.EndOfMessage())
    with trio.move_on_after(limits.request_s):
        await stream.send_all(b"".join(conn.send(event) or b"" for event in events))
        return True
    return False
