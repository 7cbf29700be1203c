"""kvcheck's adapter for the primary-backup store of ``server.py`` (``docs/your-store.md``).

    PYTHONPATH=examples kvcheck run --db primary_store.adapter:PrimaryStore --nodes 3

An adapter keeps two contracts (:mod:`kvcheck.harness.databases.interface`): the *database*
(:class:`PrimaryStore`) says what a node's image holds, how its processes start, when a node is
ready and what the store can and cannot undergo; the *client* (:class:`PrimaryStoreClient`)
turns each operation of the workload into ``Ok``, ``Fail`` or ``Info`` (:func:`completion_of`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from kvcheck.harness.databases import (
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
    Option,
    Process,
    describe_error,
)

if TYPE_CHECKING:
    from kvcheck.harness.spec import TestSpec

PORT = 8000
#: Where ``server.py`` is in the node image.
SERVER = "/opt/primary-store/server.py"
#: Seconds a request may take: longer than a backup waits for the primary (1 s), so that its
#: 502 or 504 arrives; shorter than the harness's own limit (5 s), so that a read that gets no
#: answer is this client's ``Fail`` rather than the harness's ``Info``.
TIMEOUT = 3.0


class PrimaryStore(Database):
    """The store of ``server.py``: node ``n1`` is the primary, the others its backups.

    ``--db-opt reads=primary`` (the default): a backup forwards reads to the primary, so every
    read sees every write acknowledged before it — linearizable. ``reads=local``: a backup
    answers from the copy the primary pushes to it every half second — stale reads.
    """

    name = "primary-store"
    description = "the example primary-backup store (examples/primary_store)"
    options = (Option("reads", "primary", "where a backup answers reads: through the primary, "
                      "or from its own copy (up to half a second old)",
                      choices=("primary", "local")),)
    image = NodeImage(files={SERVER: (Path(__file__).parent / "server.py").read_text()})
    capabilities = frozenset({Capability.PRIMARY})
    unsupported_faults: Mapping[str, str] = {
        "membership": "its nodes are fixed when the cluster starts (server.py --nodes): none "
                      "can join or leave",
    }
    data_dir = "/var/lib/primary-store"

    def processes(self, node: str, cluster: Cluster, join: str | None = None) -> list[Process]:
        """One ``server.py``, told its own address and every node's, the primary first. The
        same command restarts it after a kill: the primary replays its log from ``data_dir``.
        (``join`` is never given: membership is unsupported.)"""
        nodes = ",".join(f"{cluster.host(n)}:{PORT}" for n in cluster.members)
        return [Process("primary-store", (
            "python3", SERVER, "--listen", f"{cluster.host(node)}:{PORT}", "--nodes", nodes,
            "--data-dir", self.data_dir, "--reads", cluster.options["reads"]))]

    async def ready(self, node: str, cluster: Cluster) -> bool:
        """Whether ``node`` answers ``GET /health`` with 200: the primary once it serves, a
        backup once the primary has reached it."""
        try:
            async with httpx.AsyncClient(timeout=1.0, trust_env=False) as http:
                answer = await http.get(f"http://{cluster.host(node)}:{PORT}/health")
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    def client(self, node: str, cluster: Cluster) -> PrimaryStoreClient:
        return PrimaryStoreClient(cluster.host(node))

    async def primary(self, cluster: Cluster) -> str:
        """The first node, always (the partition nemesis can isolate it)."""
        return cluster.members[0]

    def validate(self, spec: TestSpec) -> None:
        """Registers only: a set would need an atomic add, which the store does not have."""
        if spec.workload != "register":
            raise DatabaseError(f"{self.name} has registers only, not --workload "
                                f"{spec.workload}: it cannot add to a set atomically")

    def guarantee(self, spec: TestSpec) -> str:
        """``linearizable`` whatever the read mode: it is what users of a primary-backup store
        rely on, and what ``reads=local`` is expected to break."""
        return "linearizable"


class PrimaryStoreClient:
    """A client of the node at ``host``: a ``read`` is ``GET /kv/KEY``, a ``write`` is
    ``PUT /kv/KEY`` with the value in decimal, each given ``timeout`` seconds. The server
    closes the connection after each answer, so every request connects afresh: a node that is
    down is found out before anything is sent."""

    def __init__(self, host: str, timeout: float = TIMEOUT) -> None:
        self._http = httpx.AsyncClient(base_url=f"http://{host}:{PORT}", timeout=timeout,
                                       trust_env=False)  # no proxy: the nodes are local
        self._timeout = timeout

    async def invoke(self, op: Operation) -> Completion:
        """Run ``op``; raises ``ValueError`` for an operation the store does not have."""
        if op.f == "read":
            request = self._http.build_request("GET", f"/kv/{op.key}")
        elif op.f == "write":
            request = self._http.build_request("PUT", f"/kv/{op.key}", content=str(op.value))
        else:
            raise ValueError(f"primary-store has no operation {op.f!r}")
        try:
            return completion_of(op, await self._http.send(request))
        except httpx.HTTPError as error:
            return completion_of(op, error, self._timeout)

    async def close(self) -> None:
        await self._http.aclose()


#: The store's answers that say a backup could not get the primary's (``server.py``), in words.
BACKUP_WORDS = {502: "the backup could not reach the primary",
                504: "the primary did not answer the backup"}


def completion_of(op: Operation, answer: httpx.Response | httpx.HTTPError,
                  timeout: float = TIMEOUT) -> Completion:
    """How ``op`` ended, from the node's answer or the error that came instead: the one place
    that decides.

    =======================================  ==========  ==================================
    what came back                           a read      a write
    =======================================  ==========  ==================================
    200 and the value / 204                  Ok(value)   Ok(the value written)
    404: the key was never written           Ok(None)
    no connection to the node, or 502: the   Fail        Fail: the request was never sent,
    node could not reach the primary                     nothing happened
    anything else: a timeout, a connection   Fail        Info: the primary may have applied
    lost, 504 (the primary did not answer)               it (it may apply it later still)
    =======================================  ==========  ==================================

    A read changes nothing, so a read without an answer is ``Fail``: forgetting it loses
    nothing. A write without an answer is ``Info``: when in doubt, ``Info`` — it costs the
    checkers some precision, a wrong ``Fail`` costs a false verdict.

    Why, in words that group well (:func:`describe_error` for a connection's error, given the
    client's ``timeout``; :data:`BACKUP_WORDS` or "HTTP <status>" for an answer), and the raw
    error or answer as the detail.
    """
    if isinstance(answer, httpx.Response):
        status = answer.status_code
        if op.f == "read" and status in (200, 404):
            return Ok(None if status == 404 else decode(answer.text))
        if op.f == "write" and status == 204:
            return Ok(op.value)
        error = BACKUP_WORDS.get(status, f"HTTP {status}")
        detail = f"HTTP {status} {answer.text}".strip()
        sent = status != 502
    else:
        error, detail = describe_error(answer, timeout)
        sent = not isinstance(answer, httpx.ConnectError | httpx.ConnectTimeout)
    return Info(error, detail) if sent and op.f == "write" else Fail(error, detail)


def decode(text: str) -> int | str:
    """A value as the int the workload wrote; anything else, visibly, as text."""
    try:
        return int(text)
    except ValueError:
        return "unexpected:" + text
