"""``kvcheck image build``: build a database's node image if its inputs changed."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from kvcheck.harness.base_image import Base, ImageError
from kvcheck.harness.databases import DatabaseError, load
from kvcheck.harness.engine import EngineUnavailable, connect
from kvcheck.harness.exitcodes import Exit
from kvcheck.harness.image import build_image, ensure_image
from kvcheck.harness.package import PackageError


def register(commands: Any) -> None:
    """Add ``image build`` to the ``kvcheck`` subcommands ``commands``."""
    p = commands.add_parser("image", help="the node images databases run in")
    actions = p.add_subparsers(dest="image_command", required=True, metavar="ACTION")
    build = actions.add_parser("build", help="build a database's node image if its inputs "
                               "changed")
    build.add_argument("--db", default="kvstore", metavar="NAME",
                       help="the database whose image to build (default: %(default)s)")
    build.add_argument("--base", choices=[b.value for b in Base], default=Base.AUTO.value,
                       help="auto: python:3.11-slim if present locally, else debootstrap "
                       "(default: %(default)s)")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build.set_defaults(handler=_build)


def _build(args: argparse.Namespace, out: Console, err: Console) -> int:
    try:
        build = build_image if args.force else ensure_image
        tag = build(connect(), load(args.db), base=Base(args.base),
                    progress=lambda line: err.print(line, style="dim", markup=False,
                                                    highlight=False))
    except (EngineUnavailable, ImageError, PackageError, DatabaseError) as exc:
        err.print(f"[bold red]kvcheck image build:[/] {exc}", highlight=False)
        return Exit.CRASH
    out.print(tag, markup=False, highlight=False)
    return Exit.OK
