"""The ``kvstore`` command line: run a node, talk to one, or run a local cluster.

One module per command (``serve``, the commands that talk to a node, ``cluster``, ``secret``),
the cluster settings they share in :mod:`.settings`, and the exit codes in :mod:`.exitcodes`.
Each command module has ``register(commands)``, which adds its parser with a ``handler``: a
function of the parsed arguments that returns the exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kvcheck import __version__
from kvcheck.store.cli import cluster, remote, secret, serve
from kvcheck.store.cli.exitcodes import Exit
from kvcheck.store.config import ConfigError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``kvstore`` parser with every command registered."""
    parser = argparse.ArgumentParser(
        prog="kvstore", description="A Dynamo-style replicated key-value store.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.register(commands)
    remote.register(commands)
    cluster.register(commands)
    secret.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kvstore`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"kvstore: {exc}", file=sys.stderr)
        return Exit.USAGE
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
