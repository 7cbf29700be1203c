"""``kvstore cluster``: a local cluster of ``kvstore serve`` processes, until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio
from rich.table import Table

from kvcheck.store.cli.exitcodes import Exit
from kvcheck.store.cli.settings import add_cluster_settings, as_flags, given
from kvcheck.store.client import StoreClient, StoreError
from kvcheck.store.config import ClusterConfig, ConfigError, cluster_from_mapping
from kvcheck.store.peer_auth import new_secret, write_secret
from kvcheck.terminal import console


def register(commands: Any) -> None:
    """Add ``cluster`` to the ``kvstore`` subcommands ``commands``."""
    cluster = commands.add_parser(
        "cluster", help="run a local cluster until Ctrl-C",
        description="Start --nodes kvstore serve processes on one host, print where they "
        "listen, and stop them all on Ctrl-C or SIGTERM. Unless given, n is the store's default "
        "(or the number of nodes, if fewer), and w and r are majorities of n.")
    cluster.add_argument("--nodes", type=int, default=3,
                         help="how many nodes (default: %(default)s)")
    cluster.add_argument("--base-port", type=int, default=7001,
                         help="port of n1; n2 gets the next, and so on (default: %(default)s)")
    cluster.add_argument("--host", default="127.0.0.1",
                         help="address every node listens on (default: %(default)s)")
    cluster.add_argument("--data-root", type=Path, metavar="DIR",
                         help="one data directory per node under it (default: a new temporary "
                         "directory)")
    add_cluster_settings(cluster, "cluster settings (given to every node)")
    cluster.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    return trio.run(_cluster, args)


async def _cluster(args: argparse.Namespace) -> int:
    """Start ``--nodes`` node processes on one host; stop them all on Ctrl-C or SIGTERM."""
    if not 1 <= args.nodes <= 64:
        raise ConfigError("--nodes must be from 1 to 64")
    settings = given(args)
    settings.setdefault("n", min(ClusterConfig().n, args.nodes))
    settings.setdefault("w", settings["n"] // 2 + 1)
    settings.setdefault("r", settings["n"] // 2 + 1)
    cluster_from_mapping(settings)  # validate before starting anything
    root = args.data_root or Path(tempfile.mkdtemp(prefix="kvstore-cluster-"))
    ids = [f"n{i}" for i in range(1, args.nodes + 1)]
    addresses = {node: f"{args.host}:{args.base_port + i}" for i, node in enumerate(ids)}
    flags = [*as_flags(settings), "--secret-file", str(_write_secret(root))]
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
    return Exit.OK


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


def _write_secret(root: Path) -> Path:
    """The cluster's secret file under ``root``, made on the first start (readable only by
    this user)."""
    path = root / "secret"
    if not path.exists():
        root.mkdir(parents=True, exist_ok=True)
        write_secret(path, new_secret())
    return path


async def _wait_ready(addresses: dict[str, str]) -> None:
    """Until every node answers ``/ready`` with 200. Raises ConfigError after 30 s, with why."""
    waiting: list[str] = []
    with trio.move_on_after(30):
        for node, address in addresses.items():
            host, port = address.rsplit(":", 1)
            while True:
                try:
                    async with StoreClient(host, int(port), timeout=1) as client:
                        waiting = [f"{node}: {reason}" for reason in await client.ready()]
                except StoreError as exc:
                    waiting = [f"{node}: {exc}"]
                if not waiting:
                    break
                await trio.sleep(0.1)
        return
    raise ConfigError(f"the cluster did not become ready in 30 s: {'; '.join(waiting)}")


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
    table = Table(title=f"kvstore cluster: n={settings['n']} w={settings['w']} r={settings['r']}")
    for column in ("node", "address", "data and log"):
        table.add_column(column)
    for node, address in addresses.items():
        table.add_row(node, address, f"{root / node}  {root / (node + '.log')}")
    err = console(stderr=True)
    err.print(table)
    first = next(iter(addresses.values()))
    err.print(f"peers prove membership with the secret in {root / 'secret'} (a node that "
              f"joins needs it: kvstore serve --secret-file)", highlight=False)
    err.print(f"try: kvstore put --node {first} hello world; kvstore get --node {first} "
              "hello\nCtrl-C stops the cluster.")
