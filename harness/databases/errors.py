"""Client errors in plain words: the ``error`` of a history line, and its raw ``error_detail``.

A :class:`~kvcheck.harness.databases.interface.Fail` or
:class:`~kvcheck.harness.databases.interface.Info` says why in two parts. ``error`` is a short
sentence in kvcheck's own words, the same for the same cause whatever the library, the
connection or the address, so that errors can be counted and grouped: no addresses, ports or
object ids, a number only where it says something (seconds waited, replicas that answered).
``detail`` is the error as raised, with what caused it, for debugging.

:func:`describe_error` words what the transports raise — the operating system's socket
errors, trio's streams, h11, httpx, hiredis, the store's client
(:mod:`kvcheck.store.http1`) — looking through the whole chain of causes (``raise ... from``,
the context of an ``except`` block, exception groups) for the most precise account; a
database's own error answers (etcd's, Redis's, the reference store's quorums) are worded by its
adapter.

========================================  =========================================================
words                                     when (the first row that anything in the chain matches)
========================================  =========================================================
``connection refused``                    ``ECONNREFUSED`` (``ConnectionRefusedError``), also in
                                          trio's group of connection attempts
``connection reset``                      ``ECONNRESET``, ``ECONNABORTED``
``connection closed before the reply``    ``EPIPE``
``host unreachable``                      ``EHOSTUNREACH`` ("no route to host"), ``EHOSTDOWN``
``network unreachable``                   ``ENETUNREACH``
``connection timed out``                  ``ETIMEDOUT``: the system gave up on the peer
``could not resolve the host``            ``socket.gaierror``
``connection closed before the reply``    the peer closed the connection before its reply was
                                          complete: h11's ``ConnectionClosed`` or "peer closed
                                          connection", httpx's "Server disconnected", the store
                                          client's ``IncompleteResponse``
``timed out connecting [after N s]``      ``httpx.ConnectTimeout``, ``httpx.PoolTimeout``
``timed out [after N s]``                 ``trio.TooSlowError``, ``TimeoutError``, httpx's read and
                                          write timeouts
``malformed reply``                       the peer broke the protocol: ``h11.RemoteProtocolError``,
                                          ``httpx.RemoteProtocolError``, ``httpx.DecodingError``,
                                          ``hiredis.ProtocolError``, the store client's
                                          ``MalformedResponse``
``protocol error in the client``          ``h11.LocalProtocolError``, ``httpx.LocalProtocolError``,
                                          the store client's ``InvalidRequest``
``could not connect``                     ``httpx.ConnectError`` of another cause
the system's words, in lower case         an ``OSError`` of another errno ("cannot assign requested
                                          address")
``connection closed by the client``       ``trio.ClosedResourceError``: this side had closed it
``connection lost``                       ``trio.BrokenResourceError``, any other
                                          ``httpx.TransportError`` or ``OSError``
``unexpected error (<class>)``            anything else
========================================  =========================================================
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Iterator

import h11
import hiredis
import httpx
import trio

from kvcheck.store.http1 import IncompleteResponse, InvalidRequest, MalformedResponse

CLOSED_BEFORE_REPLY = "connection closed before the reply"
#: The words of a timeout, to which :func:`describe_error` adds the seconds when it knows them.
_TIMEOUTS = ("timed out", "timed out connecting")
#: The longest ``detail`` kept, in characters (a reply quoted in an exception can be long).
DETAIL_LIMIT = 1000

_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ECONNABORTED: "connection reset",
    errno.EPIPE: CLOSED_BEFORE_REPLY,
    errno.EHOSTUNREACH: "host unreachable",
    errno.EHOSTDOWN: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "connection timed out",
}
#: How h11 (and httpx, quoting httpcore) say that the peer closed the connection mid-exchange.
_CLOSED_TEXTS = ("event type ConnectionClosed", "peer closed connection",
                 "Server disconnected")


def _known_os_error(e: BaseException) -> str | None:
    if isinstance(e, socket.gaierror):
        return "could not resolve the host"
    if isinstance(e, OSError) and e.errno is not None:
        return _ERRNO_WORDS.get(e.errno)
    return None


def _closed_by_peer(e: BaseException) -> str | None:
    worded = isinstance(e, h11.RemoteProtocolError | httpx.RemoteProtocolError) and any(
        text in str(e) for text in _CLOSED_TEXTS)
    return CLOSED_BEFORE_REPLY if worded or isinstance(e, IncompleteResponse) else None


def _connect_timeout(e: BaseException) -> str | None:
    return "timed out connecting" if isinstance(e, httpx.ConnectTimeout | httpx.PoolTimeout) \
        else None


def _timeout(e: BaseException) -> str | None:
    timed_out = isinstance(e, trio.TooSlowError | TimeoutError | httpx.TimeoutException)
    return "timed out" if timed_out else None


def _malformed(e: BaseException) -> str | None:
    malformed = isinstance(e, h11.RemoteProtocolError | httpx.RemoteProtocolError
                           | httpx.DecodingError | hiredis.ProtocolError | MalformedResponse)
    return "malformed reply" if malformed else None


def _misused(e: BaseException) -> str | None:
    misused = isinstance(e, h11.LocalProtocolError | httpx.LocalProtocolError | InvalidRequest)
    return "protocol error in the client" if misused else None


def _could_not_connect(e: BaseException) -> str | None:
    return "could not connect" if isinstance(e, httpx.ConnectError) else None


def _other_os_error(e: BaseException) -> str | None:
    if isinstance(e, OSError) and e.errno is not None and e.errno > 0:
        return os.strerror(e.errno).lower()
    return None


def _closed_here(e: BaseException) -> str | None:
    return "connection closed by the client" if isinstance(e, trio.ClosedResourceError) \
        else None


def _lost(e: BaseException) -> str | None:
    lost = isinstance(e, trio.BrokenResourceError | httpx.TransportError | OSError)
    return "connection lost" if lost else None


#: The rows of the module docstring's table, in its order.
_RULES: tuple[Callable[[BaseException], str | None], ...] = (
    _known_os_error, _closed_by_peer, _connect_timeout, _timeout, _malformed, _misused,
    _could_not_connect, _other_os_error, _closed_here, _lost)


def describe_error(error: BaseException, timeout: float | None = None) -> tuple[str, str]:
    """``error`` as ``(words, detail)``: the plain words of the module docstring's table and
    :func:`error_detail`. ``timeout``, the seconds the client gave the call, is added to the
    words of a timeout ("timed out after 5 s"). Never raises."""
    chain = list(_chain(error))
    for rule in _RULES:
        for e in chain:
            words = rule(e)
            if words is not None:
                if words in _TIMEOUTS and timeout is not None:
                    words = f"{words} after {timeout:g} s"
                return words, error_detail(error)
    return f"unexpected error ({type(error).__name__})", error_detail(error)


def error_detail(error: BaseException) -> str:
    """``error`` and what caused it, each as ``Type: message``, joined by `` <- ``; a message
    already said by the one before is left out, and so are exception groups (their members are
    kept). At most :data:`DETAIL_LIMIT` characters."""
    parts: list[str] = []
    said = ""
    for e in _chain(error):
        text = str(e)
        if isinstance(e, BaseExceptionGroup) or (text and parts and text in said):
            continue
        parts.append(f"{_name(e)}: {text}" if text else _name(e))
        said = text
    detail = " <- ".join(parts)
    return detail if len(detail) <= DETAIL_LIMIT else detail[:DETAIL_LIMIT - 1] + "…"


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error``, then, depth first, the members of a group, the cause (``raise ... from``)
    and the context of each — also a context that ``from None`` hid from the traceback, as
    httpcore hides the socket's error under its own. Each exception once."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        e = pending.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        following = [*(e.exceptions if isinstance(e, BaseExceptionGroup) else ()),
                     *(c for c in (e.__cause__, e.__context__) if c is not None)]
        pending.extend(reversed(following))


def _name(e: BaseException) -> str:
    """The class of ``e``: bare for Python's own and kvcheck's, else with its package
    (``httpx.ConnectError``, ``trio.TooSlowError``)."""
    module = type(e).__module__.split(".")[0]
    name = type(e).__qualname__
    return name if module in ("builtins", "kvcheck") else f"{module}.{name}"
