"""etcd as a system under test: Debian's ``etcd-server`` (3.4), one member per node.

Every node runs one ``etcd`` process named after the node, serving clients (and the v3 HTTP/JSON
gateway the client speaks: :mod:`.etcd_client`) on port 2379 and its peers on port 2380 of
``cluster.host(node)``. The cluster is bootstrapped statically: every member is started with
the same ``--initial-cluster`` of all nodes and a cluster token made from the run's id, with
``--initial-cluster-state new``. A member restarted after a kill on the same data directory
ignores those flags and rejoins as the member its write-ahead log says it is (etcd logs "the
server is already initialized as member before"), so the same command starts and restarts it.

etcd fsyncs its write-ahead log before it acknowledges a write (3.4 has no flag to turn that
off), and keeps its Raft defaults here: 100 ms heartbeats, a 1 s election timeout, and a
request timeout of 7 s (5 s + 2 election timeouts) after which a write that may still commit
is answered "request timed out".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx
import trio

from kvcheck.harness.databases.etcd_client import (
    CLIENT_PORT,
    EtcdClient,
    EtcdError,
    Gateway,
    b64,
    decode_register,
    decode_set,
)
from kvcheck.harness.databases.interface import (
    Capability,
    Cluster,
    Database,
    DatabaseError,
    NodeImage,
    Option,
    Process,
)

if TYPE_CHECKING:
    from kvcheck.harness.spec import TestSpec

#: The port members talk to each other (Raft) on.
PEER_PORT = 2380

#: How long a probe of one member (health, status, a replica's state) may take: a member that
#: is paused or cut off answers none, and the harness asks again.
PROBE_TIMEOUT = 1.0

READS = ("linearizable", "serializable")


class Etcd(Database):
    """etcd: Raft-replicated, every member holds every key, writes go through the leader.

    ``--db-opt reads=linearizable`` (the default, etcd's own: the member confirms with the
    leader that it is up to date before it answers) or ``reads=serializable`` (the member
    answers from its own store, possibly stale: fast, and known to be unsafe — a canary for the
    stale-reads checker).
    """

    name = "etcd"
    description = "etcd 3.4 (Debian's etcd-server): Raft, v3 API through its HTTP/JSON gateway"
    options = (Option("reads", "linearizable", "how the workload's reads are made: "
                      "linearizable (through the leader) or serializable (the member's own "
                      "store, possibly stale)", choices=READS),)
    image = NodeImage(packages=("etcd-server",))
    capabilities = frozenset({Capability.PRIMARY, Capability.CAS, Capability.REPLICA_STATE})
    unsupported_faults: Mapping[str, str] = {
        "clock": "libfaketime cannot move etcd's clock: etcd is a Go program, and Go reads the "
                 "time through the vDSO, never through the libc calls libfaketime replaces",
        "membership": "adding an etcd member takes a MemberAdd call to the running cluster "
                      "before the new member starts, with the membership that call returns "
                      "as its --initial-cluster; the database contract starts a joining node "
                      "from processes() alone, which cannot make that call",
    }

    def processes(self, node: str, cluster: Cluster, join: str | None = None) -> list[Process]:
        """One ``etcd`` member of a new cluster of ``cluster.members``, or the same member
        restarted on its data (the command is the same). Raises :class:`DatabaseError` for
        ``join``: members cannot join (see :attr:`unsupported_faults`)."""
        if join is not None:
            raise DatabaseError(f"etcd: {node} cannot join through {join}: "
                                + self.unsupported_faults["membership"])
        host = cluster.host(node)
        listen = _listen_address(host)
        members = ",".join(f"{n}=http://{cluster.host(n)}:{PEER_PORT}" for n in cluster.members)
        return [Process("etcd", (
            "etcd", "--name", node, "--data-dir", self.data_dir,
            "--listen-client-urls", f"http://{listen}:{CLIENT_PORT}",
            "--advertise-client-urls", f"http://{host}:{CLIENT_PORT}",
            "--listen-peer-urls", f"http://{listen}:{PEER_PORT}",
            "--initial-advertise-peer-urls", f"http://{host}:{PEER_PORT}",
            "--initial-cluster", members,
            "--initial-cluster-token", f"kvcheck-{cluster.run_id}",
            "--initial-cluster-state", "new"))]

    def client(self, node: str, cluster: Cluster) -> EtcdClient:
        return EtcdClient(cluster.host(node), workload=cluster.spec.workload,
                          serializable=cluster.options["reads"] == "serializable",
                          timeout=cluster.spec.op_timeout)

    def guarantee(self, spec: TestSpec) -> str:
        """``linearizable`` for registers, whatever the read mode: it is what etcd promises
        for its key-value API, and what its users rely on. For sets, ``no-stale-reads``: of
        linearizability, what the set checkers can judge — no acknowledged element lost, and
        no read missing an element an earlier read returned. (``linearizable`` would add the
        linearizability checker, which knows registers only; ``no-lost-writes`` would let a
        stale set read pass, which etcd does not allow.)"""
        return "no-stale-reads" if spec.workload == "set" else "linearizable"

    async def ready(self, node: str, cluster: Cluster) -> bool:
        """Whether the member answers ``GET /health`` with ``{"health": "true"}``: etcd says so
        when the member has a leader, no alarm is raised, and a linearizable read through it
        succeeds within a second — it serves, and reaches a quorum of its peers."""
        try:
            async with Gateway(cluster.host(node), PROBE_TIMEOUT) as gateway:
                return (await gateway.get("/health")).get("health") == "true"
        except (httpx.HTTPError, EtcdError):
            return False

    async def settled(self, cluster: Cluster) -> bool:
        """Whether a leader exists and every running member names it."""
        running = [n for n in cluster.members if n not in cluster.down]
        leaders = await self._leaders(running, cluster)
        return len(leaders) == len(running) and len({lead for lead, _ in leaders.values()}) == 1

    async def primary(self, cluster: Cluster) -> str | None:
        """The Raft leader: the member a majority of the members name in
        ``/v3/maintenance/status`` (a leader needs a majority; a member cut off from it may
        still name an old one), known by the member id it reports for itself. None when no
        majority names one that answers."""
        leaders = await self._leaders(cluster.members, cluster)
        names = {own: node for node, (_, own) in leaders.items()}
        votes = [lead for lead, _ in leaders.values()]
        for lead in set(votes):
            if votes.count(lead) > len(cluster.members) // 2 and lead in names:
                return names[lead]
        return None

    async def replica_state(self, node: str, keys: Sequence[str],
                            cluster: Cluster) -> dict[str, Any] | None:
        """What ``node`` has applied for each key: a serializable range, which etcd answers
        from the member's own store without asking the leader — exactly that member's replica.
        Each key's one version is ``{"value", "mod_revision"}`` (none when the key is
        missing); members have converged when they hold the same. None when the member does
        not answer."""
        decode = decode_set if cluster.spec.workload == "set" else decode_register
        state: dict[str, Any] = {}
        try:
            async with Gateway(cluster.host(node), PROBE_TIMEOUT) as gateway:
                for key in keys:
                    answer = await gateway.call("kv/range",
                                                {"key": b64(key), "serializable": True})
                    kvs = answer.get("kvs", [])
                    state[key] = {"versions": [
                        {"value": decode(kvs), "mod_revision": int(kvs[0]["mod_revision"])}
                    ] if kvs else []}
        except (httpx.HTTPError, EtcdError):
            return None
        return state

    async def replicas(self, keys: Sequence[str], cluster: Cluster) -> dict[str, list[str]]:
        """Every member holds every key."""
        return {key: list(cluster.members) for key in keys}

    async def _leaders(self, nodes: Sequence[str],
                       cluster: Cluster) -> dict[str, tuple[str, str]]:
        """For each of ``nodes`` that answers its status and knows a leader: (the leader's
        member id, its own member id)."""
        found: dict[str, tuple[str, str]] = {}

        async def ask(node: str) -> None:
            try:
                async with Gateway(cluster.host(node), PROBE_TIMEOUT) as gateway:
                    status = await gateway.call("maintenance/status", {})
            except (httpx.HTTPError, EtcdError):
                return
            lead, own = status.get("leader", "0"), status.get("header", {}).get("member_id")
            if lead != "0" and own is not None:
                found[node] = (lead, own)

        async with trio.open_nursery() as nursery:
            for node in nodes:
                nursery.start_soon(ask, node)
        return found


def _listen_address(host: str) -> str:
    """Where a member listens: ``host`` itself when it is an IP address, else every address
    (etcd binds its listeners to IP addresses only; it advertises the name)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return "0.0.0.0"
    return host
