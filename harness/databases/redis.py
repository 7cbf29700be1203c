"""Redis with Sentinel (``--db redis``): one primary, asynchronous replicas, a sentinel per node.

Topology. Every node runs a ``redis-server`` and a ``redis-sentinel`` (Debian's packages, Redis
7.0). The first node of ``cluster.members`` starts as the primary, the others as its replicas
(``replicaof``). Every sentinel monitors the primary under the name ``kvcheck`` with a majority
quorum; Sentinel's failover also needs a majority of all sentinels to elect the one that runs
it, so a minority cut off with the primary cannot promote anything. The failover settings
(:data:`DOWN_AFTER_MS`, :data:`FAILOVER_TIMEOUT_MS`) are short enough that a test of a minute
sees failovers: a primary that stops answering is replaced in about five seconds.

Durability. ``appendonly yes`` with ``appendfsync always``: the primary writes every command to
its append-only file and fsyncs it before it answers, so "acknowledged" means "on the primary's
disk" — and no more: replication is asynchronous, and a primary that Sentinel replaces loses
what its replicas had not received when it rejoins as a replica. This is what Redis's Sentinel
documentation warns of, and what a test under ``isolate-primary`` partitions finds.

Configuration files. Sentinel rewrites its file at run time (what it has learnt: the current
primary, the epoch, the replicas and the other sentinels, its own id), and when it reconfigures
a server it has that server rewrite its own (``CONFIG REWRITE``: whom it replicates). So each
process owns a writable file in :attr:`Redis.data_dir`, written at the node's first start and
never overwritten: a restarted server comes back in the role Sentinel last gave it, and a
restarted sentinel with what it knew, as on a real machine.

Faults. The nemesis kills and pauses the ``redis-server`` only; the sentinel survives
(``faults=False``). The sentinel is the failure detector, and the test is of what it does when
the data server fails — a crashed or frozen server is what Sentinel exists to handle. A paused
sentinel would instead enter its TILT mode (its timer sees the clock jump and it stops acting
for 30 s), testing Sentinel's self-protection rather than Redis's replication. A whole machine
failing is a partition: it cuts the node's sentinel off with its server. The clock cannot be
skewed at all, and membership changes are not supported (:attr:`Redis.unsupported_faults`).

The client is :mod:`.redis_client` (the operations, and the error mapping).
"""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import trio

from kvcheck.harness.databases.interface import (
    Capability,
    Client,
    Cluster,
    Database,
    DatabaseError,
    NodeImage,
    Process,
)
from kvcheck.harness.databases.redis_client import (
    MASTER_NAME,
    REDIS_PORT,
    SENTINEL_PORT,
    RedisClient,
    number,
    sorted_members,
)
from kvcheck.harness.databases.redis_protocol import (
    Connection,
    ConnectionFailed,
    ConnectionLost,
    ErrorReply,
)

#: A sentinel thinks a server down after this long without a valid reply; then, once a quorum
#: agrees, a failover starts. Measured here: a SIGSTOPped primary is replaced in 4 to 5 s.
DOWN_AFTER_MS = 3000
#: Bounds each step of a failover, and a sentinel does not retry a failover of the same primary
#: within twice this.
FAILOVER_TIMEOUT_MS = 6000
#: How long the harness's own queries (readiness, the primary, replica state) wait for a node.
QUERY_TIMEOUT = 2.0
#: The share of ``op_timeout`` a client gives itself, so that it answers before the harness
#: cancels it.
CLIENT_TIMEOUT_SHARE = 0.8


async def _replies(host: str, port: int,
                   *commands: tuple[str | int, ...]) -> list[object] | None:
    """The replies to ``commands``, sent one after another on one new connection, or None if
    one got no reply (no connection, an error reply, nothing within :data:`QUERY_TIMEOUT`)."""
    connection: Connection | None = None
    replies: list[object] = []
    try:
        with trio.move_on_after(QUERY_TIMEOUT):
            connection = await Connection.open(host, port)
        if connection is None:
            return None
        for args in commands:
            with trio.move_on_after(QUERY_TIMEOUT):
                replies.append(await connection.call(*args))
            if connection.closed:  # interrupted by the timeout
                return None
    except (ConnectionFailed, ConnectionLost, ErrorReply):
        return None
    finally:
        if connection is not None:
            await connection.aclose()
    return replies


async def _reply(host: str, port: int, *args: str | int) -> object:
    """The reply to one command, or None if it got none (as :func:`_replies`; used for
    commands that never answer None)."""
    replies = await _replies(host, port, args)
    return None if replies is None else replies[0]


def owned_config(path: str, text: str, program: str) -> tuple[str, ...]:
    """argv that writes ``text`` to ``path`` unless the file exists (atomically: a node killed
    while writing leaves no half file), then runs ``program path`` in the shell's place."""
    new = shlex.quote(path + ".new")
    file = shlex.quote(path)
    folder = shlex.quote(path.rsplit("/", 1)[0])
    return ("sh", "-c", f"mkdir -p {folder} && {{ [ -e {file} ] || "
                        f"{{ printf '%s' {shlex.quote(text)} > {new} && mv {new} {file}; }}; }} "
                        f"&& exec {program} {file}")


def info_fields(text: str) -> dict[str, str]:
    """``INFO``'s ``field:value`` lines as a dict."""
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {name: value.strip() for name, value in pairs}


class Redis(Database):
    """The adapter (module docstring)."""

    name = "redis"
    description = "Redis 7 with Sentinel: one primary, asynchronous replicas, failover"
    image = NodeImage(packages=("redis-server", "redis-sentinel"))
    capabilities = frozenset({Capability.PRIMARY, Capability.CAS, Capability.REPLICA_STATE})
    unsupported_faults = MappingProxyType({
        "clock": "Debian's redis-server is built with jemalloc, which deadlocks at start-up "
                 "under libfaketime (libfaketime issue 130), so its clock cannot be skewed",
        "membership": "Sentinel has no membership protocol: it fixes its quorum when it starts "
                      "monitoring and forgets a replica or a sentinel only when every sentinel "
                      "is reset, so adding and removing nodes would test a procedure of "
                      "kvcheck's, not Redis",
    })

    # -- running a node --

    def processes(self, node: str, cluster: Cluster, join: str | None = None) -> list[Process]:
        """The node's redis-server, then its sentinel (module docstring)."""
        if join is not None:
            raise DatabaseError("redis cannot add a member to a running cluster")
        server = owned_config(f"{self.data_dir}/redis.conf",
                              self._server_config(node, cluster), "redis-server")
        sentinel = owned_config(f"{self.data_dir}/sentinel.conf",
                                self._sentinel_config(node, cluster), "redis-sentinel")
        return [Process("redis-server", server),
                Process("redis-sentinel", sentinel, faults=False)]

    def _server_config(self, node: str, cluster: Cluster) -> str:
        host = cluster.host(node)
        lines = [f"bind {host}", f"bind-source-addr {host}", f"port {REDIS_PORT}",
                 "protected-mode no",
                 f"dir {self.data_dir}", "appendonly yes", "appendfsync always", 'save ""',
                 # a replica's initial sync starts at once instead of waiting 5 s for others
                 "repl-diskless-sync-delay 0",
                 f"replica-announce-ip {host}"]
        primary = cluster.members[0]
        if node != primary:
            lines.append(f"replicaof {cluster.host(primary)} {REDIS_PORT}")
        return "\n".join(lines) + "\n"

    def _sentinel_config(self, node: str, cluster: Cluster) -> str:
        quorum = len(cluster.members) // 2 + 1
        host = cluster.host(node)
        lines = [f"bind {host}", f"bind-source-addr {host}", f"port {SENTINEL_PORT}",
                 "protected-mode no", f"dir {self.data_dir}", f"sentinel announce-ip {host}",
                 f"sentinel monitor {MASTER_NAME} {cluster.host(cluster.members[0])} "
                 f"{REDIS_PORT} {quorum}",
                 f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
                 f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
                 # every replica follows a new primary at once, not one after another
                 f"sentinel parallel-syncs {MASTER_NAME} {len(cluster.members)}"]
        return "\n".join(lines) + "\n"

    async def ready(self, node: str, cluster: Cluster) -> bool:
        """Its redis-server answers (a replica's link to its primary is up) and its sentinel
        answers."""
        host = cluster.host(node)
        replication = await _reply(host, REDIS_PORT, "INFO", "replication")
        if not isinstance(replication, str):
            return False
        role = info_fields(replication)
        if role.get("role") == "slave" and role.get("master_link_status") != "up":
            return False
        return await _reply(host, SENTINEL_PORT, "PING") == "PONG"

    async def settled(self, cluster: Cluster) -> bool:
        """Every sentinel that answers (a majority at least) names the same primary, a running
        node that Sentinel does not think down, and knows every other server and sentinel
        (before it has seen the replicas, a failover would find none to promote); every other
        running node replicates from that primary."""
        views = await self._sentinel_views(cluster)
        others = len(cluster.members) - 1
        if (len(views) <= len(cluster.members) // 2
                or len({(v["ip"], v["port"]) for v in views}) != 1
                or any(v["flags"] != "master" or int(v["num-slaves"]) < others
                       or int(v["num-other-sentinels"]) < others for v in views)):
            return False
        primary = self._node_at(views[0], cluster)
        if primary is None or primary in cluster.down:
            return False
        for node in cluster.members:
            if node in cluster.down:
                continue
            replication = await _reply(cluster.host(node), REDIS_PORT, "INFO", "replication")
            if not isinstance(replication, str):
                return False
            role = info_fields(replication)
            if node == primary:
                if role.get("role") != "master":
                    return False
            elif (role.get("role") != "slave"
                  or role.get("master_host") != cluster.host(primary)
                  or role.get("master_link_status") != "up"):
                return False
        return True

    def client(self, node: str, cluster: Cluster) -> Client:
        return RedisClient(cluster.host(node), cluster.spec.workload,
                           timeout=cluster.spec.op_timeout * CLIENT_TIMEOUT_SHARE)

    # -- capabilities --

    async def primary(self, cluster: Cluster) -> str | None:
        """The node that a majority of the sentinels that answer name as the primary."""
        views = await self._sentinel_views(cluster)
        named = Counter(self._node_at(v, cluster) for v in views)
        for node, count in named.items():
            if node is not None and count > len(views) // 2:
                return node
        return None

    async def replica_state(self, node: str, keys: Sequence[str],
                            cluster: Cluster) -> dict[str, Any] | None:
        """What the node's own redis-server holds for each key, read from it directly (a
        replica answers reads from its copy): ``{"versions": [value]}`` for a register,
        ``{"versions": [sorted members]}`` for a set, no versions for a missing key. None if
        the server does not answer, or is loading its data."""
        read = "SMEMBERS" if cluster.spec.workload == "set" else "GET"
        replies = await _replies(cluster.host(node), REDIS_PORT, *((read, k) for k in keys))
        if replies is None:
            return None
        state: dict[str, Any] = {}
        for key, reply in zip(keys, replies, strict=True):
            if isinstance(reply, list):
                state[key] = {"versions": [sorted_members(reply)] if reply else []}
            else:
                state[key] = {"versions": [] if reply is None else [number(reply)]}
        return state

    async def replicas(self, keys: Sequence[str], cluster: Cluster) -> dict[str, list[str]]:
        """Every node: each holds a full copy."""
        return {key: list(cluster.members) for key in keys}

    # -- asking the sentinels --

    async def _sentinel_views(self, cluster: Cluster) -> list[dict[str, str]]:
        """The ``SENTINEL MASTER`` answers (each sentinel's view of the primary) of the
        sentinels that answer, asked all at once."""
        replies: list[object] = []

        async def ask(node: str) -> None:
            replies.append(await _reply(cluster.host(node), SENTINEL_PORT,
                                        "SENTINEL", "MASTER", MASTER_NAME))

        async with trio.open_nursery() as nursery:
            for node in cluster.members:
                nursery.start_soon(ask, node)
        return [dict(zip(r[::2], r[1::2], strict=True)) for r in replies if isinstance(r, list)]

    @staticmethod
    def _node_at(view: dict[str, str], cluster: Cluster) -> str | None:
        """The node whose redis-server is at the address a sentinel's view names."""
        if view["port"] != str(REDIS_PORT):
            return None
        return next((n for n in cluster.members if cluster.host(n) == view["ip"]), None)

