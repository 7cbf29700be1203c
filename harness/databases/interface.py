"""The two contracts between kvcheck and a system under test: a database and its clients.

As in Jepsen, what runs on a node (the *database*) is kept apart from how a test talks to it
(the *client*), and both apart from where nodes run (the backend: Docker containers here) and
what the test does (the workload, the nemesis, the checkers).

A :class:`Database` describes, as data and a few async calls:

- what goes into the node image on top of kvcheck's Debian base (:class:`NodeImage`: Debian
  packages installed when the image is built, files, and whether the node runs kvcheck's own
  Python package);
- how a node runs: its long-running :class:`Process` es (argv, environment, which of them the
  nemesis may kill, pause or skew), where it keeps its data (:attr:`Database.data_dir`) — logs
  go to ``<process>.log`` in the node's run directory, the backend sees to that;
- when a node is ready (:meth:`Database.ready`) and when the cluster is (:meth:`Database.settled`);
- which nemesis kinds it cannot undergo, and why (:attr:`Database.unsupported_faults`): such a
  test is refused before anything starts;
- its optional capabilities, declared rather than assumed (:class:`Capability`): naming its
  primary, reporting each replica's state of a key, joining and leaving members.

A :class:`Client` is one connection to one node. It turns one :class:`Operation` of a workload
into a :class:`Completion`: :class:`Ok` (it happened; with the value read), :class:`Fail` (it
surely did not happen) or :class:`Info` (it may have happened: indeterminate). Deciding which is
the client's whole job, and the place where a database's error vocabulary is translated: a
connection refused before the request was sent is ``Fail``; a timeout or a connection lost after
a write was sent is ``Info``; an error the database documents as "not applied" is ``Fail``.
When in doubt, ``Info`` — it costs the checkers some precision, never a false verdict. Why an
operation failed is worded plainly and stably (no addresses, ports or object ids: errors are
counted by their words), the raw error kept apart as ``detail`` (:mod:`.errors`). The
harness adds one rule of its own: an operation that outlives ``op_timeout`` is cancelled and
recorded as ``Info``, and the worker carries on with a new client (as a new process).

Operations (what :mod:`kvcheck.harness.workloads` produces; ``docs/databases.md`` says it too):

=========  ===========  ===================  ===========================================
workload   ``f``        ``value``            the ``Ok`` value
=========  ===========  ===================  ===========================================
register   ``read``     None                 the int stored, None if none (a database with
                                             siblings may return a list of them)
register   ``write``    the int to store     the int written
register   ``cas``      ``[expected, new]``  ``[expected, new]``; a mismatch is ``Fail``
set        ``add``      the int to add       the int added
set        ``read``     None                 the sorted list of the set's elements
=========  ===========  ===================  ===========================================

Values the client cannot decode are returned as the text ``"unexpected:<what it read>"``, so
a checker shows them rather than the harness crashing on them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from kvcheck.harness.spec import TestSpec

# -- operations and completions -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of a workload (the table in the module docstring)."""

    f: str
    key: str
    value: Any = None


@dataclass(frozen=True, slots=True)
class Ok:
    """The operation happened; ``value`` is what it read or wrote."""

    value: Any = None


@dataclass(frozen=True, slots=True)
class Fail:
    """The operation surely did not happen; ``error`` says why, in a short sentence of kvcheck's
    own words (:func:`~kvcheck.harness.databases.errors.describe_error`); ``detail``, if
    given, is the raw error (a library's exception, the database's answer) for debugging. Two
    completions that say the same ``error`` are equal, whatever their ``detail``."""

    error: str
    detail: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Info:
    """The operation may or may not have happened; ``error`` says why it is not known, and
    ``detail`` is the raw error, as for :class:`Fail`."""

    error: str
    detail: str | None = field(default=None, compare=False)


Completion = Ok | Fail | Info


class Client(Protocol):
    """One connection to one node (see the module docstring).

    A client is used by one worker at a time, one operation after another, and may keep what it
    learns between them (a causal context, the address of the current primary). It connects
    lazily, on its first operation, and reconnects after a failure.
    """

    async def invoke(self, op: Operation) -> Completion:
        """Run ``op`` against the node and say how it ended. Never raises for the database's
        errors, timeouts or broken connections: those are completions. Raises only for a bug
        (an operation the client does not know is one)."""
        ...

    async def close(self) -> None:
        """Close the connection, if any. Safe to call more than once."""
        ...


# -- the database --------------------------------------------------------------------------------


class Capability(StrEnum):
    """What a database can do beyond the contract's minimum."""

    #: :meth:`Database.primary` names the node that leads (etcd's Raft leader, Redis's
    #: primary): the partition nemesis can isolate it.
    PRIMARY = "primary"
    #: :meth:`Database.replica_state` reports what each node stores for a key: the
    #: convergence checker can compare replicas.
    REPLICA_STATE = "replica-state"
    #: :meth:`Database.leave` decommissions a member and :meth:`Database.processes` can start a
    #: node that joins through another: the membership nemesis can add and remove nodes.
    MEMBERSHIP = "membership"
    #: The client does compare-and-set on registers: the register workload issues ``cas``.
    CAS = "cas"

    @property
    def doing(self) -> str:
        """What a database with this capability can do, in words."""
        return _DOING[self]


_DOING = {Capability.PRIMARY: "name its primary",
          Capability.REPLICA_STATE: "report what each replica stores",
          Capability.MEMBERSHIP: "add and remove members",
          Capability.CAS: "compare-and-set"}


@dataclass(frozen=True, slots=True)
class Option:
    """A setting the database takes from ``--db-opt NAME=VALUE``: a string, one of ``choices``
    where they are given, ``default`` when not given."""

    name: str
    default: str
    help: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeImage:
    """What the node image holds on top of kvcheck's Debian base (bookworm, with python3,
    iptables, iproute2, libfaketime and procps).

    ``packages``: Debian packages installed with apt when the image is built (never at run
    time). ``files``: path in the image → content, written after the packages (configuration
    templates, scripts; mode 0755 for paths under a ``bin/``). ``kvcheck``: whether the node runs
    kvcheck's own package (the reference store does), installed into ``/opt/kvcheck`` with its
    dependencies, first on ``PATH``.
    """

    packages: tuple[str, ...] = ()
    files: Mapping[str, str] = field(default_factory=dict)
    kvcheck: bool = False


@dataclass(frozen=True, slots=True)
class Process:
    """A long-running process of a node, started in the node's container by the backend.

    ``argv`` runs with ``environment`` added; its output goes to ``<name>.log`` in the node's
    run directory. ``files``: absolute path on the node → content, written (mode 0600, parent
    directories made) before every start: configuration that holds a secret. ``faults``:
    whether the nemesis kills, pauses and skews it (a node's main process); a helper that must
    outlive those faults (Redis's sentinel) says False. A process the nemesis did not stop that
    exits by itself is a crash, and makes the run invalid.
    """

    name: str
    argv: tuple[str, ...]
    environment: Mapping[str, str] = field(default_factory=dict)
    faults: bool = True
    files: Mapping[str, str] = field(default_factory=dict)


class Cluster(Protocol):
    """What a database sees of the cluster a backend runs for it (read-only)."""

    spec: TestSpec
    #: ``--db-opt`` values, every option of the database present (defaults filled in).
    options: Mapping[str, str]
    #: A name unique to this run (to tell clusters apart, e.g. etcd's initial-cluster-token).
    run_id: str
    #: A random secret of this cluster alone (hex), for members that authenticate each other.
    secret: str

    @property
    def members(self) -> Sequence[str]:
        """The initial nodes, then those that joined and have not left."""
        ...

    @property
    def down(self) -> frozenset[str]:
        """Nodes whose processes the nemesis has stopped (killed, or left the cluster)."""
        ...

    def host(self, node: str) -> str:
        """The address at which ``node`` is reached (by clients and by the other nodes)."""
        ...


class DatabaseError(Exception):
    """A database adapter could not do what was asked; the message says what and why."""


class Database:
    """A system under test (see the module docstring). An adapter subclasses it, sets the class
    attributes that differ from these defaults and implements :meth:`processes`, :meth:`ready`
    and :meth:`client`; the other calls have defaults that suit a database without the matching
    capability. It is built without arguments (``--db package.module:Factory``) and holds no
    state of a run: the ``--db-opt`` values, checked against :attr:`options` and completed with
    their defaults, reach it as ``spec.db_options`` and ``cluster.options``."""

    #: What ``--db`` calls it, and one line for ``kvcheck run --db help``.
    name: str = ""
    description: str = ""
    options: tuple[Option, ...] = ()
    image: NodeImage = NodeImage()
    capabilities: frozenset[Capability] = frozenset()
    #: Nemesis kind → why this database cannot undergo it; a test asking for one is refused.
    unsupported_faults: Mapping[str, str] = {}
    #: Where a node keeps its data, in its container: emptied before a node joins.
    data_dir: str = "/var/lib/kvcheck-db"

    def processes(self, node: str, cluster: Cluster, join: str | None = None) -> list[Process]:
        """How to start ``node``: a node of a new cluster of ``cluster.members`` (or restarted on
        its data), or, with ``join``, one joining the running cluster through member ``join``
        (only with :attr:`Capability.MEMBERSHIP`)."""
        raise NotImplementedError

    async def ready(self, node: str, cluster: Cluster) -> bool:
        """Whether ``node`` serves clients and reaches its running peers. Never raises for an
        unreachable node: False."""
        raise NotImplementedError

    def client(self, node: str, cluster: Cluster) -> Client:
        """A new client of ``node`` (it connects on its first operation)."""
        raise NotImplementedError

    async def settled(self, cluster: Cluster) -> bool:
        """Whether the cluster as a whole can serve (every ready node agrees on a leader or a
        primary, say). Asked once every running node is ready; by default, True."""
        return True

    def guarantee(self, spec: TestSpec) -> str:
        """The guarantee a test expects unless it says otherwise (``--expect``): what users rely
        on (one of :data:`kvcheck.checkers.guarantees.GUARANTEES`), not what a configuration
        promises. By default ``linearizable`` for registers, ``no-lost-writes`` for sets."""
        return "no-lost-writes" if spec.workload == "set" else "linearizable"

    def validate(self, spec: TestSpec) -> None:
        """Raise :class:`DatabaseError`, naming the option, if this database cannot run
        ``spec`` as specified (beyond the nemesis kinds of :attr:`unsupported_faults`, which
        are checked for it). By default every test is accepted."""

    def describe(self, spec: TestSpec) -> dict[str, Any]:
        """What ``test.json`` records of this database's configuration for ``spec``, beside
        its name and options (the reference store: N, W, R, versioning, sloppy quorums)."""
        return {}

    async def primary(self, cluster: Cluster) -> str | None:
        """The node that leads now, if one does (with :attr:`Capability.PRIMARY`)."""
        return None

    async def replica_state(self, node: str, keys: Sequence[str],
                            cluster: Cluster) -> dict[str, Any] | None:
        """What ``node`` itself stores for each key, as ``final-state.json`` records it; None
        when the node does not answer (with :attr:`Capability.REPLICA_STATE`)."""
        return None

    async def replicas(self, keys: Sequence[str], cluster: Cluster) -> dict[str, list[str]]:
        """The nodes that should hold each key once the cluster has converged (with
        :attr:`Capability.REPLICA_STATE`)."""
        return {}

    async def leave(self, node: str, cluster: Cluster) -> None:
        """Decommission ``node`` and return once it has left; the backend then stops it (with
        :attr:`Capability.MEMBERSHIP`). Raises :class:`DatabaseError` if it cannot."""
        raise DatabaseError(f"{self.name} cannot remove a member")
