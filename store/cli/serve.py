"""``kvstore serve``: run one node, configured by flags over a TOML file over the defaults."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import trio

from kvcheck.store.bugs import describe_bugs
from kvcheck.store.cli.exitcodes import Exit
from kvcheck.store.cli.settings import add_cluster_settings, given
from kvcheck.store.config import (
    Address,
    ConfigError,
    NodeConfig,
    NodeSpec,
    cluster_from_mapping,
    load_toml,
    parse_peers,
    peers_from_mapping,
)
from kvcheck.store.storage import CorruptLogError, StorageError

_NODE = NodeSpec.__dataclass_fields__
_REQUIRED = "required, as a flag or in --config"


def register(commands: Any) -> None:
    """Add ``serve`` to the ``kvstore`` subcommands ``commands``."""
    serve = commands.add_parser(
        "serve", help="run one node",
        description="Run one node of a cluster until SIGINT or SIGTERM. Each flag overrides "
        "the same setting of --config's TOML file (docs/store.md); what neither gives takes "
        "its default.")
    serve.add_argument("--config", type=Path, metavar="FILE",
                       help="a TOML file of these settings (flags override it)")
    serve.add_argument("--node-id", help=f"this node's id, unique in the cluster ({_REQUIRED})")
    serve.add_argument("--listen", metavar="HOST:PORT",
                       help=f"where clients and peers reach this node ({_REQUIRED})")
    serve.add_argument("--data-dir", type=Path, metavar="DIR",
                       help=f"where this node keeps its data ({_REQUIRED})")
    serve.add_argument("--peers", metavar="ID=HOST:PORT,...",
                       help="the other nodes of a new cluster (default: none, a cluster of one)")
    serve.add_argument("--join", metavar="HOST:PORT",
                       help="join a running cluster through this member, instead of --peers")
    serve.add_argument("--zone",
                       help=f"this node's zone: replicas of a key go to distinct zones first "
                       f"(default: {_NODE['zone'].default})")
    serve.add_argument("--weight", type=int,
                       help=f"this node's share of the ring, in units of --vnodes-per-weight "
                       f"virtual nodes (default: {_NODE['weight'].default})")
    serve.add_argument("--secret-file", type=Path, metavar="FILE",
                       help="the cluster's secret, the same file on every member: peers prove "
                       "they hold it (default: none; peers are not authenticated, and the node "
                       "warns). `kvstore secret` makes one")
    serve.add_argument("--log-level", default="info",
                       choices=["debug", "info", "warning", "error"],
                       help="what the node logs (default: %(default)s)")
    serve.add_argument("--bug", action="append", default=[], metavar="NAME",
                       help="switch on a deliberate mistake, for testing a tester (repeatable; "
                       "--bug help lists them; never on by default)")
    add_cluster_settings(serve, "cluster settings (every node of a cluster must agree; each "
                         "overrides --config's [cluster] table)")
    serve.set_defaults(handler=_serve)


def node_config(args: argparse.Namespace) -> NodeConfig:
    """Combine the TOML file (if any) and the flags. Raises ConfigError."""
    raw: dict[str, Any] = load_toml(args.config) if args.config else {}
    cluster = dict(raw.get("cluster", {}))
    cluster.update(given(args))
    if args.bug:
        cluster["bugs"] = (*cluster.get("bugs", ()), *args.bug)
    node_id = args.node_id or raw.get("node_id")
    listen = args.listen or raw.get("listen")
    data_dir = args.data_dir or (Path(raw["data_dir"]) if "data_dir" in raw else None)
    if not (node_id and listen and data_dir):
        missing = [flag for flag, value in (("--node-id", node_id), ("--listen", listen),
                                            ("--data-dir", data_dir)) if not value]
        raise ConfigError(f"missing {', '.join(missing)} (as flags or in --config)")
    peers = parse_peers(args.peers) if args.peers else peers_from_mapping(raw.get("peers", {}))
    join = args.join or raw.get("join")
    secret_file = args.secret_file or raw.get("secret_file")
    placed = {name: value for name, value in (("zone", args.zone or raw.get("zone")),
                                              ("weight", args.weight or raw.get("weight")))
              if value is not None}
    me = NodeSpec(node_id, Address.parse(listen), **placed)
    return NodeConfig(me, peers, data_dir, cluster_from_mapping(cluster),
                      Address.parse(join) if join else None,
                      Path(secret_file) if secret_file else None)


def _serve(args: argparse.Namespace) -> int:
    from kvcheck.store.server import serve

    if "help" in args.bug:
        print(describe_bugs())
        return Exit.OK
    config = node_config(args)
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s {config.me.node_id} %(levelname)s %(name)s: %(message)s")
    if config.cluster.bugs:
        logging.getLogger("kvcheck.store").warning(
            "running with deliberate bugs switched on: %s", ", ".join(config.cluster.bugs))
    try:
        trio.run(serve, config)
    except (CorruptLogError, StorageError) as exc:
        print(f"kvstore: cannot start: {exc}", file=sys.stderr)
        return Exit.CANNOT_START
    except OSError as exc:
        print(f"kvstore: cannot listen on {config.me.address}: {exc.strerror}", file=sys.stderr)
        return Exit.CANNOT_START
    return Exit.OK
