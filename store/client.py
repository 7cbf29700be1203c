"""An async (trio) client for the store's HTTP interface, for the harness and for people.

    async with StoreClient("127.0.0.1", 7001) as client:
        await client.put(b"k", b"v")
        read = await client.get(b"k")
        await client.put(b"k", b"w", context=read.context)

One client holds one keep-alive connection and runs one request at a time. Every failure is a
:class:`StoreError` whose ``applied`` says what is known about a write: ``"no"`` (it surely did
not happen) or ``"unknown"`` (it may have: the request is *indeterminate*).
"""

from __future__ import annotations

import json
import select
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import h11
import trio

from kvcheck.store.datadir import RecordJSON
from kvcheck.store.http import APPLIED_HEADER, CONTEXT_HEADER, MultipartError, decode_siblings

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
    ``__cause__`` is) the exception of the socket, of h11 or of the timeout."""


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
    """A connection to one node. Reconnects on the next request after a failure."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._stream: trio.SocketStream | None = None
        self._conn: h11.Connection | None = None
        self._lock = trio.Lock()

    async def __aenter__(self) -> StoreClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await stream.aclose()

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
        applied: Applied = "no" if method == "GET" else "unknown"
        async with self._lock:
            try:
                with trio.fail_after(self.timeout):
                    return await self._exchange(method, target, headers or [], body)
            except trio.TooSlowError as exc:
                await self.aclose()
                raise ConnectionFailed(f"no answer from {self.host}:{self.port} within "
                                       f"{self.timeout} s", applied) from exc
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError,
                    h11.ProtocolError) as exc:
                await self.aclose()
                sent = self._conn is not None and self._conn.our_state is not h11.IDLE
                raise ConnectionFailed(f"connection to {self.host}:{self.port} failed: {exc}",
                                       applied if sent else "no") from exc

    async def _exchange(self, method: str, target: str, headers: list[tuple[str, str]],
                        body: bytes) -> tuple[int, dict[str, str], bytes]:
        if self._stream is not None and _closed_by_node(self._stream):
            await self.aclose()  # e.g. kept alive past the node's idle timeout
        if self._stream is None:
            self._conn = None
            self._stream = await trio.open_tcp_stream(self.host, self.port)
            self._conn = h11.Connection(h11.CLIENT)
        conn = self._conn
        assert conn is not None
        all_headers = [("host", f"{self.host}:{self.port}"),
                       ("content-length", str(len(body))), *headers]
        data = conn.send(h11.Request(method=method, target=target, headers=all_headers))
        data += conn.send(h11.Data(data=body)) if body else b""
        data += conn.send(h11.EndOfMessage())
        await self._stream.send_all(data)
        response = None
        payload = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await self._stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                payload += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise trio.BrokenResourceError("connection closed by the node")
        assert response is not None
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            await self.aclose()
        else:
            conn.start_next_cycle()
        decoded = {k.decode().lower(): v.decode("latin-1") for k, v in response.headers}
        return response.status_code, decoded, bytes(payload)


def _path(key: bytes | str, name: str, quorum: int | None) -> str:
    raw = key.encode() if isinstance(key, str) else key
    path = "/kv/" + quote(raw, safe="")
    return f"{path}?{name}={quorum}" if quorum is not None else path


def _closed_by_node(stream: trio.SocketStream) -> bool:
    """Whether a kept-alive connection, with no request on it, has anything to read: the node
    has closed it (or sent what it should not), so a request sent on it would be lost."""
    poller = select.poll()
    poller.register(stream.socket.fileno(), select.POLLIN)
    return bool(poller.poll(0))


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
