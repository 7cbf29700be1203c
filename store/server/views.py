"""What the HTTP API shows: a node's state as JSON, and its answers to clients as replies.

The JSON views are ``GET /status`` (:func:`status`), ``GET /replica/{key}`` (:func:`replica`)
and ``GET /placement`` (:func:`placement`). A get's or a put's answer becomes a reply by
:func:`read_reply` and :func:`write_reply`, following the conventions of
:mod:`kvcheck.store.http`: siblings as a multipart body, the causal context in a header, a
failed request as ``503`` saying whether it may have been applied, and a write refused at the
sibling cap as ``409``.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from kvcheck.store.datadir import record_json
from kvcheck.store.http import APPLIED_HEADER, CONTEXT_HEADER, encode_siblings
from kvcheck.store.node import Failed, Found, Response, TooManySiblings, Written
from kvcheck.store.placement import Record
from kvcheck.store.ring import natural_key
from kvcheck.store.server.http_connection import Reply, error_reply, json_reply
from kvcheck.store.versions import Version, context_token

if TYPE_CHECKING:
    from kvcheck.store.server.driver import Server


def status(server: Server) -> dict[str, Any]:
    """What ``GET /status`` shows: identity, ring, membership view, config, counters, the HTTP
    connections being served.

    Each member shows its status in the cluster (``joining``, ``normal``, ``leaving``,
    ``left``), its gossip state (``self``, ``alive``, ``suspect``, ``down``; ``gone`` once
    it has left), its heartbeat, how long it has been silent, who suspects it, and whether
    this node's connection to it is up.
    """
    node, me, cluster = server.node, server.me, server.config.cluster
    ownership = node.ring.ownership()
    gossip = {v["node_id"]: v for v in node.membership.status(time.monotonic())}
    return {
        "node_id": me.node_id,
        "actor": server.actor,
        "address": str(me.address),
        "zone": me.zone,
        "peer_auth": server.peer_auth,
        "wall_clock_ms": time.time_ns() // 1_000_000,
        "uptime_s": round(time.monotonic() - server.started_at, 3),
        "cluster": asdict(cluster),
        "ring": {
            "vnodes_per_weight": cluster.vnodes_per_weight,
            "ownership": {n: round(share, 6) for n, share in sorted(ownership.items())},
        },
        "membership": [
            {"node_id": r.node_id, "address": r.address, "zone": r.zone,
             "weight": r.weight, "status": r.status,
             **gossip.get(r.node_id, {"state": "gone"}),
             "connected": r.node_id == me.node_id or server.peers.connected(r.node_id)}
            for r in sorted(node.placement.records.values(),
                            key=lambda r: natural_key(r.node_id))
        ],
        "node": node.status(),
        "http_connections": server.http.open,
        "storage": server.storage.stats(),
    }


def replica(node_id: str, key: bytes, versions: Iterable[Version]) -> dict[str, Any]:
    """What ``GET /replica/{key}`` shows: the ``versions`` node ``node_id`` stores for
    ``key``, as they are on its disk. For tools that compare replicas."""
    return {
        "node_id": node_id,
        "key": key.decode("utf-8", "replace"),
        "versions": [_version_json(v) for v in versions],
    }


def placement(records: Iterable[Record]) -> dict[str, Any]:
    """What ``GET /placement`` shows: every member's record, as a joining node reads them."""
    return {"records": [record_json(r) for r in records]}


def read_reply(response: Response) -> Reply:
    """A get's answer: ``200`` and the value when one version is live, ``300`` and every
    sibling (tombstones included) when there are several, ``404`` when none is live; each
    with the causal context. ``503`` if the get failed."""
    if isinstance(response, Failed):
        return _failed(response)
    assert isinstance(response, Found)
    context = ((CONTEXT_HEADER, context_token(response.context)),)
    live = [v for v in response.versions if v.value is not None]
    if not live:
        return error_reply(404, "not found", context)
    if len(response.versions) == 1:
        return Reply(200, (("content-type", "application/octet-stream"), *context),
                     live[0].value or b"")
    content_type, body = encode_siblings([v.value for v in response.versions])
    return Reply(300, (("content-type", content_type), *context), body)


def write_reply(response: Response) -> Reply:
    """A put's or a delete's answer: ``204`` with the new version's causal context, ``503`` if
    it failed, ``409`` (not applied) if it was refused at the sibling cap."""
    if isinstance(response, Failed):
        return _failed(response)
    if isinstance(response, TooManySiblings):
        return json_reply(409, {
            "error": f"too many siblings: the key has {response.siblings} (siblings_max is "
                     f"{response.siblings_max}) and this write supersedes none of them; read "
                     f"the key and write with its context to resolve them",
            "applied": "no", "siblings": response.siblings,
            "siblings_max": response.siblings_max}, ((APPLIED_HEADER, "no"),))
    assert isinstance(response, Written)
    return Reply(204, ((CONTEXT_HEADER, context_token(response.context)),), b"")


def _failed(response: Failed) -> Reply:
    return json_reply(503, {"error": response.reason, "applied": response.applied},
                      ((APPLIED_HEADER, response.applied),))


def _version_json(version: Version) -> dict[str, Any]:
    out: dict[str, Any] = {
        "dot": [version.dot.actor, version.dot.counter],
        "context": {actor: counter for actor, (counter, _) in sorted(version.context.items())},
        "timestamp_ms": version.timestamp,
        "deleted": version.value is None,
    }
    if version.value is not None:
        try:
            out["value"] = version.value.decode("utf-8")
        except UnicodeDecodeError:
            out["value_base64"] = base64.b64encode(version.value).decode("ascii")
    return out
