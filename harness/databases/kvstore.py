"""The reference store as a database under test (``--db kvstore``, the default).

Each node runs ``kvstore serve`` from kvcheck's own package, with the test's N, W, R, versioning,
sloppy quorums and request timeout, its zone and weight, its peers authenticated by the
cluster's secret (written to :data:`SECRET_FILE` on each node); a new cluster names every other
node as a peer, with its zone and weight (:data:`PEERS_FILE`), a node that joins names the
member it joins through (``--join``), and a node restarted on its data follows the layout saved
there. It can report what each replica stores (``GET /replica``), where each
key belongs (``GET /placement``), and decommission a member (``POST /leave``); it has no
compare-and-set. Its expected guarantee follows from its configuration: no stale reads where
strict quorums intersect (W + R > N), else only eventual convergence.

The client speaks the store's HTTP interface (:class:`~kvcheck.store.client.StoreClient`). With
vector clocks a write carries the causal context of the worker's last read of the key, and a
read that returns siblings returns them all, as a list; a set is a JSON list of ints, added to by
read-modify-write with the read's context, its siblings merged by union.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from kvcheck.checkers.guarantees import derived_guarantee
from kvcheck.harness.databases.errors import describe_error
from kvcheck.harness.databases.interface import (
    Capability,
    Cluster,
    Completion,
    Database,
    DatabaseError,
    Fail,
    Info,
    NodeImage,
    Ok,
    Operation,
    Process,
)
from kvcheck.store.client import (
    ConnectionFailed,
    RequestRejected,
    StoreClient,
    StoreError,
    TooManySiblings,
    Unavailable,
)
from kvcheck.store.config import ClusterConfig
from kvcheck.store.datadir import record_from_json
from kvcheck.store.placement import Placement
from kvcheck.store.ring import Member, Ring

if TYPE_CHECKING:
    from kvcheck.harness.spec import TestSpec

PORT = 7000
#: Where each node keeps the cluster's secret (outside the data directory, which a join wipes).
SECRET_FILE = "/etc/kvstore/secret"
#: The peers of a new cluster, with their zones and weights (``[peers]`` of a node's TOML).
PEERS_FILE = "/etc/kvstore/peers.toml"
#: Seconds a leave may take before the adapter gives up on it.
LEAVE_LIMIT = 180.0


class KvStore(Database):
    """The reference store (module docstring)."""

    name = "kvstore"
    description = "kvcheck's reference Dynamo-style store (N/W/R quorums, vector clocks)"
    image = NodeImage(kvcheck=True)
    capabilities = frozenset({Capability.REPLICA_STATE, Capability.MEMBERSHIP})
    data_dir = "/var/lib/kvstore"

    def processes(self, node: str, cluster: Cluster, join: str | None = None) -> list[Process]:
        spec = cluster.spec
        files = {SECRET_FILE: cluster.secret}
        if join is not None:
            peering = ["--join", f"{cluster.host(join)}:{PORT}"]
        else:
            files[PEERS_FILE] = peers_toml({p: cluster.host(p) for p in cluster.members
                                            if p != node}, spec)
            peering = ["--config", PEERS_FILE]
        argv = ("kvstore", "serve", "--node-id", node, "--listen", f"{cluster.host(node)}:{PORT}",
                "--data-dir", self.data_dir, "--zone", spec.zone_of(node),
                "--weight", str(spec.weight(node)), *peering, *spec.store_flags(),
                "--secret-file", SECRET_FILE)
        return [Process("kvstore", argv, files=files)]

    async def ready(self, node: str, cluster: Cluster) -> bool:
        """``node`` answers ``/ready`` (connected both ways to every peer that answers), and
        its own connection to every member whose store runs is up."""
        try:
            async with StoreClient(cluster.host(node), PORT, timeout=1) as client:
                if await client.ready():
                    return False
                status = await client.status()
        except StoreError:
            return False
        return all(m["connected"] for m in status["membership"]
                   if m["node_id"] not in cluster.down and m["status"] != "left")

    def client(self, node: str, cluster: Cluster) -> KvStoreClient:
        spec = cluster.spec  # the harness's op_timeout decides; the client's own is a safety net
        return KvStoreClient(StoreClient(cluster.host(node), PORT, timeout=2 * spec.op_timeout),
                             workload=spec.workload, vector_clocks=spec.versioning == "vclock")

    def guarantee(self, spec: TestSpec) -> str:
        """Intersecting quorums promise no stale reads only if a read answers with what a write
        quorum holds: with async read repair it may answer with a write that reached one
        replica, whose repair may never land (docs/sim.md)."""
        if spec.read_repair == "async":
            return "eventual-convergence"
        return derived_guarantee(spec.n, spec.w, spec.r, spec.sloppy_quorum)

    def validate(self, spec: TestSpec) -> None:
        if not 1 <= spec.n <= spec.nodes:
            raise DatabaseError(f"--n must be from 1 to the number of nodes ({spec.nodes})")
        if not (1 <= spec.w <= spec.n and 1 <= spec.r <= spec.n):
            raise DatabaseError(f"--w and --r must be from 1 to --n ({spec.n})")

    def describe(self, spec: TestSpec) -> dict[str, Any]:
        # With vector clocks, KvStoreClient writes a register with the context of its last
        # read of the key, and the nodes keep clocks of the store's default size.
        causal = {"write_context": "last-read",
                  "vclock_max_entries": ClusterConfig().vclock_max_entries}
        return {"n": spec.n, "w": spec.w, "r": spec.r, "sloppy_quorum": spec.sloppy_quorum,
                "read_repair": spec.read_repair,
                "versioning": "vector-clock" if spec.versioning == "vclock" else "lww",
                "request_timeout_ms": spec.request_timeout_ms, "bugs": list(spec.bugs),
                **(causal if spec.versioning == "vclock" and spec.workload == "register"
                   else {})}

    async def replica_state(self, node: str, keys: Sequence[str],
                            cluster: Cluster) -> dict[str, Any] | None:
        try:
            async with StoreClient(cluster.host(node), PORT, timeout=5) as client:
                return {key: {"versions": await client.replica(key)} for key in keys}
        except StoreError:
            return None

    async def replicas(self, keys: Sequence[str], cluster: Cluster) -> dict[str, list[str]]:
        """Each key's preference list in the ring the cluster ended with, as the nodes report
        it; computed from the members if none answers."""
        ring = await self._final_ring(cluster)
        return {key: list(ring.preference_list(key.encode(), cluster.spec.n)) for key in keys}

    async def _final_ring(self, cluster: Cluster) -> Ring:
        vnodes = ClusterConfig().vnodes_per_weight
        for node in cluster.members:
            try:
                async with StoreClient(cluster.host(node), PORT, timeout=5) as client:
                    records = [record_from_json(r) for r in await client.placement()]
                return Placement({r.node_id: r for r in records}, vnodes, cluster.spec.n).current
            except (StoreError, ValueError, KeyError, TypeError):
                continue
        spec = cluster.spec
        return Ring.build((Member(node, spec.zone_of(node), spec.weight(node))
                           for node in cluster.members), vnodes)

    async def leave(self, node: str, cluster: Cluster) -> None:
        """Ask ``node`` to leave until it accepts (it refuses while another change is in
        progress), then wait until it has left and every other running member knows it (so
        that it can join again through any of them). Raises DatabaseError after
        :data:`LEAVE_LIMIT` seconds, or when it can never leave."""
        with trio.move_on_after(LEAVE_LIMIT):
            async with StoreClient(cluster.host(node), PORT, timeout=10) as client:
                while not await _accepted_leave(node, client):
                    await trio.sleep(0.5)
                while not await _has_left(client):
                    await trio.sleep(0.5)
            for member in cluster.members:
                if member != node and member not in cluster.down:
                    while not await self._knows_left(member, node, cluster):
                        await trio.sleep(0.5)
            return
        raise DatabaseError(f"{node} did not leave the cluster within {LEAVE_LIMIT:.0f} s")

    async def _knows_left(self, member: str, node: str, cluster: Cluster) -> bool:
        """Whether ``member``'s records show ``node`` as left (False if it does not answer)."""
        try:
            async with StoreClient(cluster.host(member), PORT, timeout=5) as client:
                records = await client.placement()
        except StoreError:
            return False
        return any(r.get("node_id") == node and r.get("status") == "left" for r in records)


def peers_toml(hosts: dict[str, str], spec: TestSpec) -> str:
    """The ``[peers]`` table naming each peer's address (``hosts``: node → host), zone and
    weight, as ``kvstore serve --config`` reads it."""
    lines = ["[peers]"]
    for node, host in hosts.items():
        lines.append(f"{node} = {{ address = {json.dumps(f'{host}:{PORT}')}, zone = "
                     f"{json.dumps(spec.zone_of(node))}, weight = {spec.weight(node)} }}")
    return "\n".join(lines) + "\n"


async def _accepted_leave(node: str, client: StoreClient) -> bool:
    """Ask ``node`` to leave: True once it accepted, False while it answers "not now" (409:
    another change is going on) or not at all. Raises DatabaseError when it never can."""
    try:
        await client.leave()
    except RequestRejected as exc:
        if exc.status != 409:
            raise DatabaseError(f"{node} cannot leave: {exc}") from None
        return False
    except StoreError:
        return False
    return True


async def _has_left(client: StoreClient) -> bool:
    try:
        status = await client.status()
    except StoreError:
        return False
    me = next(m for m in status["membership"] if m["node_id"] == status["node_id"])
    return bool(me["status"] == "left")


class KvStoreClient:
    """One worker's connection to one node of the reference store, through ``store``
    (module docstring)."""

    def __init__(self, store: StoreClient, *, workload: str, vector_clocks: bool) -> None:
        self._store = store
        self._sets = workload == "set"
        self._vector_clocks = vector_clocks
        #: The causal context of this worker's last read of each key.
        self._contexts: dict[str, str] = {}

    async def invoke(self, op: Operation) -> Completion:
        try:
            return Ok(await self._apply(op))
        except StoreError as exc:
            return failure(exc, self._store.timeout)

    async def _apply(self, op: Operation) -> Any:
        match op.f, op.value:
            case "read", None if self._sets:
                return sorted(union((await self._store.get(op.key)).values), key=str)
            case "read", None:
                read = await self._store.get(op.key)
                self._contexts[op.key] = read.context
                values = [decode_int(v) for v in read.values]
                return (values[0] if len(values) == 1 else values) if values else None
            case "write", int(value):
                context = self._contexts.get(op.key, "") if self._vector_clocks else ""
                await self._store.put(op.key, str(value).encode(), context)
                return value
            case "add", int(element):
                read = await self._store.get(op.key)
                elements = union(read.values)
                elements.add(element)
                await self._store.put(op.key, encode_set(elements), read.context)
                return element
        raise ValueError(f"the reference store has no operation {op!r}")

    async def close(self) -> None:
        await self._store.aclose()


def failure(error: StoreError, timeout: float) -> Fail | Info:
    """How an operation that ended in ``error`` completes — the one place that decides.

    ``Fail`` when the store's client says the request surely had no effect (``applied`` is
    ``"no"``: a read, a request that never left, a write the node reports unapplied), else
    ``Info`` (docs/store.md). The words: a broken connection or a timeout (``timeout``, the
    client's) as :func:`describe_error` says them; the node's failure to gather its quorum as
    the node says it, with its counts ("write quorum unreachable: 1 of 2 acknowledgements",
    "read timed out: 1 of 2 replies"); a write refused at the key's sibling cap, "too many
    siblings (HTTP 409)"; another request it refused, "rejected by the node (HTTP 400)";
    siblings it sent that do not decode, "malformed reply"; any other answer, "node error
    (HTTP 500)". The raw error is the ``detail``, with the node's answer's status and what it
    said of the write (``applied``).
    """
    words, detail = describe_error(error, timeout)
    if error.status is not None:
        detail = f"{detail} (HTTP {error.status}, applied: {error.applied})"
    if isinstance(error, Unavailable):
        words = str(error)
    elif isinstance(error, TooManySiblings):
        words = f"too many siblings (HTTP {error.status})"
    elif isinstance(error, RequestRejected):
        words = f"rejected by the node (HTTP {error.status})"
    elif not isinstance(error, ConnectionFailed):
        words = "malformed reply" if error.status == 300 else f"node error (HTTP {error.status})"
    completion = Fail if error.applied == "no" else Info
    return completion(words, detail)


def decode_int(raw: bytes | None) -> int | str | None:
    """A stored value as the int the harness wrote; anything else is kept, visibly, as text."""
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return "unexpected:" + raw.decode("utf-8", "replace")


def union(values: tuple[bytes | None, ...]) -> set[Any]:
    """The union of sibling sets; a sibling that is not a JSON list adds itself, as text."""
    elements: set[Any] = set()
    for raw in values:
        if raw is None:
            continue
        try:
            decoded = json.loads(raw)
        except ValueError:
            decoded = None
        if isinstance(decoded, list) and all(isinstance(e, int) for e in decoded):
            elements.update(decoded)
        else:
            elements.add("unexpected:" + raw.decode("utf-8", "replace"))
    return elements


def encode_set(elements: set[Any]) -> bytes:
    return json.dumps(sorted(e for e in elements if isinstance(e, int)),
                      separators=(",", ":")).encode()
