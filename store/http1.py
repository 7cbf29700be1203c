"""HTTP/1.1 on a client's side, without I/O: a request's bytes, and a response read as it comes.

On the path of every operation a test makes, so lean: a request is written here (its head is a
few formatted lines), and a response is read by llhttp, Node.js's parser, through
``httptools``. Every response an HTTP/1.1 server may send is read — the store's own
(:mod:`kvcheck.store.server.http_connection`, which frames every answer with
``content-length``) and Go's ``net/http`` (etcd's gateway, which may answer
``transfer-encoding: chunked``) — with these rules on top of llhttp's:

- informational answers (``1xx`` but ``101``) are skipped, as RFC 9110 asks of every client;
- the head (status line and headers) is at most :data:`MAX_HEAD` bytes;
- a body is framed by ``content-length`` or by ``transfer-encoding: chunked`` alone, none after
  ``204`` and ``304``; trailers are read and dropped.

Anything else — a bare LF, a folded header line, a body that only the end of the connection
ends, another transfer coding, ``content-length`` and ``transfer-encoding`` together — raises
:class:`MalformedResponse` saying what it is: never read as something it is not. The end of the
connection before the response is complete raises :class:`IncompleteResponse`. A request this
module will not write (a method, target or header that HTTP/1.1 does not allow, or not ASCII)
raises :class:`InvalidRequest`: that is the caller's bug, not the peer's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

import httptools

#: The longest response head (status line and headers) read, in bytes.
MAX_HEAD = 64 * 1024

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TARGET = re.compile(r"[\x21-\x7e]+")
_VALUE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")


class InvalidRequest(ValueError):
    """A request :func:`encode_request` will not write; nothing was sent."""


class ResponseError(Exception):
    """No response could be read: the peer's doing, or the connection's."""


class MalformedResponse(ResponseError):
    """The peer sent what is not an HTTP/1.1 response, or one this module does not read (the
    module docstring says which)."""


class IncompleteResponse(ResponseError):
    """The connection ended before the response was complete."""


@dataclass(frozen=True, slots=True)
class Response:
    """A whole response: the ``status``; the ``headers`` by lower-case name, their values
    latin-1 text without surrounding blanks (a repeated one's joined by ", ", as RFC 9110 reads
    them); the ``body``; and ``keep_alive``, whether the connection may carry another request
    (llhttp's rule: an ``HTTP/1.1`` answer without ``connection: close``, or an ``HTTP/1.0`` one
    with ``connection: keep-alive``), and nothing received after it (a client that does not
    pipeline has nothing else to read)."""

    status: int
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


def encode_request(method: str, target: str, authority: str,
                   headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    """The bytes of a request: ``host: authority``, ``content-length`` (always, also 0), then
    ``headers`` in order, then ``body``. Raises :class:`InvalidRequest`."""
    if _TOKEN.fullmatch(method) is None or _TARGET.fullmatch(target) is None:
        raise InvalidRequest(f"not a method and request target: {method!r} {target!r}")
    lines = [f"{method} {target} HTTP/1.1\r\nhost: {authority}\r\n"
             f"content-length: {len(body)}\r\n"]
    for name, value in headers:
        if _TOKEN.fullmatch(name) is None or _VALUE.fullmatch(value) is None:
            raise InvalidRequest(f"not a header: {name!r}: {value!r}")
        lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n")
    try:
        return "".join(lines).encode("ascii") + body
    except UnicodeEncodeError as exc:
        raise InvalidRequest(f"a request head must be ASCII: {exc}") from None


class ResponseReader:
    """Reads one response from the bytes a connection receives: :meth:`feed` them as they come
    until it returns the :class:`Response`. One reader per response."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._head_bytes = 0  # received before the head was complete
        self._headers: dict[str, str] | None = None  # the final head's, once complete
        self._building: dict[str, str] = {}
        self._body: list[bytes] = []
        self._response: Response | None = None
        self._after = False  # something came after the response
        self._refusal: str | None = None

    def feed(self, data: bytes) -> Response | None:
        """Take the next ``data`` received (empty: the connection has ended); return the
        response once it is complete, else None. Raises :class:`MalformedResponse`, or
        :class:`IncompleteResponse` at the end of the connection; the reader is then spent."""
        if not data:
            raise IncompleteResponse(self._progress())
        if self._headers is None:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # after a 101, refused below (on_headers_complete said why)
        except httptools.HttpParserError as exc:
            if self._response is None:
                raise MalformedResponse(self._refusal or f"not an HTTP/1.1 response: {exc}"
                                        ) from None
            self._after = True  # past the response, only that something came counts
        if self._refusal is not None:
            raise MalformedResponse(self._refusal)
        if self._response is None and self._headers is None and self._head_bytes > MAX_HEAD:
            raise MalformedResponse(f"response head longer than {MAX_HEAD} bytes")
        response = self._response
        if response is not None and self._after:
            return replace(response, keep_alive=False)
        return response

    # llhttp's callbacks, called within feed

    def on_message_begin(self) -> None:
        if self._response is not None:
            self._after = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._headers is None:  # not a trailer
            field = name.decode("latin-1").lower()
            text = value.decode("latin-1").strip(" \t")
            before = self._building.get(field)
            self._building[field] = text if before is None else f"{before}, {text}"

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        headers, self._building = self._building, {}
        if status == 101:
            self._refusal = "101 Switching Protocols, which the client never asks for"
        if status < 200 or self._response is not None:
            return  # informational (the response follows), or after the response
        self._headers = headers
        coding = headers.get("transfer-encoding")
        if coding is not None and coding.lower() != "chunked":
            self._refusal = f"transfer-encoding {coding!r}; only 'chunked' is read"
        elif (coding is None and "content-length" not in headers
              and status not in (204, 304)):
            self._refusal = ("no content-length or chunked framing: a body ended only by the "
                             "end of the connection is not read")

    def on_body(self, body: bytes) -> None:
        if self._response is None:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._headers is None or self._response is not None:
            return  # an informational answer ends, or what came after the response
        self._response = Response(self._parser.get_status_code(), self._headers,
                                  b"".join(self._body), self._parser.should_keep_alive())

    def _progress(self) -> str:
        if self._headers is None:
            said = f"{self._head_bytes} bytes of its head" if self._head_bytes else "nothing"
            return f"the connection ended before the response, after {said}"
        received = sum(map(len, self._body))
        if "content-length" not in self._headers:
            return (f"the connection ended in the response's chunked body, after "
                    f"{received} bytes")
        return (f"the connection ended in the response's body, after {received} of "
                f"{self._headers['content-length']} bytes")
