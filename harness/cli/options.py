"""Options that several ``kvcheck`` commands share, defined once so that they cannot drift.

``kvcheck run`` and ``kvcheck cluster up`` both start a store cluster and take the same cluster
options (:func:`add_cluster_options`); where their defaults differ, on purpose, :data:`FOR_TESTS`
and :data:`BY_HAND` sit side by side and each ``--help`` says why.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from kvcheck.harness.cli.values import node_values, node_weights
from kvcheck.harness.databases import BUILTIN
from kvcheck.harness.spec import SpecError, TestSpec
from kvcheck.store.config import ClusterConfig
from kvcheck.store.versions import Versioning

#: The defaults of every option a test specification takes.
SPEC_DEFAULTS = TestSpec()


@dataclass(frozen=True, slots=True)
class ClusterDefaults:
    """The defaults of the cluster options that differ between commands, with the reason."""

    nodes: int
    nodes_help: str
    sloppy_quorum: bool
    sloppy_quorum_help: str
    read_repair: str
    read_repair_help: str


#: ``kvcheck run``: a test, judged against the guarantee its configuration promises.
FOR_TESTS = ClusterDefaults(
    nodes=0,
    nodes_help=f"cluster size (default: {SPEC_DEFAULTS.nodes}; with --backend ssh, the number "
    "of hosts)",
    sloppy_quorum=SPEC_DEFAULTS.sloppy_quorum,
    sloppy_quorum_help="sloppy quorums with hinted handoff. Default: off, unlike the store: "
    "with strict quorums and W + R > N a test expects no stale reads, which it can check; "
    "with sloppy quorums it expects only eventual convergence (docs/running.md)",
    read_repair=SPEC_DEFAULTS.read_repair,
    read_repair_help="async: a get answers, then repairs the replicas that answered with less; "
    "blocking: it repairs them first, or fails. Default: blocking, unlike the store: with "
    "async repair a read may answer with a write only one replica holds, so a test expects "
    "only eventual convergence (docs/sim.md)")

#: ``kvcheck cluster up``: a cluster to use by hand, configured as the store runs by default.
BY_HAND = ClusterDefaults(
    nodes=ClusterConfig().n,
    nodes_help="nodes to start with (default: %(default)s, one per replica of a key)",
    sloppy_quorum=ClusterConfig().sloppy_quorum,
    sloppy_quorum_help="sloppy quorums with hinted handoff. Default: on, as the store runs by "
    "default (kvcheck run defaults to off, so that a test with W + R > N can expect no stale "
    "reads)",
    read_repair=ClusterConfig().read_repair,
    read_repair_help="async: a get answers, then repairs the replicas that answered with less; "
    "blocking: it repairs them first, or fails. Default: async, as the store runs by default "
    "(kvcheck run defaults to blocking)")


def add_cluster_options(parser: argparse.ArgumentParser, defaults: ClusterDefaults) -> None:
    """``--nodes``, ``--n``, ``--w``, ``--r``, ``--versioning``, ``--sloppy-quorum``,
    ``--read-repair`` and the zone options (:func:`add_zone_options`)."""
    parser.add_argument("--nodes", type=int, default=defaults.nodes, help=defaults.nodes_help)
    parser.add_argument("--n", type=int, default=SPEC_DEFAULTS.n,
                        help="replicas per key (default: %(default)s)")
    parser.add_argument("--w", type=int, default=SPEC_DEFAULTS.w,
                        help="write quorum (default: %(default)s)")
    parser.add_argument("--r", type=int, default=SPEC_DEFAULTS.r,
                        help="read quorum (default: %(default)s)")
    parser.add_argument("--versioning", choices=get_args(Versioning),
                        default=SPEC_DEFAULTS.versioning,
                        help="vclock: siblings; lww: last write wins, by wall clock "
                        "(default: %(default)s)")
    parser.add_argument("--sloppy-quorum", action=argparse.BooleanOptionalAction,
                        default=defaults.sloppy_quorum, help=defaults.sloppy_quorum_help)
    parser.add_argument("--read-repair", choices=("async", "blocking"),
                        default=defaults.read_repair, help=defaults.read_repair_help)
    add_zone_options(parser)


def add_zone_options(parser: argparse.ArgumentParser) -> None:
    """``--zones``, ``--zone-map``, ``--weights`` and ``--zone-latency-ms``."""
    zones = parser.add_mutually_exclusive_group()
    zones.add_argument("--zones", type=int, default=SPEC_DEFAULTS.zones, metavar="Z",
                       help="spread the nodes over Z zones (data centers) in turn: n1 in a, n2 "
                       "in b, ...; the store puts a key's replicas in distinct zones first "
                       "(default: %(default)s)")
    zones.add_argument("--zone-map", type=node_values, default=(), metavar="N1=A,N2=A,...",
                       help="each node's zone, instead of --zones")
    parser.add_argument("--weights", type=node_weights, default=(), metavar="N1=2,N2=1,...",
                        help="nodes' weights, their shares of the reference store's ring "
                        "(default: 1 each)")
    parser.add_argument("--zone-latency-ms", type=float, default=SPEC_DEFAULTS.zone_latency_ms,
                        metavar="MS", help="delay every packet between nodes of two zones by "
                        "MS, each way (none within a zone): always simulated; in Docker where "
                        "the kernel has netem, else the run says it is unavailable "
                        "(default: none)")


def add_host_options(parser: argparse.ArgumentParser) -> None:
    """``--node``, ``--nodes-file`` and the SSH options of ``--backend ssh``."""
    parser.add_argument("--node", action="append", default=[], metavar="HOST",
                        help="a host for --backend ssh (repeatable, in order: n1 on the first; "
                        "hosts beyond --nodes are spares for the membership nemesis)")
    parser.add_argument("--nodes-file", type=Path, metavar="FILE",
                        help="hosts for --backend ssh, one per line (# comments), as in Jepsen, "
                        "after those of --node")
    parser.add_argument("--ssh-user", default="", metavar="USER",
                        help="log in as USER (default: as your SSH configuration says)")
    parser.add_argument("--ssh-key", default="", metavar="FILE",
                        help="the identity file (default: your SSH agent and configuration)")
    parser.add_argument("--ssh-port", type=int, default=0, metavar="PORT",
                        help="the hosts' SSH port (default: as your SSH configuration says)")
    parser.add_argument("--ssh-config", default="", metavar="FILE",
                        help="an SSH configuration file instead of ~/.ssh/config (ssh -F)")


def host_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`TestSpec` fields :func:`add_host_options` sets. Raises SpecError for a
    nodes file that cannot be read."""
    hosts = list(args.node)
    if args.nodes_file is not None:
        try:
            lines = args.nodes_file.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(f"--nodes-file {args.nodes_file}: {exc}") from None
        hosts += [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]
    return {"hosts": tuple(hosts), "ssh_user": args.ssh_user,
            "ssh_key": str(Path(args.ssh_key).resolve()) if args.ssh_key else "",
            "ssh_port": args.ssh_port,
            "ssh_config": str(Path(args.ssh_config).resolve()) if args.ssh_config else ""}


def zone_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`TestSpec` fields :func:`add_zone_options` sets."""
    return {"zones": args.zones, "zone_map": args.zone_map, "weights": args.weights,
            "zone_latency_ms": args.zone_latency_ms}


def add_database(parser: argparse.ArgumentParser) -> None:
    """``--db NAME`` and ``--db-opt KEY=VALUE`` (repeatable)."""
    parser.add_argument("--db", default=SPEC_DEFAULTS.db, metavar="NAME",
                        help="the database under test: "
                        f"{', '.join(BUILTIN)}, or package.module:factory for your own "
                        "(docs/your-store.md); --db help lists them, with their options and the "
                        "faults each can undergo (default: %(default)s)")
    parser.add_argument("--db-opt", action="append", type=db_option, default=[],
                        metavar="KEY=VALUE", help="a setting of the database (repeatable; --db "
                        "help lists each database's)")


def db_option(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` as a pair. Raises argparse.ArgumentTypeError without ``=`` or a key."""
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    return key.strip(), value.strip()


def add_histories(parser: argparse.ArgumentParser, help: str) -> None:
    """``--histories DIR`` (default ``histories``, relative to where kvcheck runs)."""
    parser.add_argument("--histories", type=Path, default=Path("histories"), metavar="DIR",
                        help=help)


@dataclass(frozen=True, slots=True)
class Concurrency:
    """How many client workers: a number, or so many per node (Jepsen's ``2n``)."""

    count: int
    per_node: bool = False

    @classmethod
    def parse(cls, text: str) -> Concurrency:
        """``8`` or ``2n``. Raises argparse.ArgumentTypeError for anything else."""
        match = re.fullmatch(r"\s*(\d+)\s*(n?)\s*", text)
        if not match:
            raise argparse.ArgumentTypeError(
                f"expected a number of workers, or Nn for N per node (like 2n), not {text!r}")
        return cls(int(match[1]), per_node=bool(match[2]))

    def workers(self, nodes: int) -> int:
        """The number of workers for a cluster of ``nodes``."""
        return self.count * nodes if self.per_node else self.count

    def __str__(self) -> str:
        return f"{self.count}n" if self.per_node else str(self.count)


def add_concurrency(parser: argparse.ArgumentParser) -> None:
    """``--concurrency 8`` (in all) or ``--concurrency 2n`` (per node); not given, the test's
    default (two per node)."""
    parser.add_argument("--concurrency", type=Concurrency.parse, default=None, metavar="N|Nn",
                        help="client workers: a number (8), or Nn for N per node (3n); "
                        "default: two per node")
