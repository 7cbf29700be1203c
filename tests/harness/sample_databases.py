"""Databases for the tests of the database contract (loaded by ``--db sample_databases:Name``):
one that says little about itself, factories that break the contract, adapters whose calls
raise while a run goes on, and one whose every request fails. None runs a real store.
"""

from __future__ import annotations

from collections.abc import Mapping

from kvcheck.harness.databases import (
    Capability,
    Client,
    Cluster,
    Completion,
    Database,
    Fail,
    NodeImage,
    Operation,
    Option,
    Process,
)


class Plain(Database):
    """A register store that says little about itself: no replica state, no clock faults."""

    name = "plain"
    description = "a test database"
    options = (Option("reads", "linearizable", "how reads are served",
                      ("linearizable", "serializable")),
               Option("label", "x", "free text"))
    image = NodeImage(packages=("netcat-openbsd",))
    capabilities = frozenset({Capability.CAS})
    unsupported_faults: Mapping[str, str] = {"clock": "its clock cannot be moved",
                                             "membership": "no joins"}


class Unkillable(Plain):
    """The plain store, whose processes cannot be killed."""

    name = "unkillable"
    unsupported_faults: Mapping[str, str] = {**Plain.unsupported_faults,
                                             "kill": "it restarts itself"}


def raising() -> Database:
    raise RuntimeError("the factory is broken")


def not_a_database() -> object:
    return {"name": "dict"}


class Nameless(Database):
    pass


class _Idle(Database):
    """Nodes that only sleep: an image without packages, quick to build."""

    description = "idle nodes"
    unsupported_faults: Mapping[str, str] = {"membership": "no joins"}

    def processes(self, node: str, cluster: Cluster, join: str | None = None) -> list[Process]:
        return [Process("idle", ("sleep", "infinity"))]

    async def ready(self, node: str, cluster: Cluster) -> bool:
        return True

    def client(self, node: str, cluster: Cluster) -> Client:
        return _RaisingClient()


class ReadyRaises(_Idle):
    """Its readiness check has a bug."""

    name = "ready-raises"

    async def ready(self, node: str, cluster: Cluster) -> bool:
        raise RuntimeError(f"cannot tell whether {node} is ready")


class ClientRaises(_Idle):
    """Its nodes start, but its client has a bug."""

    name = "client-raises"


class _RaisingClient:
    def __init__(self, *_: object) -> None:
        pass

    async def invoke(self, op: Operation) -> Completion:
        raise KeyError(op.f)

    async def close(self) -> None:
        pass


class ExitsAtOnce(_Idle):
    """Its nodes' program exits at once (a bad flag, say): the run must not wait for it."""

    name = "exits-at-once"

    def processes(self, node: str, cluster: Cluster, join: str | None = None) -> list[Process]:
        return [Process("server", ("sh", "-c", "echo 'unknown flag --frobnicate' >&2; exit 2"))]

    async def ready(self, node: str, cluster: Cluster) -> bool:
        return False


class ClientFactoryRaises(_Idle):
    """Its client cannot even be made."""

    name = "client-factory-raises"

    def client(self, node: str, cluster: Cluster) -> Client:
        return _RaisingClient(cluster.options["missing"])


class Refuses(_Idle):
    """Its nodes start, and its client fails every request: the run must not come out valid."""

    name = "refuses"

    def client(self, node: str, cluster: Cluster) -> Client:
        return _RefusingClient()


class _RefusingClient:
    async def invoke(self, op: Operation) -> Completion:
        return Fail("refused")

    async def close(self) -> None:
        pass
