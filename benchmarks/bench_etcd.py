"""etcd's side of the store benchmark: 3 local members, started as kvcheck's adapter starts
them, and clients of its v3 HTTP/JSON gateway.

The members are the etcd adapter's (:mod:`kvcheck.harness.databases.etcd`): its
:meth:`~kvcheck.harness.databases.etcd.Etcd.processes` gives each member's command, its
``ready`` and ``settled`` say when the cluster serves. Member ``nI`` listens on ``127.A.B.I``
(ports 2379 and 2380, as in the loopback test clusters; ``A.B`` drawn per run), its data in
``<root>/<node>/data``.

Durability: etcd syncs its write-ahead log (fdatasync) before a Raft entry counts as persisted,
and acknowledges a put once the entry is committed — persisted on a majority — and applied;
entries that arrive together share one sync (group commit). 3.4 has no flag to turn that off
(3.5 added ``--unsafe-no-fsync``): :func:`fsync_flags` reads ``etcd --help`` to check it on the
machine, and :func:`wal_fsyncs` counts the syncs each member made (its Prometheus metric
``etcd_disk_wal_fsync_duration_seconds_count``).

Clients: ``POST /v3/kv/range`` (linearizable, or ``"serializable": true``) and
``POST /v3/kv/put``, keys and values base64 in proto3 JSON. The default client library is
:class:`Http1Gateway`, a small client of the gateway on the reference store's own HTTP/1.1
connection (:class:`~kvcheck.store.client.HttpConnection` over trio), so that neither side pays
more for its client; ``httpx`` drives the etcd adapter's own
:class:`~kvcheck.harness.databases.etcd_client.Gateway` instead (httpx over anyio), to measure
what that library costs. The gateway runs inside each member and passes every request on as a
gRPC call to the member itself: the members' CPU includes that translation, which a gRPC client
would not cost them.
"""

from __future__ import annotations

import base64
import json
import os
import random
import secrets
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version as package_version
from typing import Any, Literal, Protocol, Self

import httpx
import trio
from bench_processes import LocalProcesses

from kvcheck.harness.databases.etcd_client import CLIENT_PORT, EtcdError, Gateway
from kvcheck.harness.databases.interface import Database
from kvcheck.harness.spec import TestSpec
from kvcheck.store.client import HttpConnection
from kvcheck.store.http1 import InvalidRequest, ResponseError

#: How long the cluster may take to start before the benchmark gives up.
READY_LIMIT = 30.0
#: How long a client waits for each request.
TIMEOUT = 5.0
#: The Prometheus metric that counts a member's write-ahead-log syncs.
WAL_FSYNCS = "etcd_disk_wal_fsync_duration_seconds_count"

Library = Literal["http1", "httpx"]


class BenchCluster:
    """The etcd adapter's view of the benchmark's members (the ``Cluster`` protocol of
    :mod:`kvcheck.harness.databases.interface`): 3 members, none down."""

    def __init__(self, reads: str) -> None:
        self.spec = TestSpec(name="store-bench", db="etcd", nodes=3, nemesis=(),
                             db_options=(("reads", reads),))
        self.options: Mapping[str, str] = dict(self.spec.db_options)
        self.run_id = f"store-bench-{os.getpid()}-{random.randrange(1 << 32):08x}"
        self.secret = secrets.token_hex(32)
        self.database: Database = self.spec.database
        subnet = f"127.{random.randrange(1, 255)}.{random.randrange(256)}"
        self._hosts = {node: f"{subnet}.{i}" for i, node in enumerate(self.members, 1)}

    @property
    def members(self) -> Sequence[str]:
        return self.spec.node_ids

    @property
    def down(self) -> frozenset[str]:
        return frozenset()

    def host(self, node: str) -> str:
        return self._hosts[node]


def start_cluster(servers: LocalProcesses, reads: str) -> BenchCluster:
    """Start the members under ``servers``, as the adapter says; return the cluster."""
    cluster = BenchCluster(reads)
    database = cluster.database
    for node in cluster.members:
        data = servers.root / node / "data"
        data.mkdir(parents=True)
        for process in database.processes(node, cluster):
            servers.start(node, [arg.replace(database.data_dir, str(data))
                                 for arg in process.argv], process.environment)
    return cluster


async def wait_ready(cluster: BenchCluster, servers: LocalProcesses) -> None:
    """Return once every member is ready and they agree on a leader (the adapter's
    ``ready`` and ``settled``). Raises ``RuntimeError`` with the logs' ends if a member
    exits, or after :data:`READY_LIMIT`."""
    database = cluster.database
    with trio.move_on_after(READY_LIMIT):
        while not (all([await database.ready(node, cluster) for node in cluster.members])
                   and await database.settled(cluster)):
            servers.check_running()
            await trio.sleep(0.1)  # polling a condition under a deadline
        return
    raise RuntimeError(f"etcd was not ready after {READY_LIMIT:.0f} s:\n"
                       + "\n".join(servers.tail(node) for node in cluster.members))


# -- durability ----------------------------------------------------------------------------------


def fsync_flags() -> list[str]:
    """The lines of ``etcd --help`` that mention fsync: none in 3.4, whose write-ahead log is
    always synced (3.5 lists ``--unsafe-no-fsync``)."""
    shown = subprocess.run(["etcd", "--help"], capture_output=True, text=True)
    return [line.strip() for line in (shown.stdout + shown.stderr).splitlines()
            if "fsync" in line.lower()]


async def wal_fsyncs(cluster: BenchCluster) -> list[float]:
    """How many times each member has synced its write-ahead log (``GET /metrics``)."""
    counts = []
    for node in cluster.members:
        async with Http1Gateway(cluster.host(node)) as gateway:
            metrics = await gateway.text("/metrics")
        counts.append(next(float(line.split()[1]) for line in metrics.splitlines()
                           if line.startswith(WAL_FSYNCS + " ")))
    return counts


async def server_version(cluster: BenchCluster) -> str:
    """The version the first member reports (``GET /version``)."""
    async with Http1Gateway(cluster.host(cluster.members[0])) as gateway:
        found: str = json.loads(await gateway.text("/version"))["etcdserver"]
    return found


def describe(version: str, reads: str, library: Library,
             flags: list[str]) -> dict[str, object]:
    """What the report says of this side: the server, its durability, the client."""
    client_library = (
        f"kvcheck {package_version('kvcheck')}'s HttpConnection (httptools "
        f"{package_version('httptools')}) + trio {trio.__version__} (benchmarks/bench_etcd.py's "
        "Http1Gateway)" if library == "http1" else
        f"httpx {httpx.__version__} over anyio (kvcheck's etcd adapter's Gateway)")
    return {
        "server": f"etcd {version}",
        "configuration": {"members": 3, "started_as": "kvcheck's etcd adapter starts them "
                          "(Raft defaults: 100 ms heartbeat, 1 s election timeout)"},
        "durability": {
            "fsync": "always",
            "policy": "each member fdatasyncs its write-ahead log before an entry counts as "
                      "persisted (group commit); a put is acknowledged once committed on a "
                      "majority (2 of 3) and applied",
            "can_be_turned_off": bool(flags),
            "etcd_help_lines_mentioning_fsync": flags,
        },
        "client": {
            "protocol": "HTTP/1.1 JSON gateway (grpc-gateway) + " + library
                        + ", etcd v3 API (POST /v3/kv/range, /v3/kv/put)",
            "library": client_library + ", one keep-alive connection per client",
            "reads": reads + ("" if reads == "serializable" else
                              " (the member confirms with the leader, ReadIndex)"),
            "note": "the gateway inside each member passes every request on as a gRPC call to "
                    "the member itself: the members' CPU includes that translation",
        },
    }


# -- clients -------------------------------------------------------------------------------------


class GatewayError(Exception):
    """A request to the gateway that did not succeed: an error answer, or no answer."""


class Http1Gateway:
    """One member's JSON gateway over one keep-alive HTTP/1.1 connection, the reference store's
    client's own (:class:`~kvcheck.store.client.HttpConnection`), opened on the first request
    and again after a failure. Each request has ``timeout`` seconds in all; one that fails
    raises :class:`GatewayError` (and the connection closes)."""

    def __init__(self, host: str, port: int = CLIENT_PORT, timeout: float = TIMEOUT) -> None:
        self.timeout = timeout
        self._connection = HttpConnection(host, port)

    async def call(self, method: str, request: dict[str, Any]) -> dict[str, Any]:
        """The answer of ``POST /v3/<method>`` to ``request``."""
        status, body = await self._request("POST", f"/v3/{method}", json.dumps(request).encode())
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if status != 200 or not isinstance(answer, dict) or "error" in answer:
            message = (answer.get("error") if isinstance(answer, dict)
                       else body[:100].decode(errors="replace"))
            raise GatewayError(f"HTTP {status}: {message}")
        return answer

    async def text(self, path: str) -> str:
        """The body of ``GET <path>`` (``/metrics``, ``/version``)."""
        status, body = await self._request("GET", path, b"")
        if status != 200:
            raise GatewayError(f"HTTP {status} for {path}")
        return body.decode()

    async def aclose(self) -> None:
        """Close the connection, if open. Safe to call more than once."""
        self._connection.close()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _request(self, method: str, target: str, body: bytes) -> tuple[int, bytes]:
        headers = [("content-type", "application/json")] if body else []
        try:
            with trio.move_on_after(self.timeout):
                response = await self._connection.request(method, target, headers, body)
                return response.status, response.body
        except (OSError, trio.ClosedResourceError, ResponseError, InvalidRequest) as error:
            raise GatewayError(f"{type(error).__name__}: {error}") from None
        raise GatewayError(f"TooSlowError: no answer within {self.timeout:g} s")


class _Gateway(Protocol):
    async def call(self, method: str, request: dict[str, Any]) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class EtcdClients:
    """:class:`bench_load.Clients` of the members at ``hosts``, through ``library``."""

    hosts: tuple[str, ...]
    serializable: bool
    library: Library

    @property
    def nodes(self) -> int:
        return len(self.hosts)

    @property
    def failures(self) -> tuple[type[Exception], ...]:
        return (GatewayError, EtcdError, httpx.HTTPError)

    def connect(self, node: int) -> EtcdDriver:
        host = self.hosts[node]
        gateway = Http1Gateway(host) if self.library == "http1" else Gateway(host, TIMEOUT)
        return EtcdDriver(gateway, self.serializable)


class EtcdDriver:
    """A :class:`bench_load.Driver` of one member's gateway."""

    def __init__(self, gateway: _Gateway, serializable: bool) -> None:
        self._gateway = gateway
        self._range: dict[str, Any] = {"serializable": True} if serializable else {}

    async def get(self, key: str) -> None:
        answer = await self._gateway.call("kv/range", {"key": _b64(key.encode()),
                                                       **self._range})
        for kv in answer.get("kvs", []):
            base64.b64decode(kv.get("value", ""))  # as any client would, to use the value

    async def put(self, key: str, value: bytes) -> None:
        await self._gateway.call("kv/put", {"key": _b64(key.encode()), "value": _b64(value)})

    async def aclose(self) -> None:
        await self._gateway.aclose()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()
