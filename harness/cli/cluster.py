"""``kvcheck cluster up``: a store cluster in Docker to use by hand, optionally autoscaled.

It takes the cluster options of ``kvcheck run`` (:func:`add_cluster_options`), with the defaults
of a store run by hand (:data:`BY_HAND`).
"""

from __future__ import annotations

import argparse
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from rich.console import Console

from kvcheck.harness.autoscale import ABOVE, BELOW, SUSTAIN, Policy, PolicyError, autoscale
from kvcheck.harness.backend import BackendError
from kvcheck.harness.base_image import ImageError
from kvcheck.harness.cli.options import (
    BY_HAND,
    add_cluster_options,
    add_histories,
    zone_settings,
)
from kvcheck.harness.databases.kvstore import PORT, KvStore
from kvcheck.harness.docker_cluster import DockerCluster
from kvcheck.harness.engine import EngineUnavailable, connect
from kvcheck.harness.exitcodes import Exit
from kvcheck.harness.image import ensure_image
from kvcheck.harness.package import PackageError
from kvcheck.harness.runner import new_run_id
from kvcheck.harness.spec import SpecError, TestSpec
from kvcheck.store.peer_auth import write_secret


def register(commands: Any) -> None:
    """Add ``cluster up`` to the ``kvcheck`` subcommands ``commands``."""
    p = commands.add_parser("cluster", help="run a store cluster in Docker, optionally autoscaled")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = actions.add_parser(
        "up", help="start a cluster and keep it until Ctrl-C (or --duration)",
        description="Start a cluster of store containers and print where its nodes listen. "
        "With --autoscale MIN..MAX, add a node (join) when the requests per second per node "
        "stay above --scale-up-above, and remove one (leave) when they stay below "
        "--scale-down-below; every decision is printed and logged to autoscale.jsonl in the "
        "cluster's directory. Ctrl-C or SIGTERM tears everything down (exit 0).")
    add_cluster_options(up, BY_HAND)
    up.add_argument("--autoscale", metavar="MIN..MAX", help="scale between MIN and MAX nodes")
    up.add_argument("--scale-up-above", type=float, default=ABOVE,
                    help="requests/s per node that add a node (default: %(default)g)")
    up.add_argument("--scale-down-below", type=float, default=BELOW,
                    help="requests/s per node that remove one (default: %(default)g)")
    up.add_argument("--sustain", type=int, default=SUSTAIN,
                    help="consecutive windows the load must stay past a threshold "
                    "(default: %(default)s)")
    up.add_argument("--window", type=float, default=5.0, metavar="SECONDS",
                    help="seconds per load measurement (default: %(default)g)")
    up.add_argument("--duration", type=float, metavar="SECONDS",
                    help="tear down after this many seconds")
    add_histories(up, "the cluster's directory goes under DIR/clusters/ (default: %(default)s)")
    up.set_defaults(handler=_up)


def _up(args: argparse.Namespace, out: Console, err: Console) -> int:
    try:
        spec = TestSpec(name="cluster", nodes=args.nodes, n=args.n, w=args.w, r=args.r,
                        versioning=args.versioning, sloppy_quorum=args.sloppy_quorum,
                        read_repair=args.read_repair, nemesis=(), **zone_settings(args))
        policy = None
        if args.autoscale:
            low, high = Policy.parse_range(args.autoscale)
            policy = Policy(low, high, args.scale_up_above, args.scale_down_below, args.sustain)
            if low < spec.n:
                raise PolicyError(f"--autoscale MIN ({low}) must be at least --n ({spec.n})")
        if args.window <= 0 or (args.duration is not None and args.duration <= 0):
            raise PolicyError("--window and --duration must be positive")
    except (SpecError, PolicyError) as exc:
        err.print(f"[bold red]kvcheck cluster up:[/] {exc}", highlight=False)
        return Exit.USAGE
    _, run_id = new_run_id()
    cluster_dir = args.histories / "clusters" / run_id
    try:
        cluster_dir.mkdir(parents=True)
        client = connect()
        image = ensure_image(client, KvStore(), progress=lambda line: err.print(
            line, style="dim", markup=False, highlight=False))
    except OSError as exc:
        err.print(f"[bold red]kvcheck cluster up:[/] cannot create {cluster_dir}: "
                  f"{exc.strerror or exc}", highlight=False)
        return Exit.USAGE
    except (EngineUnavailable, ImageError, PackageError) as exc:
        err.print(f"[bold red]kvcheck cluster up:[/] {exc}", highlight=False)
        return Exit.CRASH
    backend = DockerCluster(client, image, run_id, spec, KvStore(), cluster_dir)

    def say(line: str) -> None:
        out.print(line, markup=False, highlight=False, soft_wrap=True)

    try:
        trio.run(_keep_up, backend, policy, args, cluster_dir, say)
    except BackendError as exc:
        err.print(f"[bold red]kvcheck cluster up:[/] {exc}", highlight=False)
        return Exit.CRASH
    say(f"cluster torn down; its logs are in {cluster_dir}")
    return Exit.OK


async def _keep_up(backend: DockerCluster, policy: Policy | None, args: argparse.Namespace,
                   cluster_dir: Path, say: Callable[[str], None]) -> None:
    """Set up, print the addresses, autoscale until a signal or the duration; tear down."""
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_signal, nursery.cancel_scope)
            await backend.setup()

            def publish(members: list[str]) -> None:
                """``cluster.json``: the members and their addresses, replaced atomically."""
                addresses = {n: f"{backend.host(n)}:{PORT}" for n in members}
                temporary = cluster_dir / "cluster.json.tmp"
                temporary.write_text(json.dumps({"nodes": addresses}) + "\n")
                temporary.replace(cluster_dir / "cluster.json")

            for note in backend.notes:
                say(f"note: {note}")
            publish(backend.nodes)
            secret = cluster_dir / "secret"  # for a node added by hand: kvstore serve --secret-file
            write_secret(secret, backend.secret)
            say("cluster up: " + ", ".join(f"{n}={backend.host(n)}:{PORT}"
                                           for n in backend.nodes) + " · Ctrl-C to tear down")
            say(f"peers prove membership with the secret in {secret}")
            if policy is not None:
                nursery.start_soon(autoscale, backend, policy, args.window,
                                   cluster_dir / "autoscale.jsonl", say, publish)
            if args.duration is not None:
                await trio.sleep(args.duration)
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await backend.teardown()


async def _cancel_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return
