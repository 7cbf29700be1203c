"""The client's HTTP/1.1 without I/O (``store/http1.py``): what it reads, whatever the pieces the
bytes come in; what it refuses, saying what; and the requests it writes, as h11's server reads
them. h11, which the store's server speaks, is the reference for both directions."""

from __future__ import annotations

import itertools

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvcheck.store.http1 import (
    MAX_HEAD,
    IncompleteResponse,
    InvalidRequest,
    MalformedResponse,
    Response,
    ResponseError,
    ResponseReader,
    encode_request,
)


def read(data: bytes, pieces: list[int] | None = None) -> Response:
    """The response in ``data``, fed in pieces cut at the offsets ``pieces``, then (if it is
    not complete by then) the end of the connection."""
    reader = ResponseReader()
    cuts = [0, *sorted(pieces or []), len(data)]
    for start, end in itertools.pairwise(cuts):
        if start < end and (response := reader.feed(data[start:end])) is not None:
            return response
    response = reader.feed(b"")
    raise AssertionError(f"a reader returned {response!r} at the end of the connection")


# -- what the store and Go's net/http send ---------------------------------------------------------

STORE_PUT = (b"HTTP/1.1 204 No Content\r\nx-kv-context: kZOpbjEuZDE2NjAxAc8\r\n"
             b"content-length: 0\r\n\r\n")
STORE_GET = (b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
             b"x-kv-context: kZOpbjEuZDE2NjAxAc8\r\ncontent-length: 1\r\n\r\n7")


@pytest.mark.parametrize(("data", "expected"), [
    (STORE_PUT, Response(204, {"x-kv-context": "kZOpbjEuZDE2NjAxAc8", "content-length": "0"},
                         b"", True)),
    (STORE_GET, Response(200, {"content-type": "application/octet-stream",
                               "x-kv-context": "kZOpbjEuZDE2NjAxAc8", "content-length": "1"},
                         b"7", True)),
    (b"HTTP/1.1 404 Not Found\r\nx-kv-context: \r\ncontent-length: 2\r\n\r\n{}",
     Response(404, {"x-kv-context": "", "content-length": "2"}, b"{}", True)),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nConnection: close\r\n\r\nok",
     Response(200, {"content-length": "2", "connection": "close"}, b"ok", False)),
    (b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\ncontent-length: 0\r\n\r\n",
     Response(200, {"connection": "keep-alive, Close", "content-length": "0"}, b"", False)),
    (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
     Response(200, {"content-length": "2"}, b"ok", False)),
    (b"HTTP/1.1 200\r\nContent-Length:  3 \t\r\n\r\nabc",
     Response(200, {"content-length": "3"}, b"abc", True)),
    (b"HTTP/1.1 200 OK\r\nx-a: 1\r\nX-A: 2\r\ncontent-length: 0\r\n\r\n",
     Response(200, {"x-a": "1, 2", "content-length": "0"}, b"", True)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"4;name=value\r\nab\r\n\r\nA\r\n0123456789\r\n0\r\nx-trailer: t\r\n\r\n",
     Response(200, {"transfer-encoding": "chunked"}, b"ab\r\n0123456789", True)),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n"
     b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
     Response(200, {"content-length": "0"}, b"", True)),
    (b"HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n",
     Response(304, {"content-length": "10"}, b"", True)),
    (b"HTTP/1.1 204 No Content\r\n\r\n", Response(204, {}, b"", True)),
])
def test_a_response_is_read_as_sent(data: bytes, expected: Response) -> None:
    assert read(data) == expected


def test_a_body_longer_than_a_head_may_be_reads_in_one_piece_with_its_head() -> None:
    body = bytes(range(256)) * (MAX_HEAD // 64)
    data = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body
    assert read(data).body == body


def test_bytes_after_the_response_leave_the_connection_unusable() -> None:
    response = read(STORE_PUT + b"HTTP/1.1 200 OK\r\n")
    assert response.status == 204 and not response.keep_alive


# -- any response, in any pieces -----------------------------------------------------------------

NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True).filter(
    lambda name: name.lower() not in ("content-length", "transfer-encoding", "connection"))
VALUES = st.from_regex(r"[!-~]([ !-~]{0,30}[!-~])?", fullmatch=True)


@st.composite
def responses(draw: st.DrawFn) -> tuple[bytes, Response]:
    """A response h11 writes as a server would (framed by content-length, or chunked in
    pieces of any sizes), and what it says."""
    status = draw(st.integers(200, 599).filter(lambda s: s not in (204, 304)))
    headers = draw(st.lists(st.tuples(NAMES, VALUES), max_size=6,
                            unique_by=lambda h: h[0].lower()))
    body = draw(st.binary(max_size=300))
    chunked = draw(st.booleans())
    framing = [("transfer-encoding", "chunked")] if chunked else [
        ("content-length", str(len(body)))]
    server = h11.Connection(h11.SERVER)
    server.receive_data(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    server.next_event()
    server.next_event()
    data = server.send(h11.Response(status_code=status, headers=headers + framing)) or b""
    if chunked:
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
        for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True):
            if start < end:
                data += server.send(h11.Data(data=body[start:end])) or b""
    elif body:
        data += server.send(h11.Data(data=body)) or b""
    data += server.send(h11.EndOfMessage()) or b""
    expected = {name.lower(): value for name, value in headers + framing}
    return data, Response(status, expected, body, True)


@given(responses(), st.data())
def test_any_split_of_a_response_reads_as_the_whole(response: tuple[bytes, Response],
                                                    data: st.DataObject) -> None:
    sent, expected = response
    cuts = data.draw(st.lists(st.integers(1, len(sent) - 1), max_size=8))
    assert read(sent) == expected
    assert read(sent, cuts) == expected


@given(responses(), st.data())
def test_a_connection_that_ends_within_a_response_is_an_incomplete_response(
        response: tuple[bytes, Response], data: st.DataObject) -> None:
    sent, _ = response
    end = data.draw(st.integers(0, len(sent) - 1))
    reader = ResponseReader()
    assert not end or reader.feed(sent[:end]) is None
    with pytest.raises(IncompleteResponse, match="the connection ended"):
        reader.feed(b"")


@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=4))
def test_any_bytes_make_a_response_or_a_response_error(data: bytes, cuts: list[int]) -> None:
    try:
        assert isinstance(read(data, [cut for cut in cuts if cut < len(data)]), Response)
    except ResponseError:
        return


# -- what it refuses -------------------------------------------------------------------------

#: What llhttp refuses, which then says what is wrong.
MALFORMED = "not an HTTP/1.1 response"


@pytest.mark.parametrize(("data", "message"), [
    (b"HTTP/2 200 OK\r\ncontent-length: 0\r\n\r\n", MALFORMED),
    (b"this is not HTTP\r\n\r\n", MALFORMED),
    (b"HTTP/1.1 20 OK\r\n\r\n", MALFORMED),
    (b"HTTP/1.1 200 OK\r\ncontent-length 0\r\n\r\n", MALFORMED),
    (b"HTTP/1.1 200 OK\r\nx-a: 1\r\n  folded\r\ncontent-length: 0\r\n\r\n", MALFORMED),
    (b"HTTP/1.1 200 OK\r\nx-a\x00: 1\r\n\r\n", MALFORMED),
    (b"HTTP/1.1 200 OK\r\nx-a: bell\x07\r\ncontent-length: 0\r\n\r\n", MALFORMED),
    (b"HTTP/1.1 200 OK\nx-a: 1\ncontent-length: 0\r\n\r\n", MALFORMED),
    (b"HTTP/1.1 200 OK\r\n\r\nbody until the end", "no content-length or chunked framing"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n",
     MALFORMED),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
     "transfer-encoding 'gzip, chunked'"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", "only 'chunked' is read"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nContent-Length: 3\r\n\r\nabc", MALFORMED),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc", MALFORMED),
    (b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", MALFORMED),
    (b"HTTP/1.1 200 OK\r\ncontent-length: \xb2\r\n\r\n", MALFORMED),
    (b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n", "101 Switching Protocols"),
    (b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n",
     "101 Switching Protocols"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", MALFORMED),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabc\r\n", MALFORMED),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nnot a trailer\r\n\r\n",
     MALFORMED),
    (b"HTTP/1.1 200 OK\r\nx-a: " + b"a" * MAX_HEAD, "response head longer than"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + b"1" * 100, MALFORMED),
])
def test_what_it_does_not_read_is_refused_by_name(data: bytes, message: str) -> None:
    with pytest.raises(MalformedResponse, match=message):
        read(data)


@pytest.mark.parametrize(("data", "message"), [
    (b"", "before the response, after nothing"),
    (b"HTTP/1.1 200 OK\r\n", "before the response, after 17 bytes of its head"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nabc", "body, after 3 of 5 bytes"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n",
     "chunked body, after 2 bytes"),
])
def test_an_incomplete_response_says_how_far_it_got(data: bytes, message: str) -> None:
    with pytest.raises(IncompleteResponse, match=message):
        read(data)


# -- requests ----------------------------------------------------------------------------------

def test_a_request_carries_host_and_length_then_the_headers_in_order() -> None:
    assert encode_request("PUT", "/kv/a%2Fb?w=2", "10.0.0.2:7000",
                          [("x-kv-context", "abc="), ("x-b", "")], b"42") == (
        b"PUT /kv/a%2Fb?w=2 HTTP/1.1\r\nhost: 10.0.0.2:7000\r\ncontent-length: 2\r\n"
        b"x-kv-context: abc=\r\nx-b: \r\n\r\n42")


@given(st.sampled_from(["GET", "PUT", "DELETE", "POST"]),
       st.from_regex(r"/[!-~]{0,40}", fullmatch=True),
       st.lists(st.tuples(NAMES, VALUES), max_size=5, unique_by=lambda h: h[0].lower()),
       st.binary(max_size=100))
def test_a_request_reads_back_as_written(method: str, target: str,
                                         headers: list[tuple[str, str]], body: bytes) -> None:
    server = h11.Connection(h11.SERVER)
    server.receive_data(encode_request(method, target, "127.0.0.1:7000", headers, body))
    request = server.next_event()
    assert isinstance(request, h11.Request)
    assert (request.method.decode(), request.target.decode()) == (method, target)
    assert [(n.decode(), v.decode()) for n, v in request.headers] == [
        ("host", "127.0.0.1:7000"), ("content-length", str(len(body))),
        *((name.lower(), value) for name, value in headers)]
    received = b""
    while not isinstance(event := server.next_event(), h11.EndOfMessage):
        assert isinstance(event, h11.Data)
        received += event.data
    assert received == body


@pytest.mark.parametrize(("method", "target", "headers"), [
    ("GET", "/kv/a b", []),
    ("GET", "", []),
    ("G T", "/", []),
    ("PUT", "/kv/k", [("x-kv-context", "a\r\nx-injected: 1")]),
    ("PUT", "/kv/k", [("x kv", "a")]),
    ("PUT", "/kv/k", [("x-kv-context", "café")]),
    ("GET", "/kv/é", []),
])
def test_a_request_http_does_not_allow_is_refused(method: str, target: str,
                                                  headers: list[tuple[str, str]]) -> None:
    with pytest.raises(InvalidRequest):
        encode_request(method, target, "127.0.0.1:7000", headers, b"")
