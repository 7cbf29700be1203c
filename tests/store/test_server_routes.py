"""HTTP routing without sockets: from a request to the node's event, from an answer to a reply."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from kvcheck.store.config import MAX_PAIR_BYTES, Address, ClusterConfig, NodeConfig, NodeSpec
from kvcheck.store.http import APPLIED_HEADER, CONTEXT_HEADER, decode_siblings
from kvcheck.store.node import ClientGet, ClientPut, Failed, Found, TooManySiblings, Written
from kvcheck.store.server import Server, placement_for
from kvcheck.store.server.http_connection import Reply, Request
from kvcheck.store.server.routes import KvEvent, kv_event
from kvcheck.store.server.views import read_reply, write_reply
from kvcheck.store.versions import Dot, Version, context_token

CONTEXT = {"n1.a": (2, 0)}


def kv(method: str, key: bytes = b"k", query: bytes = b"", body: bytes = b"",
       headers: dict[bytes, bytes] | None = None) -> KvEvent | Reply:
    return kv_event(method, key, query, headers or {}, body, n=3)


def event(request: int, method: str, **parts: Any) -> ClientGet | ClientPut:
    """The event a valid request becomes, given its request id."""
    event_for = kv(method, **parts)
    assert not isinstance(event_for, Reply), event_for
    return event_for(request)


def error_of(reply: KvEvent | Reply) -> tuple[int, str]:
    assert isinstance(reply, Reply), reply
    return reply.status, json.loads(reply.body)["error"]


def test_a_get_becomes_a_client_get_with_its_read_quorum() -> None:
    assert event(7, "GET", query=b"r=2") == ClientGet(7, b"k", 2)
    assert event(8, "GET") == ClientGet(8, b"k", None)


def test_a_put_carries_value_context_and_write_quorum_and_a_delete_a_tombstone() -> None:
    headers = {CONTEXT_HEADER.encode(): context_token(CONTEXT).encode()}
    assert event(1, "PUT", query=b"w=3", body=b"v", headers=headers) == ClientPut(
        1, b"k", b"v", CONTEXT, 3)
    assert event(2, "DELETE", headers=headers) == ClientPut(2, b"k", None, CONTEXT, None)
    assert event(3, "PUT", body=b"") == ClientPut(3, b"k", b"", {}, None)


@pytest.mark.parametrize(("method", "query", "body", "status", "error"), [
    ("GET", b"r=4", b"", 400, "r must be an integer from 1 to n=3, not '4'"),
    ("PUT", b"w=0", b"v", 400, "w must be an integer from 1 to n=3, not '0'"),
    ("PUT", b"w=", b"v", 400, "w must be an integer from 1 to n=3, not ''"),
    ("PUT", b"w=1&w=2", b"v", 400, "w is given more than once"),
    ("PUT", b"r=1", b"v", 400, "unknown query parameter(s): r (only w)"),
    ("GET", b"colour=red&r=1", b"", 400, "unknown query parameter(s): colour (only r)"),
    ("GET", b"", b"v", 400, "GET takes no request body"),
    ("DELETE", b"", b"v", 400, "DELETE takes no request body"),
    ("PUT", b"", b"v" * MAX_PAIR_BYTES, 413,
     f"key and value are {MAX_PAIR_BYTES + 1} bytes; they must stay under {MAX_PAIR_BYTES}"),
])
def test_a_bad_kv_request_gets_its_error_instead_of_an_event(
    method: str, query: bytes, body: bytes, status: int, error: str,
) -> None:
    assert error_of(kv(method, query=query, body=body)) == (status, error)


def test_an_empty_key_or_a_bad_context_is_refused() -> None:
    assert error_of(kv("GET", key=b"")) == (400, "the key must not be empty: use /kv/{key}")
    status, error = error_of(kv("PUT", body=b"v", headers={CONTEXT_HEADER.encode(): b"!!"}))
    assert status == 400 and error.startswith(f"bad {CONTEXT_HEADER} header: ")
    status, error = error_of(kv("PUT", body=b"v", headers={CONTEXT_HEADER.encode(): b"\xff"}))
    assert status == 400 and error.startswith(f"bad {CONTEXT_HEADER} header: ")


def version(value: bytes | None, counter: int = 1) -> Version:
    return Version(Dot("n1.a", counter), {}, value, 0)


def test_a_read_answer_becomes_value_siblings_or_not_found_with_its_context() -> None:
    one = read_reply(Found((version(b"v"),), CONTEXT))
    assert one == Reply(200, (("content-type", "application/octet-stream"),
                              (CONTEXT_HEADER, context_token(CONTEXT))), b"v")
    siblings = read_reply(Found((version(b"a", 1), version(None, 2)), CONTEXT))
    headers = dict(siblings.headers)
    assert siblings.status == 300 and headers[CONTEXT_HEADER] == context_token(CONTEXT)
    assert decode_siblings(headers["content-type"], siblings.body) == [b"a", None]
    gone = read_reply(Found((version(None),), CONTEXT))
    assert (gone.status, dict(gone.headers)[CONTEXT_HEADER]) == (404, context_token(CONTEXT))
    assert json.loads(gone.body) == {"error": "not found"}


def test_a_write_answer_becomes_204_with_its_context_and_a_failure_503_saying_if_applied() -> None:
    assert write_reply(Written(CONTEXT)) == Reply(
        204, ((CONTEXT_HEADER, context_token(CONTEXT)),), b"")
    for reply in (write_reply(Failed("too few", "unknown")), read_reply(Failed("too few", "no"))):
        applied = json.loads(reply.body)["applied"]
        assert reply.status == 503 and dict(reply.headers)[APPLIED_HEADER] == applied
    assert json.loads(write_reply(Failed("too few", "unknown")).body) == {
        "error": "too few", "applied": "unknown"}


def test_a_write_refused_at_the_sibling_cap_is_a_409_saying_how_to_resolve_it() -> None:
    reply = write_reply(TooManySiblings(100, 100))
    assert reply.status == 409 and dict(reply.headers)[APPLIED_HEADER] == "no"
    document = json.loads(reply.body)
    assert (document["applied"], document["siblings"], document["siblings_max"]) == (
        "no", 100, 100)
    assert "read the key and write with its context" in document["error"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A one-node server that is not running: its routes work, nothing listens."""
    me = NodeSpec("n1", Address("127.0.0.1", 1))
    config = NodeConfig(me, (), tmp_path, ClusterConfig(n=1, w=1, r=1, fsync="never"))
    server = Server(config, trio.run(placement_for, config))
    yield server
    server.hints.close()
    server.storage.close()


def ask(server: Server, method: str, target: bytes, body: bytes = b"",
        headers: dict[bytes, bytes] | None = None) -> Reply:
    request = Request(method, target, headers or {}, body)
    return trio.run(server.routes.reply, request)


def test_routes_write_and_read_a_key_through_the_node(server: Server) -> None:
    written = ask(server, "PUT", b"/kv/a%2Fb", b"v")
    assert written.status == 204
    read = ask(server, "GET", b"/kv/a%2Fb?r=1")
    assert (read.status, read.body) == (200, b"v")
    assert dict(read.headers)[CONTEXT_HEADER] == dict(written.headers)[CONTEXT_HEADER]
    assert ask(server, "HEAD", b"/kv/a%2Fb").status == 200  # the body is left out when sent
    replica = json.loads(ask(server, "GET", b"/replica/a%2Fb").body)
    assert replica["key"] == "a/b" and [v["value"] for v in replica["versions"]] == ["v"]


def test_routes_answer_the_views_and_refuse_what_is_not_there(server: Server) -> None:
    assert json.loads(ask(server, "GET", b"/status").body)["node_id"] == "n1"
    records = json.loads(ask(server, "GET", b"/placement").body)["records"]
    assert [r["node_id"] for r in records] == ["n1"]
    assert error_of(ask(server, "POST", b"/leave")) == (
        400, "leaving would leave 0 members, fewer than n=1")
    assert error_of(ask(server, "GET", b"/nowhere")) == (
        404, "no such resource: /nowhere (try /kv/{key} or /status)")
    assert error_of(ask(server, "GET", b"/replica/")) == (
        400, "the key must not be empty: use /replica/{key}")


@pytest.mark.parametrize(("method", "target", "allow"), [
    ("POST", b"/kv/k", "GET, PUT, DELETE"),
    ("PUT", b"/replica/k", "GET"),
    ("DELETE", b"/status", "GET"),
    ("POST", b"/placement", "GET"),
    ("GET", b"/leave", "POST"),
])
def test_a_method_a_resource_does_not_answer_gets_405_naming_those_it_does(
    server: Server, method: str, target: bytes, allow: str,
) -> None:
    reply = ask(server, method, target)
    assert reply.status == 405 and dict(reply.headers)["allow"] == allow
