"""A test's specification: one frozen value, written to ``test.json``.

Like a Jepsen test map: the database, the cluster, the workload, the nemesis, the checkers —
with defaults that make ``kvcheck run`` meaningful on its own. The database (``db``, the
reference store unless another is named; :mod:`kvcheck.harness.databases`) is loaded and asked
when the spec is built: whether it takes the ``db_options`` given (they are completed with its
defaults), whether it can undergo the nemesis kinds asked for, and whether it accepts the rest.
The *expected guarantee* is the database's unless ``expect`` declares one, and decides the
checkers the run gets (:mod:`kvcheck.checkers.guarantees`), less those that need a capability
the database lacks (:attr:`TestSpec.skipped_checkers` says why).

For the reference store the guarantee follows from its configuration. Tests run strict quorums
and blocking read repair unless asked otherwise (the store's own defaults are sloppy and async):
strict quorums with W + R > N and blocking read repair promise no stale reads, which a test can
check; sloppy quorums, or async read repair, promise only that replicas converge (by hinted
handoff, read repair and anti-entropy, within seconds of a heal) — an async repair that never
lands (a full disk, a power cut) lets a later quorum read miss what an earlier one returned.
``linearizable`` can be asked for; the reference store does not promise it, so such a test is
expected to fail, and shows how.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any, Literal

from kvcheck.checkers.guarantees import DEFAULT_CHECKERS, GUARANTEES, default_checkers, shown_by
from kvcheck.harness.databases import (
    CHECKER_NEEDS,
    Capability,
    Database,
    DatabaseError,
    load,
    resolve_options,
)
from kvcheck.nemesis import SIMULATED_ONLY, NemesisError, Planned, check_nodes, parse_kinds
from kvcheck.nemesis.plan import usable_topologies
from kvcheck.store.bugs import check_bugs
from kvcheck.store.cli.settings import as_flags

__all__ = ["GUARANTEES", "SpecError", "TestSpec", "Workload"]

Workload = Literal["register", "set"]


class SpecError(ValueError):
    """An impossible test specification; the message names the option."""


@dataclass(frozen=True, slots=True)
class TestSpec:
    """Everything that defines a run. Validated when built (raises :class:`SpecError`)."""

    __test__ = False  # not a pytest test class

    name: str = "kvcheck"
    db: str = "kvstore"
    #: ``--db-opt`` settings, as (name, value) pairs; completed with the database's defaults.
    db_options: tuple[tuple[str, str], ...] = ()
    nodes: int = 5
    concurrency: int = 0  # 0: two workers per node
    rate: float = 100.0
    time_limit: float = 60.0
    workload: Workload = "register"
    #: The fault kinds drawn; with a ``schedule``, the kinds it holds.
    nemesis: tuple[str, ...] = ("partition",)
    #: ``overlap``: each kind on its own timeline; ``turns``: one fault at a time.
    nemesis_mode: Literal["overlap", "turns"] = "overlap"
    #: Faults to run instead of drawing them (``--schedule``); empty: drawn.
    schedule: tuple[Planned, ...] = ()
    #: The partition topologies drawn from; empty: every one the nodes and database allow.
    partition_topologies: tuple[str, ...] = ()
    nemesis_interval: float = 10.0
    recovery_time: float = 10.0
    n: int = 3
    w: int = 2
    r: int = 2
    versioning: Literal["vclock", "lww"] = "vclock"
    sloppy_quorum: bool = False  # the store's default is sloppy; tests choose strict unless asked
    #: ``async``: a get answers, then repairs stale replicas; ``blocking``: it repairs first
    #: (the store's default is async; tests choose blocking unless asked).
    read_repair: Literal["async", "blocking"] = "blocking"
    expect: str = ""  # "": the database's (the reference store's: from n, w, r, sloppy_quorum)
    seed: int = field(default_factory=lambda: random.randrange(2**31))
    leave_running: bool = False
    request_timeout_ms: int = 1000
    op_timeout: float = 5.0
    #: ``docker``: a container per node; ``sim``: the reference store simulated, in virtual time.
    backend: Literal["docker", "sim"] = "docker"
    #: Deliberate mistakes switched on in every node of the reference store (store/bugs.py).
    bugs: tuple[str, ...] = ()
    #: Operations all workers together issue at most; 0: as many as the time limit allows.
    operation_limit: int = 0

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise SpecError(f"--name must be a plain name, not {self.name!r}")
        if not 1 <= self.nodes <= 32:
            raise SpecError("--nodes must be from 1 to 32")
        if self.operation_limit < 0:
            raise SpecError("--operation-limit must be >= 0 (0: no limit)")
        if self.concurrency < 0 or self.rate <= 0 or self.time_limit <= 0:
            raise SpecError("--concurrency must be >= 0, --rate and --time-limit > 0")
        if self.nemesis_interval <= 0 or self.recovery_time < 0:
            raise SpecError("--nemesis-interval must be > 0 and --recovery-time >= 0")
        if self.workload not in DEFAULT_CHECKERS:
            raise SpecError(f"--workload must be register or set, not {self.workload!r}")
        if self.versioning not in ("vclock", "lww"):
            raise SpecError(f"--versioning must be vclock or lww, not {self.versioning!r}")
        if self.expect and self.expect not in GUARANTEES:
            raise SpecError(f"--expect must be one of {', '.join(GUARANTEES)}")
        if self.expect and self.workload not in shown_by(self.expect):
            raise SpecError(f"--expect {self.expect} cannot be judged on the {self.workload} "
                            f"workload: use --workload {' or '.join(shown_by(self.expect))}")
        if self.backend not in ("docker", "sim"):
            raise SpecError(f"--backend must be docker or sim, not {self.backend!r}")
        if self.backend == "sim" and self.db != "kvstore":
            raise SpecError("--backend sim runs the reference store only (--db kvstore); "
                            f"run --db {self.db} with --backend docker")
        try:
            object.__setattr__(self, "bugs", check_bugs(self.bugs))
        except ValueError as exc:
            raise SpecError(f"--bug: {exc}") from None
        if self.bugs and self.db != "kvstore":
            raise SpecError("--bug switches on mistakes in the reference store (--db kvstore) "
                            f"only, not in {self.db}")
        if self.backend == "sim" and self.leave_running:
            raise SpecError("--leave-running needs --backend docker: a simulated cluster "
                            "lives only as long as its run")
        if self.request_timeout_ms < 1:
            raise SpecError("--request-timeout-ms must be >= 1")
        if self.read_repair not in ("async", "blocking"):
            raise SpecError(f"--read-repair must be async or blocking, not {self.read_repair!r}")
        if self.nemesis_mode not in ("overlap", "turns"):
            raise SpecError(f"--nemesis-mode must be overlap or turns, not {self.nemesis_mode!r}")
        if self.schedule:
            object.__setattr__(self, "nemesis", tuple(dict.fromkeys(
                f.kind for f in self.schedule)))
        try:
            kinds = parse_kinds(",".join(self.nemesis))
            check_nodes(self.schedule, self.node_ids, self.spare_node)
        except ValueError as exc:
            raise SpecError(str(exc)) from None
        if self.nodes < 2 and {"partition", "packet"} & set(kinds):
            raise SpecError("--nemesis partition and packet need at least 2 nodes")
        try:
            database = self.database
            options = resolve_options(database, dict(self.db_options))
            database.validate(self)
        except DatabaseError as exc:
            raise SpecError(str(exc)) from None
        object.__setattr__(self, "db_options", tuple(sorted(options.items())))
        for kind in kinds:
            if kind in SIMULATED_ONLY and self.backend != "sim":
                raise SpecError(f"--nemesis {kind} needs --backend sim: {SIMULATED_ONLY[kind]}")
            if kind in database.unsupported_faults:
                raise SpecError(f"--nemesis {kind} is not supported for --db {self.db}: "
                                f"{database.unsupported_faults[kind]}")
        if not self.expect:
            expected = database.guarantee(self)
            if expected not in GUARANTEES or self.workload not in shown_by(expected):
                raise SpecError(f"--db {self.db} expects {expected!r} of the {self.workload} "
                                "workload, which cannot show it: declare what to judge with "
                                f"--expect (one of {', '.join(GUARANTEES)})")
        if self.partition_topologies and "partition" not in kinds:
            raise SpecError("--partition-topologies needs the partition nemesis")
        try:
            usable_topologies(self.nodes, self.partition_topologies,
                              Capability.PRIMARY in database.capabilities)
        except NemesisError as exc:
            raise SpecError(f"--partition-topologies: {exc}") from None

    @property
    def database(self) -> Database:
        """The database under test. Raises DatabaseError if it cannot be loaded."""
        return load(self.db)

    @property
    def workers(self) -> int:
        return self.concurrency or 2 * self.nodes

    @property
    def node_ids(self) -> list[str]:
        return [f"n{i}" for i in range(1, self.nodes + 1)]

    @property
    def spare_node(self) -> str:
        """The node a membership fault adds: not a member when the test starts."""
        return f"n{self.nodes + 1}"

    def store_settings(self) -> dict[str, Any]:
        """The cluster settings of the reference store the test sets (ClusterConfig fields)."""
        return {"n": self.n, "w": self.w, "r": self.r, "versioning": self.versioning,
                "sloppy_quorum": self.sloppy_quorum, "read_repair": self.read_repair,
                "request_timeout_ms": self.request_timeout_ms, "bugs": self.bugs}

    def store_flags(self) -> list[str]:
        """The cluster settings every ``kvstore serve`` of the test gets."""
        return [*as_flags(self.store_settings()), *(f"--bug={bug}" for bug in self.bugs)]

    @property
    def guarantee(self) -> str:
        """The guarantee the verdict is about: ``expect``, else the database's."""
        return self.expect or self.database.guarantee(self)

    @property
    def checkers(self) -> tuple[str, ...]:
        """The checkers the run gets: the workload's, and those its guarantee needs, but for
        those the database cannot serve (:attr:`skipped_checkers`)."""
        return tuple(c for c in default_checkers(self.workload, self.guarantee)
                     if c not in self.skipped_checkers)

    @property
    def skipped_checkers(self) -> dict[str, str]:
        """Checkers the test would run, but that need what the database cannot do: why not."""
        capabilities = self.database.capabilities
        return {c: f"{self.db} cannot {needs.doing}, which the {c} checker needs"
                for c in default_checkers(self.workload, self.guarantee)
                if (needs := CHECKER_NEEDS.get(c)) is not None and needs not in capabilities}

    def to_json(self) -> dict[str, Any]:
        """``test.json``: every option (the reference store's settings only as the database
        describes them), plus what the checkers read."""
        common = {k: v for k, v in dataclasses.asdict(self).items() if k not in _STORE_SETTINGS}
        return {
            **common,
            **self.database.describe(self),
            "db_options": dict(self.db_options),
            "nemesis": list(self.nemesis),
            "schedule": [f.to_json() for f in self.schedule],
            "partition_topologies": list(self.partition_topologies),
            "nodes": self.node_ids,
            "node_count": self.nodes,
            "concurrency": self.workers,
            "guarantee": self.guarantee,
            "checkers": list(self.checkers),
            "skipped_checkers": self.skipped_checkers,
            "backend": self.backend,
        }


#: Options of the reference store alone (``--db kvstore``); ``test.json`` has them from
#: :meth:`Database.describe`.
_STORE_SETTINGS = frozenset({"n", "w", "r", "versioning", "sloppy_quorum", "read_repair",
                             "request_timeout_ms", "bugs"})
