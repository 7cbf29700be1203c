"""HTTP/1.1 on one accepted connection, with h11: requests read within limits, replies sent.

The requests of a connection are answered one at a time, in order (so pipelined requests work),
each by a handler that maps a :class:`Request` to a :class:`Reply`. ``HEAD`` gets the headers of
the reply, without its body. The connection closes when the client closes it or asks to, after
a malformed request (answered with h11's status hint, usually ``400``), and after a request
whose head reaches :data:`MAX_HTTP_HEAD` or whose body reaches the key/value limit (``413``).
Every error reply is JSON, ``{"error": "..."}`` (:func:`error_reply`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import h11
import trio

from kvcheck.store.config import MAX_PAIR_BYTES

#: Largest request head accepted over HTTP (a body is refused past the key/value limit).
MAX_HTTP_HEAD = 16 * 1024


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


class _TooLarge(Exception):
    pass


async def serve_http(stream: trio.abc.Stream, data: bytes, handler: Handler) -> None:
    """Answer the requests on ``stream`` with ``handler`` until the connection is to close.
    ``data`` is what was already received, at least one byte (h11 reads no bytes as the end of
    the connection). The caller closes ``stream``; errors of the stream itself (OSError,
    trio.BrokenResourceError) propagate."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HTTP_HEAD)
    conn.receive_data(data)
    while True:
        try:
            request = await _read_request(conn, stream)
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await _send(conn, stream, error_reply(exc.error_status_hint, str(exc)))
            return
        except _TooLarge as exc:
            await _send(conn, stream, error_reply(413, str(exc)))
            return
        if request is None:
            return
        reply = await handler(request)
        await _send(conn, stream, reply, head=request.method == "HEAD")
        if conn.our_state is h11.MUST_CLOSE:
            return
        conn.start_next_cycle()


async def _read_request(conn: h11.Connection, stream: trio.abc.Stream) -> Request | None:
    """The next complete request, or None if the client closed the connection between
    requests. Raises h11.RemoteProtocolError, or _TooLarge for a body at the key/value limit."""
    request = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = bytes(await stream.receive_some(65536))
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
                head: bool = False) -> None:
    """Send ``reply``; for a HEAD request, its headers only."""
    headers = [*reply.headers, ("content-length", str(len(reply.body)))]
    events: list[h11.Event] = [h11.Response(status_code=reply.status, headers=headers,
                                            reason=HTTPStatus(reply.status).phrase)]
    if reply.body and not head:
        events.append(h11.Data(data=reply.body))
    events.append(h11.EndOfMessage())
    await stream.send_all(b"".join(conn.send(event) or b"" for event in events))
