"""The ``kvstore`` command: run a node, talk to one, or run a local cluster.

Exit codes: 0 success; 1 key not found (``get``); 2 bad arguments or configuration;
3 the store could not serve the request (no quorum); 4 the node could not be reached.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

from kvcheck import __version__
from kvcheck.store.client import ConnectionFailed, RequestRejected, StoreClient, StoreError
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

EXIT_NOT_FOUND, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_UNREACHABLE = 1, 2, 3, 4


def parse_bool(text: str) -> bool:
    """``true``/``on``/``yes``/``1`` or ``false``/``off``/``no``/``0``."""
    words = {"true": True, "on": True, "yes": True, "1": True,
             "false": False, "off": False, "no": False, "0": False}
    if text.lower() not in words:
        raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")
    return words[text.lower()]


DEFAULT_NODE = "127.0.0.1:7001"
CLUSTER_SETTINGS = {
    "n": int, "w": int, "r": int, "versioning": str, "fsync": str, "fsync_interval_ms": int,
    "request_timeout_ms": int, "vclock_max_entries": int, "tombstone_grace_ms": int,
    "vnodes_per_weight": int, "gossip_interval_ms": int, "gossip_fanout": int,
    "suspect_after_ms": int, "probe_timeout_ms": int, "sloppy_quorum": parse_bool,
    "antientropy_interval_ms": int, "read_repair": str,
    "cluster_name": str, "memtable_bytes": int,
}


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cluster settings (shared by every node)")
    for name, kind in CLUSTER_SETTINGS.items():
        flag = "--" + name.replace("_", "-")
        choices = {"versioning": ["vclock", "lww"], "read_repair": ["async", "blocking"],
                   "fsync": ["always", "interval", "never"]}.get(name)
        group.add_argument(flag, dest=name, type=kind, choices=choices, default=None,
                           help=argparse.SUPPRESS if name == "cluster_name" else None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvstore", description="A Dynamo-style replicated key-value store.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run one node")
    serve.add_argument("--config", type=Path, help="TOML file (flags override it)")
    serve.add_argument("--node-id")
    serve.add_argument("--listen", help="HOST:PORT for clients and peers")
    serve.add_argument("--peers", help="ID=HOST:PORT,... of the other nodes (a new cluster)")
    serve.add_argument("--join", metavar="HOST:PORT",
                       help="join a running cluster through this member instead")
    serve.add_argument("--data-dir", type=Path)
    serve.add_argument("--zone")
    serve.add_argument("--weight", type=int)
    serve.add_argument("--log-level", default="info",
                       choices=["debug", "info", "warning", "error"])
    _add_cluster_options(serve)

    for name, text in (("get", "read a key"), ("put", "write a key"),
                       ("delete", "delete a key"), ("status", "show a node's status"),
                       ("leave", "decommission a node: hand its keys over, then leave")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--node", default=DEFAULT_NODE, help=f"HOST:PORT (default {DEFAULT_NODE})")
        sub.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
        if name == "leave":
            sub.add_argument("--wait", action="store_true",
                             help="wait until the node has left, showing progress")
        elif name != "status":
            sub.add_argument("key")
        if name == "put":
            sub.add_argument("value", help="the value, or - to read it from standard input")
        if name in ("put", "delete"):
            sub.add_argument("--context", default="", help="causal context from a get")
            sub.add_argument("--w", type=int, help="write quorum for this request")
        if name == "get":
            sub.add_argument("--r", type=int, help="read quorum for this request")

    cluster = commands.add_parser("cluster", help="run a local cluster until Ctrl-C")
    cluster.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    cluster.add_argument("--base-port", type=int, default=7001,
                         help="port of n1; n2 gets the next, and so on (default 7001)")
    cluster.add_argument("--host", default="127.0.0.1")
    cluster.add_argument("--data-root", type=Path,
                         help="one data directory per node under it (default: a new temporary "
                              "directory)")
    _add_cluster_options(cluster)
    return parser


def node_config(args: argparse.Namespace) -> NodeConfig:
    """Combine the TOML file (if any) and the flags. Raises ConfigError."""
    raw: dict[str, Any] = load_toml(args.config) if args.config else {}
    cluster = dict(raw.get("cluster", {}))
    cluster.update({k: getattr(args, k) for k in CLUSTER_SETTINGS if getattr(args, k) is not None})
    node_id = args.node_id or raw.get("node_id")
    listen = args.listen or raw.get("listen")
    data_dir = args.data_dir or (Path(raw["data_dir"]) if "data_dir" in raw else None)
    missing = [flag for flag, value in (("--node-id", node_id), ("--listen", listen),
                                        ("--data-dir", data_dir)) if not value]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)} (as flags or in --config)")
    peers = parse_peers(args.peers) if args.peers else peers_from_mapping(raw.get("peers", {}))
    join = args.join or raw.get("join")
    me = NodeSpec(node_id, Address.parse(listen), args.zone or raw.get("zone", "default"),
                  args.weight or raw.get("weight", 1))
    return NodeConfig(me, peers, data_dir, cluster_from_mapping(cluster),
                      Address.parse(join) if join else None)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "cluster":
            return trio.run(_cluster, args)
        return trio.run(_talk, args)
    except ConfigError as exc:
        print(f"kvstore: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _serve(args: argparse.Namespace) -> int:
    from kvcheck.store.server import serve

    config = node_config(args)
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s {config.me.node_id} %(levelname)s %(name)s: %(message)s")
    try:
        trio.run(serve, config)
    except (CorruptLogError, StorageError) as exc:
        print(f"kvstore: cannot start: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"kvstore: cannot listen on {config.me.address}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


async def _talk(args: argparse.Namespace) -> int:
    address = Address.parse(args.node)
    async with StoreClient(address.host, address.port, timeout=args.timeout) as client:
        try:
            if args.command == "status":
                print(json.dumps(await client.status(), indent=2))
            elif args.command == "leave":
                await client.leave()
                print(f"{args.node} is leaving", file=sys.stderr)
                if args.wait:
                    await _wait_until_left(client)
            elif args.command == "get":
                read = await client.get(args.key, r=args.r)
                return _print_read(read.values, read.context)
            elif args.command == "put":
                value = sys.stdin.buffer.read() if args.value == "-" else args.value.encode()
                context = await client.put(args.key, value, args.context, w=args.w)
                print(f"context: {context}", file=sys.stderr)
            else:
                context = await client.delete(args.key, args.context, w=args.w)
                print(f"context: {context}", file=sys.stderr)
        except RequestRejected as exc:
            print(f"kvstore: rejected: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except ConnectionFailed as exc:
            print(f"kvstore: {exc} (write applied: {exc.applied})", file=sys.stderr)
            return EXIT_UNREACHABLE
        except StoreError as exc:
            print(f"kvstore: {exc} (write applied: {exc.applied})", file=sys.stderr)
            return EXIT_UNAVAILABLE
    return 0


async def _wait_until_left(client: StoreClient) -> None:
    """Poll the node's status until its record says ``left``, printing what it waits for
    whenever that changes."""
    said = ""
    while True:
        status = await client.status()
        layout = status["node"]["placement"]
        records = {r["node_id"]: r for r in layout["records"]}
        me = records[status["node_id"]]
        if me["status"] == "left":
            print(f"{status['node_id']} has left the cluster; it can be stopped", file=sys.stderr)
            return
        down = {m["node_id"] for m in status["membership"] if m["state"] == "down"}
        line = f"{me['status']}: " + _leave_progress(layout, records, down,
                                                     status["cluster"]["n"])
        if line != said:
            print(line, file=sys.stderr)
            said = line
        await trio.sleep(0.5)


def _leave_progress(layout: dict[str, Any], records: dict[str, dict[str, Any]],
                    down: set[str], n: int) -> str:
    """What a leave waits for, in words, from a ``/status`` layout (``down``: members the
    node's gossip shows down, which the change does not wait for)."""
    if not layout["in_transition"]:
        staying = sum(r["status"] in ("joining", "normal") for r in records.values())
        return (f"on hold: {staying} members would remain, the cluster needs n={n}; "
                f"it goes on once members join")
    behind = [i for i, r in records.items()
              if r["status"] != "left" and not r["uses_this_placement"] and i not in down]
    if behind:
        return f"waiting until every member has seen the change (not yet: {', '.join(behind)})"
    streaming = [g for g in layout["gainers"] if not records[g]["streamed_this_transition"]]
    if streaming:
        return f"keys are moving to their new replicas (still pulling: {', '.join(streaming)})"
    return "switching"


def _print_read(values: tuple[bytes | None, ...], context: str) -> int:
    out = sys.stdout.buffer
    if not values:
        print("not found", file=sys.stderr)
    elif len(values) == 1:
        out.write(values[0] or b"")
        out.write(b"\n")
    else:
        for i, value in enumerate(values, 1):
            out.write(f"sibling {i}: ".encode() + (b"<deleted>" if value is None else value))
            out.write(b"\n")
    out.flush()
    if context:
        print(f"context: {context}", file=sys.stderr)
    return 0 if values else EXIT_NOT_FOUND


async def _cluster(args: argparse.Namespace) -> int:
    """Start ``--nodes`` node processes on one host; stop them all on Ctrl-C or SIGTERM."""
    if not 1 <= args.nodes <= 64:
        raise ConfigError("--nodes must be from 1 to 64")
    settings = {k: getattr(args, k) for k in CLUSTER_SETTINGS if getattr(args, k) is not None}
    settings.setdefault("n", min(3, args.nodes))
    settings.setdefault("w", settings["n"] // 2 + 1)
    settings.setdefault("r", settings["n"] // 2 + 1)
    cluster_from_mapping(settings)  # validate before starting anything
    root = args.data_root or Path(tempfile.mkdtemp(prefix="kvstore-cluster-"))
    ids = [f"n{i}" for i in range(1, args.nodes + 1)]
    addresses = {node: f"{args.host}:{args.base_port + i}" for i, node in enumerate(ids)}
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    processes: list[trio.Process] = []
    try:
        async with trio.open_nursery() as nursery:
            for node in ids:
                peers = ",".join(f"{p}={a}" for p, a in addresses.items() if p != node)
                root.joinpath(node).mkdir(parents=True, exist_ok=True)
                log_file = (root / f"{node}.log").open("ab")
                command = [sys.executable, "-m", "kvcheck.store", "serve", "--node-id", node,
                           "--listen", addresses[node], "--peers", peers,
                           "--data-dir", str(root / node), *flags]
                processes.append(await nursery.start(
                    _supervise, command, log_file, node, nursery.cancel_scope))
            await _wait_ready(addresses)
            _print_cluster(addresses, root, settings)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    print("stopping the cluster ...", file=sys.stderr)
                    nursery.cancel_scope.cancel()
                    break
    finally:
        with trio.CancelScope(shield=True):
            await _stop(processes)
    print(f"stopped; data and logs kept in {root}", file=sys.stderr)
    return 0


async def _supervise(command: list[str], log_file: Any, node: str, scope: trio.CancelScope,
                     task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    process = await trio.lowlevel.open_process(command, stdout=log_file, stderr=log_file,
                                               start_new_session=True)
    task_status.started(process)
    code = await process.wait()
    if not scope.cancel_called:
        print(f"kvstore: node {node} exited with code {code}; stopping the cluster "
              f"(see {log_file.name})", file=sys.stderr)
        scope.cancel()


async def _wait_ready(addresses: dict[str, str]) -> None:
    with trio.fail_after(30):
        for address in addresses.values():
            host, port = address.rsplit(":", 1)
            while True:
                try:
                    async with StoreClient(host, int(port), timeout=1) as client:
                        await client.status()
                    break
                except StoreError:
                    await trio.sleep(0.1)


async def _stop(processes: list[trio.Process]) -> None:
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    with trio.move_on_after(10):
        for process in processes:
            await process.wait()
    for process in processes:
        if process.returncode is None:
            process.kill()
            await process.wait()


def _print_cluster(addresses: dict[str, str], root: Path, settings: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"kvstore cluster: n={settings['n']} w={settings['w']} r={settings['r']}")
    for column in ("node", "address", "data and log"):
        table.add_column(column)
    for node, address in addresses.items():
        table.add_row(node, address, f"{root / node}  {root / (node + '.log')}")
    console = Console(stderr=True)
    console.print(table)
    first = next(iter(addresses.values()))
    console.print(f"try: kvstore put --node {first} hello world; kvstore get --node {first} "
                  "hello\nCtrl-C stops the cluster.")


if __name__ == "__main__":
    sys.exit(main())
