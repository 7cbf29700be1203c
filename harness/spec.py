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

Nodes are spread over zones (data centers): ``zones`` of them in turn, or each where
``zone_map`` puts it; the spare, and nodes an autoscaler adds, take the zones in turn too
(:meth:`TestSpec.zone_of`). The reference store is configured with each node's zone and weight.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
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
from kvcheck.harness.ssh import SshOptions
from kvcheck.nemesis import (
    NEEDS_ZONES,
    SIMULATED_ONLY,
    ZONE_OUTAGES,
    NemesisError,
    Planned,
    check_nodes,
    parse_kinds,
)
from kvcheck.nemesis.plan import usable_topologies
from kvcheck.store.bugs import check_bugs
from kvcheck.store.cli.settings import as_flags

__all__ = ["GUARANTEES", "SpecError", "TestSpec", "Workload"]

Workload = Literal["register", "set"]
#: The zones ``--zones Z`` spreads the nodes over: the first Z of these.
ZONE_NAMES = tuple("abcdefghijklmnopqrstuvwxyz")
_ZONE_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
#: The fault kind each zone outage is made of, which the database must be able to undergo.
_ZONE_OUTAGE_KIND = {"network": "partition", "power": "kill"}


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
    #: ``docker``: a container per node; ``sim``: the reference store simulated, in virtual
    #: time; ``ssh``: a real host per node (``hosts``).
    backend: Literal["docker", "sim", "ssh"] = "docker"
    #: Deliberate mistakes switched on in every node of the reference store (store/bugs.py).
    bugs: tuple[str, ...] = ()
    #: Operations all workers together issue at most; 0: as many as the time limit allows.
    operation_limit: int = 0
    #: Zones (data centers) the nodes are spread over, in turn: n1 in ``a``, n2 in ``b``, ...
    zones: int = 1
    #: Each node's zone (``--zone-map``) instead; completed, when built, with every node's
    #: (and the spare's) zone, and ``zones`` set to how many the nodes are in.
    zone_map: tuple[tuple[str, str], ...] = ()
    #: Each node's weight, its share of the ring (the reference store); 1 where not given.
    weights: tuple[tuple[str, int], ...] = ()
    #: How a zone fault loses its zone: ``network`` or ``power``; empty: drawn for each.
    zone_outage: str = ""
    #: Milliseconds each packet between nodes of two zones is delayed (none within a zone).
    zone_latency_ms: float = 0.0
    #: ``--backend ssh``: the hosts, in order (n1 on the first); those beyond the nodes are
    #: spares. How to reach them: ``SshOptions`` fields (empty: the user's SSH configuration).
    hosts: tuple[str, ...] = ()
    ssh_user: str = ""
    ssh_key: str = ""
    ssh_port: int = 0
    ssh_config: str = ""

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
        if self.backend not in ("docker", "sim", "ssh"):
            raise SpecError(f"--backend must be docker, sim or ssh, not {self.backend!r}")
        if self.backend == "ssh" and len(self.hosts) < self.nodes:
            raise SpecError(f"--backend ssh runs a node per host: {self.nodes} nodes need "
                            f"{self.nodes} hosts (--node HOST, repeated, or --nodes-file), "
                            f"and {len(self.hosts)} were given")
        if self.hosts and self.backend != "ssh":
            raise SpecError("--node and --nodes-file name hosts for --backend ssh")
        if len(set(self.hosts)) < len(self.hosts):
            raise SpecError("a host is named twice: each node needs a host of its own")
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
        if self.backend != "docker" and self.leave_running:
            raise SpecError("--leave-running needs --backend docker: a simulated cluster "
                            "lives only as long as its run, and hosts are left as they were")
        if self.request_timeout_ms < 1:
            raise SpecError("--request-timeout-ms must be >= 1")
        if self.read_repair not in ("async", "blocking"):
            raise SpecError(f"--read-repair must be async or blocking, not {self.read_repair!r}")
        if self.nemesis_mode not in ("overlap", "turns"):
            raise SpecError(f"--nemesis-mode must be overlap or turns, not {self.nemesis_mode!r}")
        self._place()
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
        self._check_zone_faults(kinds)
        if self.weights and self.db != "kvstore":
            raise SpecError(f"--weights sets the reference store's node weights; {self.db} "
                            "has none")
        if self.partition_topologies and "partition" not in kinds:
            raise SpecError("--partition-topologies needs the partition nemesis")
        try:
            usable_topologies(self.nodes, self.partition_topologies,
                              Capability.PRIMARY in database.capabilities)
        except NemesisError as exc:
            raise SpecError(f"--partition-topologies: {exc}") from None

    def _place(self) -> None:
        """Check ``zones``, ``zone_map`` and ``weights``; complete the map and the count."""
        named = (*self.node_ids, self.spare_node)
        if self.zone_map:
            zones = dict(self.zone_map)
            if unknown := sorted(set(zones) - set(named)):
                raise SpecError(f"--zone-map names {', '.join(unknown)}, not a node of this "
                                f"test (its nodes are {', '.join(self.node_ids)})")
            if missing := [n for n in self.node_ids if n not in zones]:
                raise SpecError(f"--zone-map gives no zone for {', '.join(missing)}: give "
                                "every node's")
            count = len({zones[n] for n in self.node_ids})
            if self.zones not in (1, count):
                raise SpecError(f"--zones {self.zones} and a --zone-map of {count} zone(s) "
                                "disagree: give one of them")
        else:
            count = self.zones
            if not 1 <= count <= min(self.nodes, len(ZONE_NAMES)):
                raise SpecError(f"--zones must be from 1 to the number of nodes "
                                f"({min(self.nodes, len(ZONE_NAMES))} at most)")
            zones = {n: ZONE_NAMES[i % count] for i, n in enumerate(self.node_ids)}
        if bad := [z for z in zones.values() if not _ZONE_NAME.fullmatch(z)]:
            raise SpecError(f"zone {bad[0]!r} is not a zone name: letters, digits, - and _, "
                            "at most 32")
        if self.spare_node not in zones:  # it joins the zones in turn, as the nodes do
            used = sorted({zones[n] for n in self.node_ids})
            zones[self.spare_node] = used[self.nodes % len(used)]
        object.__setattr__(self, "zone_map", tuple((n, zones[n]) for n in named))
        object.__setattr__(self, "zones", count)
        weights = dict(self.weights)
        if unknown := sorted(set(weights) - set(named)):
            raise SpecError(f"--weights names {', '.join(unknown)}, not a node of this test")
        if bad := [n for n, w in weights.items() if type(w) is not int or not 1 <= w <= 64]:
            raise SpecError(f"--weights: the weight of {bad[0]} must be a whole number from "
                            "1 to 64")
        if self.zone_outage not in ("", *ZONE_OUTAGES):
            raise SpecError(f"--zone-outage must be {' or '.join(ZONE_OUTAGES)}, not "
                            f"{self.zone_outage!r}")
        if not (math.isfinite(self.zone_latency_ms) and self.zone_latency_ms >= 0):
            raise SpecError("--zone-latency-ms must be a number of milliseconds >= 0")
        if self.zone_latency_ms and count < 2:
            raise SpecError("--zone-latency-ms delays packets between zones: give --zones 2 "
                            "or more (or a --zone-map of two zones or more)")

    def _check_zone_faults(self, kinds: tuple[str, ...]) -> None:
        """Zone faults need two zones; a zone fault of a schedule loses exactly its zone."""
        if self.zone_outage and "zone" not in kinds:
            raise SpecError("--zone-outage needs the zone nemesis")
        if set(kinds) & NEEDS_ZONES and self.zones < 2:
            raise SpecError("--nemesis zone takes a zone away: spread the nodes over two zones "
                            "or more (--zones 2, or --zone-map)")
        if "zone" in kinds:
            outages = {str(f.params.get("outage")) for f in self.schedule if f.kind == "zone"}
            for outage in sorted(outages or {self.zone_outage} - {""} or set(ZONE_OUTAGES)):
                made_of = _ZONE_OUTAGE_KIND[outage]
                if why := self.database.unsupported_faults.get(made_of):
                    raise SpecError(f"--nemesis zone: a {outage} outage is a {made_of} of the "
                                    f"zone's nodes, which --db {self.db} cannot undergo: {why}"
                                    + ("" if self.zone_outage or self.schedule else
                                       " (choose the other with --zone-outage)"))
        if self.zone_latency_ms and self.backend != "sim" and "packet" in kinds:
            raise SpecError("--zone-latency-ms and --nemesis packet both need each node's "
                            "queueing discipline: use one of them, or --backend sim")
        zones = self.node_zones
        for planned in self.schedule:
            if planned.kind != "zone":
                continue
            zone = planned.params.get("zone")
            members = sorted(n for n in self.node_ids if zones[n] == zone)
            if sorted(planned.targets) != members:
                raise SpecError(f"the zone fault at {planned.at:g} s loses zone {zone!r}, "
                                f"whose nodes are {', '.join(members) or 'none'}, but its "
                                f"targets are {', '.join(planned.targets)}")

    @property
    def node_zones(self) -> dict[str, str]:
        """Each node's zone, the spare's too."""
        return dict(self.zone_map)

    def zone_of(self, node: str) -> str:
        """``node``'s zone; a node beyond the spare (one an autoscaler adds) takes the zones in
        turn, as the nodes do."""
        zones = dict(self.zone_map)
        if node in zones:
            return zones[node]
        used = sorted(set(zones.values()))
        index = int(node[1:]) - 1 if node[:1] == "n" and node[1:].isdigit() else 0
        return used[index % len(used)]

    @property
    def ssh_options(self) -> SshOptions:
        """How ``--backend ssh`` reaches the hosts."""
        return SshOptions.given(self.ssh_user, self.ssh_key, self.ssh_port, self.ssh_config)

    def weight(self, node: str) -> int:
        """``node``'s weight: its share of the ring."""
        return dict(self.weights).get(node, 1)

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
        common = {k: v for k, v in dataclasses.asdict(self).items()
                  if k not in _STORE_SETTINGS and k not in ("zones", "zone_map")}
        described = [*self.node_ids, *([self.spare_node] if "membership" in self.nemesis
                                       else [])]
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
            "zones": {n: z for n, z in self.zone_map if n in described},
            "weights": {n: self.weight(n) for n in described},
            "hosts": dict(zip([*self.node_ids, *(f"n{i}" for i in range(
                self.nodes + 1, len(self.hosts) + 1))], self.hosts, strict=False)),
        }


#: Options of the reference store alone (``--db kvstore``); ``test.json`` has them from
#: :meth:`Database.describe`.
_STORE_SETTINGS = frozenset({"n", "w", "r", "versioning", "sloppy_quorum", "read_repair",
                             "request_timeout_ms", "bugs"})
