"""HTTP routing: what each request asks of the node, and which reply it gets.

==================  ======  =============================================================
resource            method  answer
==================  ======  =============================================================
``/kv/{key}``       GET     the value, or its siblings
                    PUT     stores the body as the key's value
                    DELETE  stores a tombstone
``/replica/{key}``  GET     the versions this node stores for the key, asking no other
``/status``         GET     the node's state
``/ready``          GET     ``200`` when the node can serve, ``503`` and why not yet
``/placement``      GET     every member's record
``/leave``          POST    ``202`` leaving; ``409`` not now (another change is in
                            progress), ``400`` never (left already, or too few would remain)
==================  ======  =============================================================

``HEAD`` is answered like ``GET``. Another method gets ``405`` with an ``Allow`` header, another
path ``404``. A key is the percent-decoded path after the resource's prefix (any bytes, at least
one). On ``/kv/`` the query may override the request's quorum (``r`` for GET, ``w`` for PUT and
DELETE, from 1 to N); :func:`kv_event` checks the query, the body and the causal context, and
turns a valid request into the node's event. The replies' contents come from :mod:`.views`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote_to_bytes

from kvcheck.store.config import MAX_PAIR_BYTES
from kvcheck.store.http import CONTEXT_HEADER
from kvcheck.store.node import ClientGet, ClientPut, Written
from kvcheck.store.server import views
from kvcheck.store.server.http_connection import (
    Reply,
    Request,
    error_reply,
    json_reply,
)
from kvcheck.store.storage import StorageError
from kvcheck.store.versions import BadContext, parse_context_token

if TYPE_CHECKING:
    from kvcheck.store.server.driver import Server

log = logging.getLogger(__package__)

#: A valid ``/kv/`` request as the node's event, once it has a request id.
KvEvent = Callable[[int], ClientGet | ClientPut]


class Routes:
    """The HTTP API of one :class:`~kvcheck.store.server.driver.Server`: the reply to each
    request."""

    def __init__(self, server: Server) -> None:
        self._server = server

    async def reply(self, request: Request) -> Reply:
        """The reply to ``request``. Never raises for what a client sends."""
        path, _, query = request.target.partition(b"?")
        method = "GET" if request.method == "HEAD" else request.method
        if path.startswith(b"/kv/"):
            if method not in ("GET", "PUT", "DELETE"):
                return error_reply(405, f"{method} is not allowed on /kv/ (GET, PUT, DELETE)",
                                   (("allow", "GET, PUT, DELETE"),))
            return await self._kv(method, unquote_to_bytes(path[len(b"/kv/"):]), query, request)
        if path.startswith(b"/replica/"):
            if method != "GET":
                return _only(b"/replica/", "GET")
            key = unquote_to_bytes(path[len(b"/replica/"):])
            if not key:
                return error_reply(400, "the key must not be empty: use /replica/{key}")
            server = self._server
            try:
                versions = server.storage.get(key)
            except StorageError as exc:  # a failing device, or a damaged block
                return error_reply(503, f"this node cannot read the key: {exc}")
            return json_reply(200, views.replica(server.me.node_id, key, versions))
        if path == b"/status":
            if method != "GET":
                return _only(path, "GET")
            return json_reply(200, views.status(self._server))
        if path == b"/ready":
            if method != "GET":
                return _only(path, "GET")
            waiting = self._server.peers.unready()
            if waiting:
                return json_reply(503, {"ready": False, "waiting_for": waiting})
            return json_reply(200, {"ready": True})
        if path == b"/placement":
            if method != "GET":
                return _only(path, "GET")
            return json_reply(200, views.placement(self._server.node.placement.records.values()))
        if path == b"/leave":
            if method != "POST":
                return _only(path, "POST")
            refused = self._server.leave()
            if refused is not None:
                return error_reply(409 if refused.later else 400, refused.reason)
            return json_reply(202, {"status": "leaving"})
        return error_reply(404, f"no such resource: {path.decode(errors='replace')} "
                                "(try /kv/{key} or /status)")

    async def _kv(self, method: str, key: bytes, query: bytes, request: Request) -> Reply:
        cluster = self._server.config.cluster
        event = kv_event(method, key, query, request.headers, request.body, cluster.n)
        if isinstance(event, Reply):
            return event
        timeout = 2 * cluster.request_timeout_ms / 1000 + 1
        response = await self._server.request(event, timeout)
        if isinstance(response, Written) and response.siblings > cluster.siblings_warning:
            log.warning("key %r has %d siblings, more than siblings_warning = %d: its writers "
                        "write without the context of a read (at siblings_max = %d, such "
                        "writes are refused)", key[:100], response.siblings,
                        cluster.siblings_warning, cluster.siblings_max)
        return views.read_reply(response) if method == "GET" else views.write_reply(response)


def kv_event(method: str, key: bytes, query: bytes, headers: Mapping[bytes, bytes],
             body: bytes, n: int) -> KvEvent | Reply:
    """The node event a ``/kv/{key}`` request asks for (``method`` GET, PUT or DELETE), or the
    error reply it gets: ``400`` for an empty key, a bad query, a body on GET or DELETE or a bad
    causal context; ``413`` when key and value reach the size limit. ``n`` is the cluster's N."""
    if not key:
        return error_reply(400, "the key must not be empty: use /kv/{key}")
    try:
        params = parse_qs(query.decode(), keep_blank_values=True)
        quorum = _quorum(params, "r" if method == "GET" else "w", n)
    except (ValueError, UnicodeDecodeError) as exc:
        return error_reply(400, str(exc))
    if method != "PUT" and body:
        return error_reply(400, f"{method} takes no request body")
    if len(key) + len(body) >= MAX_PAIR_BYTES:
        return error_reply(413, f"key and value are {len(key) + len(body)} bytes; they must "
                                f"stay under {MAX_PAIR_BYTES}")
    if method == "GET":
        return partial(ClientGet, key=key, r=quorum)
    try:
        context = parse_context_token(headers.get(CONTEXT_HEADER.encode(), b"").decode("ascii"))
    except (BadContext, UnicodeDecodeError) as exc:
        return error_reply(400, f"bad {CONTEXT_HEADER} header: {exc}")
    value = body if method == "PUT" else None
    return partial(ClientPut, key=key, value=value, context=context, w=quorum)


def _quorum(params: dict[str, list[str]], name: str, n: int) -> int | None:
    """The ``name`` (r or w) override in a parsed query string. Raises ValueError."""
    unknown = sorted(set(params) - {name})
    if unknown:
        raise ValueError(f"unknown query parameter(s): {', '.join(unknown)} (only {name})")
    if name not in params:
        return None
    if len(params[name]) > 1:
        raise ValueError(f"{name} is given more than once")
    text = params[name][0]
    if not text.isdigit() or not 1 <= int(text) <= n:
        raise ValueError(f"{name} must be an integer from 1 to n={n}, not {text!r}")
    return int(text)


def _only(path: bytes, method: str) -> Reply:
    """``405`` for a resource that answers only ``method``."""
    return error_reply(405, f"{path.decode()} only answers {method}", (("allow", method),))
