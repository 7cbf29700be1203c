"""RESP, Redis's wire protocol, over a trio socket.

A command goes out as a RESP array of bulk strings (:func:`encode`); replies are parsed by
hiredis's :class:`hiredis.Reader`, a sans-I/O parser fed with the bytes read. Text is decoded as
UTF-8 (with replacement: kvcheck's values are decimal numbers, and a value that is not one is
shown by the client rather than refused here).

What can go wrong is told apart by when it happened, since that decides whether a write took
effect: :class:`ConnectionFailed` — no connection, nothing sent; :class:`ConnectionLost` — the
connection broke while a command was in flight, which the server may have executed; and
:class:`ErrorReply` — the server answered with an error. Timeouts are the caller's (trio's
cancel scopes); a connection whose call was interrupted by one is closed by :meth:`call`, since
its reply would arrive out of step.
"""

from __future__ import annotations

import os
from typing import Any

import hiredis
import trio

#: Bytes read from the socket at a time.
_CHUNK = 65536
#: What hiredis's reader answers while a reply is incomplete (no reply is this object).
_INCOMPLETE = object()


class ErrorReply(Exception):
    """The server answered with an error; :attr:`code` is its first word (``READONLY``...)."""

    @property
    def code(self) -> str:
        return str(self).split(" ", 1)[0]


class ConnectionFailed(Exception):
    """No connection could be made: the command was not sent."""


class ConnectionLost(Exception):
    """The connection broke, or was closed, while a command was in flight: the server may have
    executed it."""


def _reason(exc: OSError) -> str:
    """The system's reason (``Connection refused``), also from trio's group of attempts."""
    cause = exc.__cause__
    attempts = cause.exceptions if isinstance(cause, BaseExceptionGroup) else (exc,)
    reasons = sorted({os.strerror(a.errno) for a in attempts
                      if isinstance(a, OSError) and a.errno})
    return ", ".join(reasons) or str(exc)


def encode(*args: str | int) -> bytes:
    """The RESP array of bulk strings that sends the command ``args``."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = str(arg).encode()
        parts += [b"$%d\r\n" % len(data), data, b"\r\n"]
    return b"".join(parts)


class Connection:
    """One connection to a Redis server or sentinel, one command at a time."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._reader = hiredis.Reader(replyError=ErrorReply, encoding="utf-8",
                                      errors="replace", notEnoughData=_INCOMPLETE)
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        """Connect to ``host:port``. Raises :class:`ConnectionFailed`."""
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise ConnectionFailed(f"cannot connect to {host}:{port}: {_reason(exc)}") from exc
        return cls(stream)

    async def call(self, *args: str | int) -> Any:
        """Send one command and return its reply (str, int, None or a list of them).

        Raises :class:`ErrorReply` for an error reply (the connection stays usable) and
        :class:`ConnectionLost` if the connection breaks. If anything else interrupts the call
        (a cancelled scope: a timeout), the connection is closed before that propagates.
        """
        if self.closed:
            raise ConnectionLost("the connection is closed")
        try:
            await self._stream.send_all(encode(*args))
            reply = self._reader.gets()
            while reply is _INCOMPLETE:
                data = await self._stream.receive_some(_CHUNK)
                if not data:
                    raise ConnectionLost("the server closed the connection")
                self._reader.feed(data)
                reply = self._reader.gets()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            await self.aclose()
            raise ConnectionLost(f"the connection broke: {exc}") from exc
        except hiredis.ProtocolError as exc:
            await self.aclose()
            raise ConnectionLost(f"the server's reply is not RESP: {exc}") from exc
        except BaseException:
            await self.aclose()
            raise
        if isinstance(reply, ErrorReply):
            raise reply
        return reply

    async def aclose(self) -> None:
        """Close the connection at once (also inside a cancelled scope). Safe to repeat."""
        if not self.closed:
            self.closed = True
            await trio.aclose_forcefully(self._stream)


async def call_once(host: str, port: int, *args: str | int) -> Any:
    """Connect, send one command, close; the reply. Raises as :meth:`Connection.open` and
    :meth:`Connection.call` do."""
    connection = await Connection.open(host, port)
    try:
        return await connection.call(*args)
    finally:
        await connection.aclose()
