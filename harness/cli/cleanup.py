"""``kvcheck cleanup``: remove what earlier runs left behind, and outdated store images."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from kvcheck.harness.base_image import ImageError
from kvcheck.harness.docker_cluster import cleanup
from kvcheck.harness.engine import EngineUnavailable, connect
from kvcheck.harness.exitcodes import Exit
from kvcheck.harness.image import remove_stale_images
from kvcheck.harness.package import PackageError


def register(commands: Any) -> None:
    """Add ``cleanup`` to the ``kvcheck`` subcommands ``commands``."""
    p = commands.add_parser("cleanup", help="remove the containers and networks of every run")
    p.set_defaults(handler=_cleanup)


def _cleanup(args: argparse.Namespace, out: Console, err: Console) -> int:
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
