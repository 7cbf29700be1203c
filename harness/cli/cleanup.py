"""``kvcheck cleanup``: remove what earlier runs left behind — in Docker, their containers and
networks and outdated store images; on hosts (``--backend ssh``), what kvcheck made there."""

from __future__ import annotations

import argparse
from typing import Any

import trio
from rich.console import Console

from kvcheck.harness.backend import BackendError
from kvcheck.harness.base_image import ImageError
from kvcheck.harness.cli.options import add_host_options, host_settings
from kvcheck.harness.docker_cluster import cleanup
from kvcheck.harness.engine import EngineUnavailable, connect
from kvcheck.harness.exitcodes import Exit
from kvcheck.harness.image import remove_stale_images
from kvcheck.harness.package import PackageError
from kvcheck.harness.spec import SpecError
from kvcheck.harness.ssh import SshOptions
from kvcheck.harness.ssh_cluster import cleanup as cleanup_hosts


def register(commands: Any) -> None:
    """Add ``cleanup`` to the ``kvcheck`` subcommands ``commands``."""
    p = commands.add_parser("cleanup", help="remove the containers and networks of every run "
                            "(or, with --backend ssh, what runs left on the hosts)")
    p.add_argument("--backend", choices=("docker", "ssh"), default="docker",
                   help="docker: every run's containers and networks, and outdated images; "
                   "ssh: the processes, iptables chains, qdiscs and files kvcheck made on the "
                   "hosts given (default: %(default)s)")
    add_host_options(p)
    p.set_defaults(handler=_cleanup)


def _cleanup(args: argparse.Namespace, out: Console, err: Console) -> int:
    if args.backend == "ssh":
        return _cleanup_hosts(args, out, err)
    try:
        client = connect()
        removed = cleanup(client)
        images = remove_stale_images(client)
    except (EngineUnavailable, ImageError, PackageError) as exc:
        err.print(f"[bold red]kvcheck cleanup:[/] {exc}", highlight=False)
        return Exit.CRASH
    out.print(f"removed {len(removed['containers'])} container(s), "
              f"{len(removed['networks'])} network(s) and {len(images)} outdated store "
              "image(s)")
    return Exit.OK


def _cleanup_hosts(args: argparse.Namespace, out: Console, err: Console) -> int:
    try:
        settings = host_settings(args)
        hosts = settings.pop("hosts")
        if not hosts:
            raise SpecError("--backend ssh needs the hosts: --node HOST or --nodes-file FILE")
    except SpecError as exc:
        err.print(f"[bold red]kvcheck cleanup:[/] {exc}", highlight=False)
        return Exit.USAGE
    options = SshOptions.given(settings["ssh_user"], settings["ssh_key"], settings["ssh_port"],
                               settings["ssh_config"])
    try:
        cleaned = trio.run(cleanup_hosts, hosts, options)
    except BackendError as exc:
        err.print(f"[bold red]kvcheck cleanup:[/] {exc}", highlight=False)
        return Exit.CRASH
    out.print(f"cleaned {len(cleaned)} of {len(hosts)} host(s)"
              + (f": {', '.join(cleaned)}" if cleaned else ""), highlight=False)
    return Exit.OK
