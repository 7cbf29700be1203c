"""An async (trio) client for the store's HTTP interface, for the harness and for people.

    async with StoreClient("127.0.0.1", 7001) as client:
        await client.put(b"k", b"v")
        read = await client.get(b"k")
        await client.put(b"k", b"w", context=read.context)

One client holds one keep-alive connection (:class:`HttpConnection`) and runs one request at a
time. Every failure is a :class:`StoreError` whose ``applied`` says what is known about a
write: ``"no"`` (it surely did not happen) or ``"unknown"`` (it may have: the request is
*indeterminate*).
"""

from __future__ import annotations

import json
import select
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import trio

from kvcheck.store.datadir import RecordJSON
from kvcheck.store.http import APPLIED_HEADER, CONTEXT_HEADER, MultipartError, decode_siblings
from kvcheck.store.http1 import (
    InvalidRequest,
    Response,
    ResponseError,
    ResponseReader,
    encode_request,
)

#: The most bytes taken from the socket at once.
RECEIVE_SIZE = 65536

Applied = Literal["no", "unknown"]


class StoreError(Exception):
    """A request that did not succeed. ``applied`` tells whether a write may have happened."""

    def __init__(self, message: str, applied: Applied, status: int | None = None) -> None:
        super().__init__(message)
        self.applied = applied
        self.status = status


class RequestRejected(StoreError):
    """The node refused the request as malformed or too large (4xx): nothing was written."""


class TooManySiblings(RequestRejected):
    """A write refused at the key's sibling cap (409): nothing was written. Read the key and
    write with the read's context, which resolves its siblings."""


class Unavailable(StoreError):
    """The node could not gather a quorum in time, or serves too many connections (503)."""


class ConnectionFailed(StoreError):
    """The connection failed or the answer did not come in time. Raised from (its
    ``__cause__`` is) the exception of the socket, of :mod:`kvcheck.store.http1` or of the
    timeout (``trio.TooSlowError``)."""


@dataclass(frozen=True, slots=True)
class ReadResult:
    """A read: the siblings (``None`` for a tombstone sibling; empty when the key is absent)
    and the causal context to send with the next write of the key."""

    values: tuple[bytes | None, ...]
    context: str

    @property
    def value(self) -> bytes | None:
        """The value when there is exactly one live version, else None."""
        return self.values[0] if len(self.values) == 1 else None


class StoreClient:
    """A connection to one node. Reconnects on the next request after a failure.

    ``timeout`` bounds each request — unless a caller's cancel scope has an earlier deadline
    when it starts: that one bounds it then (and its cancellation propagates), so that the
    harness, whose workers give each operation less than the client's timeout, pays for one
    deadline per operation, not two."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._connection = HttpConnection(host, port)
        self._lock = trio.Lock()

    async def __aenter__(self) -> StoreClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection, if open. Safe to call more than once."""
        self._connection.close()
        await trio.lowlevel.checkpoint()

    async def get(self, key: bytes | str, r: int | None = None) -> ReadResult:
        """Read ``key`` with read quorum ``r`` (the cluster's when None)."""
        status, headers, body = await self._request("GET", _path(key, "r", r))
        context = headers.get(CONTEXT_HEADER, "")
        if status == 200:
            return ReadResult((body,), context)
        if status == 404 and CONTEXT_HEADER in headers:
            return ReadResult((), context)
        if status == 300:
            try:
                return ReadResult(tuple(decode_siblings(headers.get("content-type", ""), body)),
                                  context)
            except MultipartError as exc:
                raise StoreError(f"malformed siblings from node: {exc}", "no", status) from None
        raise _error(status, headers, body, "no")

    async def put(self, key: bytes | str, value: bytes, context: str = "",
                  w: int | None = None) -> str:
        """Write ``value``; return the causal context of the new version."""
        return await self._write("PUT", key, value, context, w)

    async def delete(self, key: bytes | str, context: str = "", w: int | None = None) -> str:
        """Write a tombstone; return its causal context."""
        return await self._write("DELETE", key, b"", context, w)

    async def status(self) -> dict[str, Any]:
        """The node's ``/status`` document."""
        return await self._get_json("/status")

    async def ready(self) -> list[str]:
        """Why the node cannot serve yet (``/ready``): empty once it can."""
        status, headers, body = await self._request("GET", "/ready")
        if status == 200:
            return []
        try:
            reasons = json.loads(body)["waiting_for"] if status == 503 else None
        except (ValueError, KeyError, TypeError):
            reasons = None
        if not isinstance(reasons, list) or not reasons:
            raise _error(status, headers, body, "no")
        return [str(reason) for reason in reasons]

    async def placement(self) -> list[RecordJSON]:
        """Every member's record as this node has it (``/placement``): what a joining node
        starts from."""
        records: list[RecordJSON] = (await self._get_json("/placement"))["records"]
        return records

    async def leave(self) -> None:
        """Ask the node to decommission itself (``POST /leave``); returns once it has started.
        Raises :class:`RequestRejected` saying why it cannot: status 409 while another change
        is in progress (ask again later), 400 when it never can."""
        status, headers, body = await self._request("POST", "/leave")
        if status != 202:
            raise _error(status, headers, body, "no")

    async def replica(self, key: bytes | str) -> list[dict[str, Any]]:
        """The versions this node itself stores for ``key`` (``/replica/{key}``)."""
        raw = key.encode() if isinstance(key, str) else key
        versions: list[dict[str, Any]] = (
            await self._get_json("/replica/" + quote(raw, safe="")))["versions"]
        return versions

    async def _get_json(self, target: str) -> dict[str, Any]:
        status, headers, body = await self._request("GET", target)
        if status != 200:
            raise _error(status, headers, body, "no")
        document: dict[str, Any] = json.loads(body)
        return document

    async def _write(self, method: str, key: bytes | str, value: bytes, context: str,
                     w: int | None) -> str:
        headers = [(CONTEXT_HEADER, context)] if context else []
        status, response_headers, body = await self._request(
            method, _path(key, "w", w), headers, value)
        if status == 204:
            return response_headers.get(CONTEXT_HEADER, "")
        error = _error(status, response_headers, body, "unknown")
        if status == 409:
            raise TooManySiblings(str(error), "no", status)
        raise error

    async def _request(
        self, method: str, target: str, headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> tuple[int, dict[str, str], bytes]:
        """The node's answer: status, headers by lower-case name, body. Raises
        :class:`ConnectionFailed`: ``applied`` is ``"no"`` for a ``GET`` (it writes nothing)
        and for a request that never left, else ``"unknown"``."""
        applied: Applied = "no" if method == "GET" else "unknown"
        try:
            self._lock.acquire_nowait()  # no checkpoint when free: the request has its own
        except trio.WouldBlock:
            await self._lock.acquire()
        try:
            response = await self._within_timeout(method, target, headers or (), body)
        except (trio.TooSlowError, OSError, trio.ClosedResourceError, InvalidRequest,
                ResponseError) as exc:
            what = (f"no answer from {self.host}:{self.port} within {self.timeout} s"
                    if isinstance(exc, trio.TooSlowError) else
                    f"connection to {self.host}:{self.port} failed: {exc}")
            raise ConnectionFailed(what, applied if self._connection.sent else "no") from exc
        finally:
            self._lock.release()
        return response.status, response.headers, response.body

    async def _within_timeout(self, method: str, target: str,
                              headers: Sequence[tuple[str, str]], body: bytes) -> Response:
        """The connection's answer within :attr:`timeout` (raising ``trio.TooSlowError``),
        or within the caller's deadline when that comes first (class docstring)."""
        deadline = trio.current_time() + self.timeout
        if trio.current_effective_deadline() <= deadline:
            return await self._connection.request(method, target, headers, body)
        with trio.move_on_at(deadline):
            return await self._connection.request(method, target, headers, body)
        raise trio.TooSlowError


class HttpConnection:
    """One keep-alive HTTP/1.1 connection to ``host:port`` (:mod:`kvcheck.store.http1`),
    opened by the first request and again by the first after it closed. One request at a time:
    the caller serialises them. It closes itself after a response that does not keep it alive
    and after any failure, cancellation included (the exchange is then out of step)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._authority = f"{host}:{port}"
        self._socket: socket.socket | None = None
        self._poller = select.poll()  # the open socket, for closed_by_peer
        #: Whether the last request left, at least in part, so that even if it failed it may
        #: have had its effect. False when it failed before: while connecting, or invalid.
        self.sent = False

    async def request(self, method: str, target: str,
                      headers: Sequence[tuple[str, str]] = (), body: bytes = b"") -> Response:
        """Send a request (:func:`~kvcheck.store.http1.encode_request`: ``host`` and
        ``content-length``, then ``headers``) and return the whole response.

        Raises what the socket raises (``OSError``: connecting, sending, receiving),
        :class:`~kvcheck.store.http1.IncompleteResponse` or
        :class:`~kvcheck.store.http1.MalformedResponse`,
        :class:`~kvcheck.store.http1.InvalidRequest` (nothing sent), and
        ``trio.ClosedResourceError`` when :meth:`close` is called meanwhile; :attr:`sent`
        then says whether the request had left. A caller already cancelled sends nothing.
        """
        self.sent = False
        data = encode_request(method, target, self._authority, headers, body)
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            if self.closed_by_peer():
                self.close()  # e.g. kept alive past the node's idle timeout
            sock = self._socket or await self._connect()
            self.sent = True
            await _send_all(sock, data)
            reader = ResponseReader()
            while (response := reader.feed(await _receive(sock))) is None:
                pass
        except BaseException:
            self.close()
            raise
        if not response.keep_alive:
            self.close()
        return response

    def closed_by_peer(self) -> bool:
        """Whether the connection is open and, with no request out, has something to read:
        the peer has closed it (or sent what it should not), so a request sent on it would be
        lost. One ``poll`` of the socket, which does not block."""
        return self._socket is not None and bool(self._poller.poll(0))

    def close(self) -> None:
        """Close the connection, if open (call it within trio). Safe to call more than once."""
        if self._socket is not None:
            sock, self._socket = self._socket, None
            self._poller.unregister(sock)
            trio.lowlevel.notify_closing(sock)
            sock.close()

    async def _connect(self) -> socket.socket:
        """Connect as ``trio.open_tcp_stream`` does, then take the socket over: the requests
        use it directly, so an exchange costs one wait for the answer and no more."""
        stream = await trio.open_tcp_stream(self.host, self.port)
        sock = socket.socket(fileno=stream.socket.detach())
        sock.setblocking(False)
        self._poller.register(sock, select.POLLIN)
        self._socket = sock
        return sock


async def _send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view):]
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)


async def _receive(sock: socket.socket) -> bytes:
    """The next bytes from ``sock`` (empty at its end)."""
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            return sock.recv(RECEIVE_SIZE)
        except BlockingIOError:
            continue


def _path(key: bytes | str, name: str, quorum: int | None) -> str:
    raw = key.encode() if isinstance(key, str) else key
    path = "/kv/" + quote(raw, safe="")
    return f"{path}?{name}={quorum}" if quorum is not None else path


def _error(status: int, headers: dict[str, str], body: bytes, applied: Applied) -> StoreError:
    """The error for a node's answer ``status``: surely not applied when it is a 4xx or the
    node says so (``X-Kv-Applied: no``), else ``applied``."""
    try:
        message = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        message = body.decode(errors="replace")[:200]
    if headers.get(APPLIED_HEADER) == "no":
        applied = "no"
    if status == 503:
        return Unavailable(message, applied, status)
    if 400 <= status < 500:
        return RequestRejected(f"{status}: {message}", "no", status)
    return StoreError(f"{status}: {message}", applied, status)
